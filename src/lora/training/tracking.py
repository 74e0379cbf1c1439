"""Where a run's step metrics go besides ``train_log.jsonl``: ``--report-to none|tensorboard``.

TensorBoard (``torch.utils.tensorboard``, event files in ``<run>/tensorboard``; view with
``tensorboard --logdir <run>/tensorboard``): train/loss, train/lr, train/grad_norm,
train/audio_seconds_per_second each step, eval/loss at every validation, and the tuned test
loss and WER at the end. Only rank 0 opens one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from lora.errors import LoraError


class NoTracker:
    def step(self, row: dict) -> None:
        pass

    def final(self, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(NoTracker):
    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # pragma: no cover - tensorboard is a dependency
            raise LoraError("--report-to tensorboard needs the tensorboard package: pip install tensorboard "
                            f"({exc})") from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.last = 0

    def step(self, row: dict) -> None:
        s = self.last = row["step"]
        for key, tag in (("train_loss", "train/loss"), ("lr", "train/lr"), ("grad_norm", "train/grad_norm"),
                         ("audio_seconds_per_second", "train/audio_seconds_per_second"), ("eval_loss", "eval/loss")):
            if key in row:
                self.writer.add_scalar(tag, row[key], s)
        for name, wer in row.get("canary_wer", {}).items():
            self.writer.add_scalar(f"canary/{name}/wer", wer, s)
        self.writer.flush()

    def final(self, metrics: dict) -> None:
        for key in ("test_loss", "wer", "wer_raw", "cer"):
            self.writer.add_scalar(f"tuned/{key}", metrics[key], self.last)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def open_tracker(kind: str, run: Path):
    tracker = TensorBoardTracker(run / "tensorboard") if kind == "tensorboard" else NoTracker()
    try:
        yield tracker
    finally:
        tracker.close()
