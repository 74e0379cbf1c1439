"""torchrun: two ranks (gloo, CPU) give the one-process run; a dead rank stops the job; resume on any count."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tone_manifest
from tests.test_cli import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return tone_manifest(tmp_path_factory.mktemp("clips"), speakers=5, per=6)


def _flags(tiny_dir, manifest, out, steps=8, extra=()):
    return ["-m", "lora.runners.real_small", "--model", str(tiny_dir), "--source", f"manifest:{manifest}", "--samples", "0",
            "--split-ratios", "0.6,0.2,0.2", "--max-steps", str(steps), "--eval-every", "4", "--save-every", "4",
            "--batch-size", "3", "--grad-accum", "2", "--warmup-steps", "1", "--patience", "0", "--lora-r", "4",
            "--lora-alpha", "8", "--lora-dropout", "0", "--learning-rate", "3e-3", "--eval-batch-size", "4",
            "--device", "cpu", "--output-dir", str(out), *extra]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _torchrun(n: int, flags: list[str], **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT, **kw)


def _adapter(out: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(out / "lora_adapter" / "adapter_model.safetensors")


def test_two_ranks_train_exactly_like_one_process(tiny_dir, manifest, tmp_path):
    one = subprocess.run([sys.executable, *_flags(tiny_dir, manifest, tmp_path / "one")], capture_output=True, text=True,
                         env=_env(), cwd=ROOT)
    assert one.returncode == 0, one.stderr[-3000:]
    proc = _torchrun(2, _flags(tiny_dir, manifest, tmp_path / "two"))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    assert "distributed: 2 ranks (gloo)" in out

    log1 = [json.loads(x) for x in (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()]
    log2 = [json.loads(x) for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log2] == list(range(1, 9))
    for a, b in zip(log1, log2, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4, (a, b)
        assert a["samples_seen"] == b["samples_seen"]
        if "eval_loss" in a:
            assert abs(a["eval_loss"] - b["eval_loss"]) <= 1e-5
    a1, a2 = _adapter(tmp_path / "one"), _adapter(tmp_path / "two")
    assert a1.keys() == a2.keys() and max(abs(a1[k] - a2[k]).max() for k in a1) <= 1e-5
    m1, m2 = (json.loads((tmp_path / r / "real_metrics.json").read_text()) for r in ("one", "two"))
    for part in ("baseline", "tuned"):
        for key in ("eval_loss", "test_loss"):
            assert abs(m1[part][key] - m2[part][key]) <= 1e-5, (part, key)
        assert m1[part]["wer"] == m2[part]["wer"]
    assert m2["distributed"] == {"world_size": 2, "backend": "gloo"} and m1["distributed"]["world_size"] == 1
    # one writer: the same files as one process, nothing per rank
    names = sorted(p.relative_to(tmp_path / "one").as_posix() for p in (tmp_path / "one").rglob("*"))
    assert sorted(p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*")) == names


def _rank_pid(root: int, rank: int) -> int:
    """The pid of the torchrun worker with RANK=rank, among the descendants of ``root``."""
    import psutil

    for child in psutil.Process(root).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "lora.runners.real_small" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no rank {rank} under {root}")


def test_a_killed_rank_stops_the_job_and_one_process_resumes_it(tiny_dir, manifest, tmp_path):
    out = tmp_path / "run"
    flags = _flags(tiny_dir, manifest, out, steps=400)
    proc = _torchrun(2, flags)
    t0 = time.time()
    while not (out / "checkpoints" / "step-000004" / "checkpoint.json").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - t0 < 300
        time.sleep(0.05)
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    t_kill = time.time()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.time() - t_kill < 60  # stopped, not hung until --dist-timeout
    # rank 0 says what happened in one line (torchrun adds its own failure report after it)
    assert "error: rank 0: lost the other ranks during " in err or "error: rank 0: stopped by torchrun" in err, err[-3000:]
    assert "[rank0]: Traceback" not in err
    assert not (out / "real_metrics.json").exists()
    resumed = subprocess.run([sys.executable, *flags], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: continuing from the checkpoint at step" in resumed.stdout
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 401))


def test_tensorboard_scalars_and_plain_progress_lines_in_a_log(tiny_dir, manifest, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, *_flags(tiny_dir, manifest, out, steps=20, extra=("--report-to", "tensorboard"))],
                          capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/audio_seconds_per_second", "eval/loss",
            "tuned/wer"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 21))
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([r["train_loss"] for r in log], rel=1e-6)
    # stdout is a pipe here, not a terminal: one plain line every total/20 steps, no redrawn bar
    assert "train: step 1/20, loss " in proc.stdout and "train: step 20/20, loss " in proc.stdout
    assert "\r" not in proc.stdout + proc.stderr


def test_a_hung_rank_fails_the_others_after_the_timeout(tiny_dir, manifest, tmp_path):
    out = tmp_path / "run"
    proc = _torchrun(2, _flags(tiny_dir, manifest, out, steps=400, extra=("--dist-timeout", "5")))
    t0 = time.time()
    while not (out / "checkpoints" / "step-000004" / "checkpoint.json").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - t0 < 300
        time.sleep(0.05)
    hung = _rank_pid(proc.pid, 1)
    os.kill(hung, signal.SIGSTOP)  # alive but silent, like a machine gone from the network
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGKILL)
    assert proc.returncode != 0
    assert "error: rank 0: lost the other ranks during " in err and "Timed out" in err, err[-3000:]
