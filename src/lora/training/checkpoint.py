"""Training checkpoints: everything needed to continue a run exactly where it stopped.

``checkpoints/step-000040/state.pt`` holds the adapter weights, the best adapter so far, the
optimizer and scheduler, the adapter's moving average (``--average-steps``), every RNG state
(torch, CUDA, the data-order RNG; resumed with another number of GPUs, the CUDA states are
fitted to it) and the loop state
(step, remaining batches of the epoch, evals, patience counter). Each checkpoint folder is
written under a temporary name and renamed, so the latest folder is always complete; only the
last ``keep`` are kept.

A checkpoint is verified before it is trusted: ``checkpoint.json`` records the sha256 of
``state.pt`` when it is written, and resuming checks it, then loads with
``torch.load(weights_only=True)`` (a checkpoint is data, never code). A damaged or truncated
newest checkpoint is skipped for the one before it, with a warning naming the file; with no
intact one left, resuming is refused with the files named.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lora.errors import LoraError
from lora.storage.atomic import atomic_dir, file_sha256

_NAME = re.compile(r"step-(\d{6})")
STATE, INFO = "state.pt", "checkpoint.json"


@dataclass
class LoopState:
    step: int = 0
    seen: int = 0
    loss_ema: float = float("nan")
    best_loss: float = float("inf")
    best_step: int = 0
    bad: int = 0
    evals: list[dict] = field(default_factory=list)
    batches: list[list[int]] = field(default_factory=list)  # what is left of the current epoch
    replay: list[int] = field(default_factory=list)  # what is left of the current pass over the replay clips
    quiet: list[int] = field(default_factory=list)  # ... and over the clips without speech
    ahead: list[list[int]] | None = None  # the next step's micro-batches, planned (and prepared) one step early


@dataclass
class Checkpoints:
    folder: Path
    keep: int = 2

    def steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.fullmatch(p.name)) and p.is_dir())

    def save(self, state: LoopState, model, best_state: dict, opt, sched, rng: random.Random, average=None) -> Path:
        from peft import get_peft_model_state_dict

        blob = {
            "loop": asdict(state),
            "adapter": get_peft_model_state_dict(model),
            "best": best_state,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "average": average.state_dict() if average else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "data_rng": rng.getstate(),
        }
        target = self.folder / f"step-{state.step:06d}"
        with atomic_dir(target, force=True, what=f"the step-{state.step} checkpoint") as tmp:
            torch.save(blob, tmp / STATE)
            (tmp / INFO).write_text(json.dumps({"step": state.step, "bytes": (tmp / STATE).stat().st_size,
                                                "sha256": file_sha256(tmp / STATE)}) + "\n")
        for old in self.steps()[:-self.keep]:
            shutil.rmtree(self.folder / f"step-{old:06d}", ignore_errors=True)
        return target

    def load_latest(self, model, opt, sched, rng: random.Random, average=None) -> tuple[LoopState, dict] | None:
        """(loop state, best adapter) of the newest intact checkpoint, with the model, optimizer, scheduler, RNGs and
        ``average`` (:class:`lora.training.average.WeightAverage`) restored; None without a checkpoint."""
        from peft import set_peft_model_state_dict

        steps = self.steps()
        if not steps:
            return None
        damaged = []
        for step in reversed(steps):
            path = self.folder / f"step-{step:06d}" / STATE
            blob, why = _load_verified(path)
            if blob is not None:
                break
            damaged.append(f"{path} ({why})")
            print(f"warning: checkpoint {path} is damaged ({why}); trying the one before it", flush=True)
        else:
            raise LoraError(f"no intact checkpoint to resume from: {'; '.join(damaged)}; delete {self.folder} "
                            "to start training over, or pass --force to start the whole run over")
        if bool(average) != bool(blob.get("average")):
            raise LoraError(f"{path} was written {'without' if average else 'with'} --average-steps, this run is "
                            f"{'with' if average else 'without'} it: start it again with --force")
        if average:
            average.load_state_dict(blob["average"])
        set_peft_model_state_dict(model, blob["adapter"])
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["torch_rng"])
        if blob["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_rng_states(blob["cuda_rng"], torch.cuda.device_count()))
        rng.setstate(blob["data_rng"])
        return LoopState(**blob["loop"]), blob["best"]


def cuda_rng_states(saved: list, devices: int) -> list:
    """The saved CUDA RNG states for the ``devices`` GPUs visible now: a run resumed on fewer GPUs ignores the
    extra states, one resumed on more seeds the rest from the first."""
    return [saved[i] if i < len(saved) else saved[0] for i in range(devices)]


def _load_verified(path: Path) -> tuple[dict | None, str]:
    """(the checkpoint, "") if its checksum matches and it loads as plain data, else (None, why not)."""
    info_path = path.with_name(INFO)
    if not path.is_file():
        return None, "state.pt is missing"
    try:
        info = json.loads(info_path.read_text())
        expected = info["sha256"]
    except (OSError, ValueError, KeyError):
        return None, f"{INFO} is missing or unreadable, so it cannot be verified"
    size = path.stat().st_size
    if size != info.get("bytes", size):
        return None, f"truncated: {size} of {info['bytes']} bytes"
    if file_sha256(path) != expected:
        return None, "checksum mismatch"
    try:
        return torch.load(path, weights_only=True), ""
    except Exception as exc:  # a checkpoint written by something else, or an unpicklable object
        return None, f"not loadable as plain data ({str(exc).splitlines()[0][:120]})"
