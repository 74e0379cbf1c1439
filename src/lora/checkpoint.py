"""Training checkpoints: everything needed to continue a run exactly where it stopped.

``checkpoints/step-000040/state.pt`` holds the adapter weights, the best adapter so far, the
optimizer and scheduler, every RNG state (torch, CUDA, the data-order RNG) and the loop state
(step, remaining batches of the epoch, evals, patience counter). Each checkpoint folder is
written under a temporary name and renamed, so the latest folder is always complete; only the
last ``keep`` are kept.
"""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lora.atomic import atomic_dir

_NAME = re.compile(r"step-(\d{6})")


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


@dataclass
class Checkpoints:
    folder: Path
    keep: int = 2

    def steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir()
                      if (m := _NAME.fullmatch(p.name)) and (p / "state.pt").is_file())

    def save(self, state: LoopState, model, best_state: dict, opt, sched, rng: random.Random) -> Path:
        from peft import get_peft_model_state_dict

        blob = {
            "loop": asdict(state),
            "adapter": get_peft_model_state_dict(model),
            "best": best_state,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "data_rng": rng.getstate(),
        }
        target = self.folder / f"step-{state.step:06d}"
        with atomic_dir(target, force=True) as tmp:
            torch.save(blob, tmp / "state.pt")
        for old in self.steps()[:-self.keep]:
            shutil.rmtree(self.folder / f"step-{old:06d}", ignore_errors=True)
        return target

    def load_latest(self, model, opt, sched, rng: random.Random) -> tuple[LoopState, dict] | None:
        from peft import set_peft_model_state_dict

        steps = self.steps()
        if not steps:
            return None
        blob = torch.load(self.folder / f"step-{steps[-1]:06d}" / "state.pt", weights_only=False)
        set_peft_model_state_dict(model, blob["adapter"])
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["torch_rng"])
        if blob["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["cuda_rng"])
        rng.setstate(blob["data_rng"])
        return LoopState(**blob["loop"]), blob["best"]
