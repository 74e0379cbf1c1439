"""A real voice: the personal preset on recorded telephone prompts (Debian's Asterisk English prompts).

Recorded speech, one professional voice, that none of the toolkit was developed on; the held-out
prompts are new sentences in the same voice. CI tunes over the GSM channel (asterisk-core-sounds-en-gsm:
8 kHz, the 2G mobile codec), where the base model leaves enough errors for a WER cut to be measured;
over G.722 it already writes these studio prompts nearly right (docs/recorded.md). Skipped where the
packages are not installed (scripts/setup.sh installs them as root on Debian).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.test_cli import ACCEPTANCE_TIMEOUT, acceptance_schedule, run

pytestmark = [pytest.mark.acceptance, pytest.mark.offline_model]


def _prompts(audio_format: str):
    from lora.data.prompts import default_recorded_corpus
    from lora.storage.cache import cache_root

    folder = default_recorded_corpus(cache_root(), log=lambda m: None, audio_format=audio_format)
    if folder is None:
        pytest.skip(f"asterisk-core-sounds-en(-{audio_format}) or ffmpeg not installed")
    return folder


def test_personal_preset_cuts_the_wer_on_held_out_real_prompts_over_gsm(tmp_path):
    """A subset for CI's time: 120 recorded prompts drawn for training (106 after the validation split), all 92
    held-out ones, over GSM, training stopped at step 60 (MOONSHINE_LORA_ACCEPTANCE=full: the preset's 264). CI
    requires what the measured runs of this command support (docs/recorded.md: -42% to -50%) with room for another
    machine's arithmetic: the WER cut by at least 25% relative and the held-out loss at least halved. The same
    held-out sentences over G.722 are the run's recorded canary.
    """
    prompts = _prompts("gsm")
    out = tmp_path / "run"
    t0 = time.time()
    proc = run("-m", "lora.runners.real_small", "--preset", "personal", "--model", "offline",
               "--source", f"folder:{prompts / 'train'}", "--samples", "120",
               "--test-source", f"folder:{prompts / 'test'}", "--output-dir", str(out), *acceptance_schedule(60, 30),
               timeout=ACCEPTANCE_TIMEOUT)
    seconds = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "real_metrics.json").read_text())
    b, t = m["baseline"]["wer"], m["tuned"]["wer"]
    print(f"real prompts over GSM: WER {b:.2%} -> {t:.2%}, test loss {m['baseline']['test_loss']:.3f} -> "
          f"{m['tuned']['test_loss']:.3f} on {m['tuned']['utterances']} held-out prompts, {seconds:.0f} s")
    assert m["data"]["synthesized"] is False and "GSM 06.10 (8 kHz) telephone prompts" in m["data"]["description"]
    assert m["data"]["held_out_sources"]["test"]["synthesized"] is False
    wideband = m["cost"]["canaries"]["recorded-prompts"]
    assert not wideband["skipped"] and "G.722" in wideband["description"] and wideband["within_bound"]
    assert t <= 0.75 * b and m["tuned"]["test_loss"] <= 0.5 * m["baseline"]["test_loss"], (m["baseline"], m["tuned"])
    assert m["cost"]["quiet"]["added_words"] == 0
    # recorded-readings has no guardrail slice (too small) and may be beyond: then only --accept-cost passes it
    # (tests/test_personal.py says what was measured)
    beyond = sorted(n for n, c in m["cost"]["canaries"].items() if c.get("gated") and not c["within_bound"])
    assert set(beyond) <= {"recorded-readings"}, beyond
    ver = run("-m", "lora.scripts.verify_run", str(out), *(["--accept-cost", "recorded-readings"] if beyond else []))
    assert ver.returncode == 0, ver.stdout + ver.stderr
