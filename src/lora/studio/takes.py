"""Takes: each recording checked the moment it is made, and saved into the workspace as the ``folder:`` corpus the
training job reads (``recordings/train`` and ``recordings/test``: ``<prompt id>.wav`` at 16 kHz beside its
``.txt``).

A take is refused, with the reason a person can act on, when it is silent, clipped, too short or too long, or when
speech runs into its start or end (the recording started late or stopped early: a word is cut). Nothing of a
refused take is written. File names are the plan's prompt ids, never text from a page, and every file is written
atomically (:mod:`lora.storage.atomic`), so two tabs on one workspace cannot leave half a take.

Hand-rolled rather than a voice-activity detector (Silero, WebRTC VAD): the checks need frame energies and peak
counts, not speech/non-speech labels, and no model download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lora.data.audio import SAMPLE_RATE
from lora.studio.plan import TEST, TRAIN, Plan, Prompt

FRAME = 320  # 20 ms at 16 kHz


@dataclass(frozen=True)
class TakeLimits:
    min_seconds: float = 1.0  # a sentence read aloud takes longer
    max_seconds: float = 20.0  # more is a take left running
    silence_dbfs: float = -45.0  # the loudest 20 ms below this: nothing was said (or the microphone is muted)
    clip_level: float = 0.999  # a sample at full scale
    max_clipped: int = 16  # more full-scale samples than this: distorted
    edge_seconds: float = 0.1  # the first and last 100 ms ...
    edge_share: float = 0.3  # ... may not be louder than 30% of the take's speech level (its 90th-percentile frame)


def _frame_rms(audio: np.ndarray) -> np.ndarray:
    n = audio.size // FRAME
    frames = audio[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    return np.sqrt(np.mean(frames * frames, axis=1))


def check_take(audio: np.ndarray, limits: TakeLimits = TakeLimits()) -> str | None:
    """Why ``audio`` (16 kHz mono float) cannot be kept, as the page shows it, or None when it can."""
    seconds = audio.size / SAMPLE_RATE
    if seconds < limits.min_seconds:
        return f"too short ({seconds:.1f} s): read the whole sentence, then stop"
    if seconds > limits.max_seconds:
        return f"too long ({seconds:.0f} s, at most {limits.max_seconds:.0f}): stop recording when the sentence ends"
    if not np.all(np.isfinite(audio)):
        return "the recording holds invalid samples: record it again"
    rms = _frame_rms(audio)
    loudest = 20 * np.log10(max(float(rms.max()), 1e-10))
    if loudest < limits.silence_dbfs:
        return (f"silent (loudest {loudest:.0f} dBFS): check that the microphone is on and the right one, then "
                "record again")
    clipped = int(np.sum(np.abs(audio) >= limits.clip_level))
    if clipped > limits.max_clipped:
        return f"clipped ({clipped} samples at full scale): move back from the microphone or lower its gain"
    speech = float(np.percentile(rms, 90))
    edge = max(1, int(limits.edge_seconds * SAMPLE_RATE / FRAME))
    if rms[:edge].max() > limits.edge_share * speech:
        return "speech at the very start: start recording, wait a moment, then read"
    if rms[-edge:].max() > limits.edge_share * speech:
        return "speech at the very end (cut off?): finish the sentence, wait a moment, then stop"
    return None


def recordings(workspace: Path) -> Path:
    return Path(workspace) / "recordings"


def take_path(workspace: Path, prompt: Prompt) -> Path:
    """Where a prompt's take lives: its part's folder and its plan id (ids are ``[pg]NNN``, never page text)."""
    if prompt.part not in (TRAIN, TEST) or not (prompt.id[:1] in "pg" and prompt.id[1:].isdigit()):
        raise ValueError(f"not a planned prompt: {prompt.id!r} ({prompt.part!r})")
    return recordings(workspace) / prompt.part / f"{prompt.id}.wav"


def save_take(workspace: Path, prompt: Prompt, audio: np.ndarray, limits: TakeLimits = TakeLimits()) -> str | None:
    """Check the take and, if it passes, write it (WAV, then its transcript: a clip counts once its .txt exists).
    Returns the refusal, or None when saved. A second take of the same prompt replaces the first."""
    from lora.data.audio import write_wav
    from lora.storage.atomic import write_bytes

    why = check_take(audio, limits)
    if why:
        return why
    wav = take_path(workspace, prompt)
    wav.parent.mkdir(parents=True, exist_ok=True)
    write_wav(wav, audio)
    write_bytes(wav.with_suffix(".txt"), (prompt.text + "\n").encode("utf-8"), what="transcript")
    return None


def recorded(workspace: Path, plan: Plan) -> list[str]:
    """The ids of the prompts whose take is saved (WAV and transcript), in plan order."""
    return [p.id for p in plan.prompts
            if take_path(workspace, p).is_file() and take_path(workspace, p).with_suffix(".txt").is_file()]


def next_prompt(workspace: Path, plan: Plan) -> Prompt | None:
    """Where the user stopped: the first prompt without a saved take (None when every prompt has one)."""
    done = set(recorded(workspace, plan))
    return next((p for p in plan.prompts if p.id not in done), None)
