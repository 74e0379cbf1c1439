"""The layout of ``outputs/<run>/`` and helpers to read and write it.

``real_metrics.json`` is written last, atomically; its presence with ``"status": "complete"``
is the run's completed marker. Everything else is written atomically before it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from lora.errors import LoraError
from lora.storage.lock import LOCK_FILES

ADAPTER = "lora_adapter"
PROCESSOR = "processor"
METRICS = "real_metrics.json"
HELDOUT = "heldout_manifest.jsonl"
SPLIT = "split.json"
TRAIN_LOG = "train_log.jsonl"
TRAIN_LOG_PARTIAL = TRAIN_LOG + ".partial"  # the training log while the loop writes it
PRED_BASELINE = "predictions_baseline.jsonl"
PRED_TUNED = "predictions_tuned.jsonl"
CANARIES = "canaries"  # <name>.jsonl + <name>_audio/: each canary's test clips as real WAV audio
PRED_CANARIES = "predictions_canaries.jsonl"  # each canary test clip: reference, baseline and tuned transcript
ARTIFACT_TEST = "artifact_test.json"
VERIFICATION = "verification.json"  # verify_run's checks, read by the report
RUN_CONFIG = "run_config.json"
BASELINE = "baseline.json"
CHECKPOINTS = "checkpoints"
RUNTIME = "runtime"  # export_onnx's folder for Moonshine's runtime, when the run was exported


def model_of(metrics: dict) -> dict:
    """``real_metrics.json``'s model block: family, label, random-weights mark. Runs written before it existed could
    only tune the first generation, with learned weights."""
    return metrics.get("model") or {"family": "moonshine", "label": "Moonshine (first generation)",
                                    "random_weights": None}


def read_json(path: Path, what: str = "file") -> dict:
    if not path.is_file():
        raise LoraError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LoraError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def jsonl_rows(path: Path, error: type[LoraError] = LoraError) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; bad UTF-8, bad JSON or a non-object raise ``error``."""
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise error(f"{path}:{lineno}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise LoraError(f"file not found: {path}")
    return [row for _, row in jsonl_rows(path)]


def check_output_dir(path: Path, force: bool) -> None:
    """Refuse to overwrite a finished run unless --force; never touch a folder that is not a run.

    ``--force`` replaces (deletes) the folder, so it is only honoured for an empty folder or one
    that holds a moonshine-lora run: a typo such as ``--output-dir ~ --force`` must not delete a home.
    """
    if not path.exists():
        return
    if not path.is_dir():
        raise LoraError(f"--output-dir {path} is a file; choose a folder")
    entries = [p.name for p in path.iterdir() if p.name not in LOCK_FILES]
    if entries and RUN_CONFIG not in entries and METRICS not in entries:
        raise LoraError(f"--output-dir {path} is not empty and is not a moonshine-lora run; choose another folder "
                        "(--force only replaces earlier runs)")
    if METRICS in entries and not force:
        raise LoraError(f"--output-dir {path} already holds a finished run; pass --force to replace it "
                        "or choose another --output-dir")


def clear_run_dir(path: Path) -> None:
    """Empty a run folder for --force, keeping the lock this process holds on it."""
    import shutil

    for p in path.iterdir():
        if p.name in LOCK_FILES:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except OSError:
        return None
