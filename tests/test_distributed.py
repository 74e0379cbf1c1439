"""torchrun: two ranks (gloo, CPU) give the one-process run; a dead rank stops the job; resume on any count."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import tone_manifest
from tests.test_cli import ROOT

pytestmark = pytest.mark.slow  # torchrun and real_small in subprocesses, 10-100 s each


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return tone_manifest(tmp_path_factory.mktemp("clips"), speakers=5, per=6)


def _flags(tiny_dir, manifest, out, steps=8, extra=(), canaries=False):
    """``canaries``: measure the default canaries too (their transcripts are sharded over the ranks); off where the
    test is about something else, since a random model's canary transcripts cost more than its training."""
    return ["-m", "lora.runners.real_small", "--model", str(tiny_dir), "--source", f"manifest:{manifest}",
            "--samples", "0", "--split-ratios", "0.6,0.2,0.2", "--max-steps", str(steps), "--eval-every", "4",
            "--save-every", "4", "--batch-size", "3", "--grad-accum", "2", "--warmup-steps", "1", "--patience", "0",
            "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--learning-rate", "3e-3",
            "--eval-batch-size", "4", "--average-steps", "3",
            "--device", "cpu", "--output-dir", str(out), *([] if canaries else ["--canary", "none"]), *extra]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _torchrun(n: int, flags: list[str], stdout=subprocess.PIPE, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *flags]
    return subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT, **kw)


def _adapter(out: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(out / "lora_adapter" / "adapter_model.safetensors")


def test_two_ranks_train_exactly_like_one_process(tiny_dir, manifest, tmp_path):
    masks = ("--mask-time-prob", "0.3")  # a clip is masked alike on whichever rank holds it
    one = subprocess.run([sys.executable, *_flags(tiny_dir, manifest, tmp_path / "one", extra=masks, canaries=True)],
                         capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert one.returncode == 0, one.stderr[-3000:]
    proc = _torchrun(2, _flags(tiny_dir, manifest, tmp_path / "two", extra=masks, canaries=True))
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


def _wait_for_checkpoint(proc, out, step: int) -> None:
    """Until the run under ``proc`` has written its step-``step`` checkpoint (it must still be running)."""
    t0 = time.time()
    while not (out / "checkpoints" / f"step-{step:06d}" / "checkpoint.json").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - t0 < 300
        time.sleep(0.05)


def test_a_killed_rank_stops_the_job_and_one_process_resumes_it(tiny_dir, manifest, tmp_path):
    out = tmp_path / "run"
    flags = _flags(tiny_dir, manifest, out, steps=120)
    proc = _torchrun(2, flags)
    _wait_for_checkpoint(proc, out, 4)
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    t_kill = time.time()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.time() - t_kill < 60  # stopped, not hung until --dist-timeout
    # rank 0 says what happened in one line (torchrun adds its own failure report after it)
    assert ("error: rank 0: lost the other ranks during " in err
            or "error: rank 0: stopped by torchrun" in err), err[-3000:]
    assert "[rank0]: Traceback" not in err
    assert not (out / "real_metrics.json").exists()
    resumed = subprocess.run([sys.executable, *flags], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: continuing from the checkpoint at step" in resumed.stdout
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 121))


def test_tensorboard_scalars_and_plain_progress_lines_in_a_log(tiny_dir, manifest, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, *_flags(tiny_dir, manifest, out, steps=20,
                                                   extra=("--report-to", "tensorboard"))],
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
    proc = _torchrun(2, _flags(tiny_dir, manifest, out, steps=400, extra=("--dist-timeout", "5")),
                     stdout=subprocess.DEVNULL)  # only stderr is read below: a full stdout pipe must not block rank 0
    _wait_for_checkpoint(proc, out, 4)
    ranks = [_rank_pid(proc.pid, 0), hung := _rank_pid(proc.pid, 1)]

    def kill_all():  # the ranks run in their own sessions: killing torchrun alone would leave stderr open
        for pid in [*ranks, proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    os.kill(hung, signal.SIGSTOP)  # alive but silent, like a machine gone from the network
    stopped, watchdog = time.time(), threading.Timer(120, kill_all)
    watchdog.start()
    err, said = "", False
    try:
        while not said and (line := proc.stderr.readline()):  # rank 0 fails after --dist-timeout, in one line
            err += line
            said = "error: rank 0: " in line
        waited = time.time() - stopped
        # torchrun would SIGKILL the stopped rank itself after a 30 s grace period (its --shutdown-timeout does not
        # apply when a worker fails, torch 2.13: pytorch/pytorch#192815); the test does it at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGKILL)
        err += proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        kill_all()
    assert said and proc.returncode != 0, err[-3000:]
    assert waited >= 4  # after the timeout (gloo counts it from the start of the collective rank 0 was in)
    assert "error: rank 0: lost the other ranks during " in err and "Timed out" in err, err[-3000:]


def test_agree_names_what_differs_and_on_which_ranks():
    import torch

    from lora.errors import LoraError
    from lora.training.distributed import Dist, fingerprint

    class FourRanks(Dist):
        # what all_gather_object would return: ranks 1 and 3 read other data, rank 2 another init
        def gather(self, obj):
            other = {**obj, "the training clips": "0"}
            return [obj, other, {**obj, "the adapter weights": "0"}, other]

    items = {"the training clips": [("s0-1", "speaker 0 says number 1", 11200)], "the adapter weights": [torch.ones(3)]}
    with pytest.raises(LoraError) as refused:
        FourRanks(0, 4).agree(items, "make them agree")
    assert str(refused.value) == ("the ranks do not agree at start: the training clips (ranks 1, 3); the adapter "
                                  "weights (rank 2) differ from rank 0's; make them agree")
    Dist().agree(items, "one process agrees with itself")
    assert fingerprint([torch.ones(3)]) == fingerprint([torch.ones(3)]) != fingerprint([torch.ones(3) + 1e-7])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_that_read_different_data_stop_at_start_in_one_line(tiny_dir, manifest, tmp_path):
    """Two "machines" (a torchrun each, static rendezvous on this host) run the same command, whose relative
    ``--source manifest:data/m.jsonl`` resolves to each machine's own copy of the data; machine 1's copy has one
    transcript changed. Nothing in the code is told which rank to perturb (no test hook): the ranks really read
    different files, as two machines with data folders out of sync would."""
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    port, procs = _free_port(), []
    for node in (0, 1):
        machine = tmp_path / f"machine{node}"
        (machine / "data").mkdir(parents=True)
        mine = [{**r, "audio": str(manifest.parent / r["audio"])} for r in rows]
        if node == 1:
            mine[0]["text"] += " again"
        (machine / "data" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mine))
        flags = _flags(tiny_dir, "data/m.jsonl", tmp_path / "run")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port), *flags]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                      cwd=machine))
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode != 0
        said = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(said) == 1 and said[0].startswith("error: the ranks do not agree at start: the "), err[-3000:]
        assert "clips (rank 1) differ from rank 0's; every rank must read the same data: give --source" in said[0]
        assert "resume step" not in said[0] and "adapter" not in said[0]
    assert not (tmp_path / "run").exists()  # refused before the first file was written


