"""What the training job reads from and writes to ``--output-dir`` (the file names: :mod:`lora.storage.artifacts`).

Only rank 0 writes: :func:`for_rank` gives it a :class:`RunFolder` and every other rank a :class:`NoWrites`, whose
every method does nothing and answers None. This is the one place the job decides which rank writes; a value read
from the folder reaches the other ranks through ``dist.gather(...)[0]`` (rank 0's answer).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lora.config import RunConfig
from lora.data.manifest import write_manifest
from lora.errors import LoraError
from lora.storage import artifacts as R
from lora.storage.atomic import StorageError, atomic_dir, write_json, write_jsonl


def for_rank(out: Path, dist) -> RunFolder | NoWrites:
    return RunFolder(out) if dist.main else NoWrites()


def bytes_needed(model, pattern: str, cfg: RunConfig) -> int:
    """Disk the rest of a run writes: checkpoints and final artifacts, with a margin.

    A checkpoint holds the adapter, the best adapter and AdamW's two moments (4x the adapter; 5x with its
    moving average);
    ``keep + 1`` exist while the newest is written. Artifacts: the adapter, the processor
    (its tokenizer is ~2 MB), predictions and logs. Plus 20%.
    """
    import re

    import torch

    params = sum(cfg.lora_r * (m.in_features + m.out_features) for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and re.fullmatch(pattern, name))
    adapter = 4 * params
    per_checkpoint = (5 if cfg.average_steps else 4) * adapter
    checkpoints = (cfg.keep_checkpoints + 1) * per_checkpoint  # save_every 0 still saves one on Ctrl-C
    return int(1.2 * (checkpoints + adapter + 5_000_000))


def check_space(out: Path, need: int) -> None:
    free = shutil.disk_usage(out).free
    if free < need:
        raise StorageError(f"--output-dir {out} has {free / 1e6:.1f} MB free, but this run will write about "
                           f"{need / 1e6:.1f} MB (checkpoints and artifacts); free some space there or choose "
                           "another folder")


def _predictions(utts, hyps) -> list[dict]:
    return [{"id": u.id, "reference": u.text, "prediction": h} for u, h in zip(utts, hyps, strict=True)]


class RunFolder:
    """Rank 0's view of ``--output-dir``."""

    def __init__(self, out: Path):
        self.out = out

    def resuming(self, cfg: RunConfig, force: bool, resume: bool) -> bool:
        """Checks the folder; True if it holds an unfinished run of this same config (rerun = resume)."""
        R.check_output_dir(self.out, force)
        saved = self.out / R.RUN_CONFIG
        if force or not saved.is_file():
            if resume:
                raise LoraError(f"--resume: {self.out} holds no unfinished run to resume")
            return False
        old = {**RunConfig().to_dict(), **R.read_json(saved)}  # a field added since ran as its default (off)
        diff = sorted(k for k, v in cfg.to_dict().items() if k != "output_dir" and old.get(k) != v)
        if diff:
            raise LoraError(f"--output-dir {self.out} holds a different unfinished run (differs in: "
                            f"{', '.join(diff)}); rerun with the same flags to resume, pass --force to start over, or "
                            "choose another folder")
        return True

    def check_space(self, need: int) -> None:
        check_space(self.out, need)

    def write_plan(self, cfg: RunConfig, data, general, force: bool) -> None:
        """The run's config, its split (each part's ids, sentences and audio fingerprints), and the fixed held-out
        manifest (the test split and each canary's test clips, real audio as WAV, for ``run_stt`` and ``export_onnx``
        to read back)."""
        split = data.split
        if force:
            R.clear_run_dir(self.out)
        write_json(self.out / R.RUN_CONFIG, cfg.to_dict())
        write_json(self.out / R.SPLIT, {"seed": cfg.seed, "ratios": list(cfg.split_ratios), "mode": split.mode,
                                        "mode_reason": split.reason, "given": list(split.given),
                                        "text_mode": data.text_mode, "dropped_overlap": split.dropped_overlap,
                                        "dropped_same_audio": split.dropped_same_audio,
                                        "parts": {p: {"speakers": split.speakers(p), "ids": [u.id for u in us],
                                                      "sentences": split.sentences(p),
                                                      "audio": sorted(u.extra["fingerprint"] for u in us)}
                                                  for p, us in split.parts.items()}})
        write_manifest(self.out / R.HELDOUT, split.parts["test"])
        for c in general.measured:
            write_manifest(self.out / R.CANARIES / f"{c.name}.jsonl", c.test)

    def saved_baseline(self) -> dict | None:
        """The baseline an interrupted attempt measured (resuming), or None."""
        path = self.out / R.BASELINE
        return R.read_json(path) if path.is_file() else None

    def write_baseline(self, test, hyps, metrics: dict, cost: dict) -> None:
        write_jsonl(self.out / R.PRED_BASELINE, _predictions(test, hyps))
        write_json(self.out / R.BASELINE, {"metrics": metrics, "cost": cost})

    def finish_train_log(self) -> None:
        """The loop's log (written to ``TRAIN_LOG_PARTIAL`` while it runs) under its final name."""
        (self.out / R.TRAIN_LOG_PARTIAL).replace(self.out / R.TRAIN_LOG)

    def write_tuned(self, test, hyps, general, cost_before: dict, cost_after: dict) -> None:
        write_jsonl(self.out / R.PRED_TUNED, _predictions(test, hyps))
        write_jsonl(self.out / R.PRED_CANARIES, [
            {"canary": s.name, "id": u.id, "reference": u.text, "baseline": b, "tuned": t}
            for s in general.measured for u, b, t in zip(s.test, cost_before["canary_predictions"][s.name],
                                                         cost_after["canary_predictions"][s.name], strict=True)])

    def write_model(self, model, processor) -> None:
        with atomic_dir(self.out / R.ADAPTER, force=True) as tmp:
            model.save_pretrained(tmp)
        with atomic_dir(self.out / R.PROCESSOR, force=True) as tmp:
            processor.save_pretrained(tmp)

    def write_metrics(self, metrics: dict) -> None:
        """``real_metrics.json``: written last, it marks the run complete."""
        write_json(self.out / R.METRICS, metrics)


class NoWrites:
    """The run folder of a rank that does not write (every rank but 0): each of :class:`RunFolder`'s methods does
    nothing and answers None; any other name is an AttributeError, as on rank 0 (a misspelt call must not pass
    silently on the ranks that do not write)."""

    def __getattr__(self, name: str):
        if name.startswith("_") or not callable(getattr(RunFolder, name, None)):
            raise AttributeError(f"{type(self).__name__} has no method {name!r} (RunFolder has none)")
        return lambda *args, **kwargs: None