def test_sigterm_to_torchrun_stops_every_rank_at_the_same_step_with_a_checkpoint(tiny_dir, manifest, tmp_path):
    """A preempted or cancelled job: torchrun passes SIGTERM on to every rank; they finish the step, agree on it,
    rank 0 saves, and the same command resumes (here on one process)."""
    out = tmp_path / "run"
    flags = _flags(tiny_dir, manifest, out, steps=40)
    proc = _torchrun(2, flags)
    _wait_for_checkpoint(proc, out, 4)
    proc.send_signal(signal.SIGTERM)
    t_term = time.time()
    _, err = proc.communicate(timeout=120)
    assert time.time() - t_term < 30, "stopped by torchrun's SIGKILL after its grace period, not by the ranks"
    # not anchored to lines: the two ranks write to one pipe, and their lines can run together
    stopped = re.findall(r"stopped: terminated \(SIGTERM\) at step (\d+); checkpoint saved\. Rerun the same command "
                         r"to resume", err)
    assert len(stopped) == 2 and stopped[0] == stopped[1], err[-3000:]
    step = int(stopped[0])
    assert (out / "checkpoints" / f"step-{step:06d}" / "state.pt").is_file()
    assert "another rank failed" not in err and "lost the other ranks" not in err
    resumed = subprocess.run([sys.executable, *flags], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume: continuing from the checkpoint at step {step}" in resumed.stdout
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == list(range(1, 41))
