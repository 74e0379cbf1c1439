"""Interrupted runs resume: a SIGKILLed or SIGTERMed run and an uninterrupted one end with equal metrics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tone_manifest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # runs real_small in subprocesses, kills and resumes them


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return tone_manifest(tmp_path_factory.mktemp("tones"), speakers=6, per=4)


def _cmd(tiny_dir, manifest, out, steps=60, canaries=True):
    """``canaries``: with the default canaries, whose baseline a resumed run must reuse (the runs compared with the
    module's reference); off where the test is about something else (a random model's canary transcripts cost more
    than its training)."""
    return [sys.executable, "-m", "lora.runners.real_small", "--model", str(tiny_dir),
            "--source", f"manifest:{manifest}", "--samples", "0", "--split-ratios", "0.5,0.25,0.25",
            "--max-steps", str(steps), "--eval-every", "10", "--save-every", "10", "--batch-size", "2",
            "--grad-accum", "2", "--warmup-steps", "2", "--patience", "0", "--lora-r", "4", "--lora-alpha", "8",
            "--lora-dropout", "0.1", "--learning-rate", "3e-3", "--average-steps", "5", "--mask-time-prob", "0.2",
            "--device", "cpu",
            "--output-dir", str(out), "-q", *([] if canaries else ["--canary", "none"])]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _wait_for(path: Path, proc: subprocess.Popen, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path.name} appeared: {proc.stderr.read()[-2000:]}"
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def _results(out: Path):
    m = json.loads((out / "real_metrics.json").read_text())
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return m, (out / "predictions_tuned.jsonl").read_text(), log


@pytest.fixture(scope="module")
def reference(tiny_dir, manifest, tmp_path_factory):
    """The same run, uninterrupted and alone."""
    out = tmp_path_factory.mktemp("ref") / "ref"
    ref = subprocess.run(_cmd(tiny_dir, manifest, out), capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return out


def _assert_same_run(ref: Path, out: Path):
    m_ref, pred_ref, log_ref = _results(ref)
    m_res, pred_res, log_res = _results(out)
    assert [r["step"] for r in log_res] == list(range(1, 61))
    for a, b in zip(log_ref, log_res, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-7)
    for key in ("eval_loss", "test_loss", "wer", "cer"):
        assert m_res["tuned"][key] == pytest.approx(m_ref["tuned"][key], rel=1e-5, abs=1e-7), key
    assert pred_res == pred_ref


def _killed_after(tiny_dir, manifest, out: Path, checkpoint: str):
    proc = subprocess.Popen(_cmd(tiny_dir, manifest, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT)
    _wait_for(out / "checkpoints" / checkpoint / "checkpoint.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "real_metrics.json").exists()


def test_sigkill_then_rerun_matches_uninterrupted_run(tiny_dir, manifest, tmp_path, reference):
    """Also with the training log's last line torn, as a kill in the middle of writing it leaves it."""
    out = tmp_path / "killed"
    _killed_after(tiny_dir, manifest, out, "step-000020")
    partial = out / "train_log.jsonl.partial"
    with partial.open("a") as f:
        f.write('{"step": 999, "train_loss": 0.12')
    again = subprocess.run(_cmd(tiny_dir, manifest, out), capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resume: continuing from the checkpoint at step" in again.stdout + again.stderr
    assert f"warning: {partial}:" in again.stdout and "dropped a torn last line" in again.stdout
    _assert_same_run(reference, out)
    assert len(list((out / "checkpoints").iterdir())) == 2  # only the last K are kept


def test_corrupt_newest_checkpoint_resumes_from_the_one_before(tiny_dir, manifest, tmp_path, reference):
    out = tmp_path / "corrupt"
    _killed_after(tiny_dir, manifest, out, "step-000030")
    newest = out / "checkpoints" / "step-000030" / "state.pt"
    newest.write_bytes(b"\x00" * newest.stat().st_size)  # same size: only the checksum can tell
    again = subprocess.run(_cmd(tiny_dir, manifest, out) + ["--resume"], capture_output=True, text=True, env=_env(),
                           cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    said = again.stdout + again.stderr
    assert f"warning: checkpoint {newest} is damaged (checksum mismatch)" in said
    assert "resume: continuing from the checkpoint at step 20" in said
    _assert_same_run(reference, out)


def test_no_intact_checkpoint_refuses_to_resume_naming_the_files(tiny_dir, manifest, tmp_path):
    out = tmp_path / "all-bad"
    _killed_after(tiny_dir, manifest, out, "step-000020")
    for state in (out / "checkpoints").glob("step-*/state.pt"):
        state.write_bytes(b"junk")
    again = subprocess.run(_cmd(tiny_dir, manifest, out), capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert again.returncode == 2
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no intact checkpoint to resume from: ") and "step-000020/state.pt (truncated" in last
    assert "Traceback" not in again.stderr


def test_second_run_on_the_same_folder_is_refused_and_the_first_is_unaffected(tiny_dir, manifest, tmp_path, reference):
    out = tmp_path / "shared"
    first = subprocess.Popen(_cmd(tiny_dir, manifest, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(), cwd=ROOT)
    _wait_for(out / ".lock.owner.json", first)
    t0 = time.time()
    second = subprocess.run(_cmd(tiny_dir, manifest, out), capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert time.time() - t0 < 15 and second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --output-dir {out} is in use by pid {first.pid} on "), lines
    assert first.poll() is None, "the refused run must not have disturbed the first"
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    _assert_same_run(reference, out)
    assert not (out / ".lock.owner.json").exists()


def test_ctrl_c_saves_checkpoint_and_says_how_to_resume(tiny_dir, manifest, tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_cmd(tiny_dir, manifest, out, steps=400, canaries=False), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    _wait_for(out / "checkpoints" / "step-000010" / "state.pt", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped: interrupted at step") and "Rerun the same command to resume" in last
    step = int(last.split("at step ")[1].split(";")[0])
    assert (out / "checkpoints" / f"step-{step:06d}" / "state.pt").is_file()
    assert not (out / "real_metrics.json").exists()


def test_sigterm_saves_a_checkpoint_and_the_rerun_matches_uninterrupted_run(tiny_dir, manifest, tmp_path, reference):
    """SLURM preemption or scancel: SIGTERM finishes the step, saves, exits 143 in one line; the same command
    resumes."""
    out = tmp_path / "terminated"
    proc = subprocess.Popen(_cmd(tiny_dir, manifest, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT)
    _wait_for(out / "checkpoints" / "step-000010" / "checkpoint.json", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    last = err.strip().splitlines()[-1]
    said = re.fullmatch(r"stopped: terminated \(SIGTERM\) at step (\d+); checkpoint saved\. Rerun the same command to "
                        r"resume", last)
    assert said and "Traceback" not in err, err[-2000:]
    step = int(said.group(1))
    assert 10 <= step < 60 and (out / "checkpoints" / f"step-{step:06d}" / "state.pt").is_file()
    again = subprocess.run(_cmd(tiny_dir, manifest, out), capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resume: continuing from the checkpoint at step {step}" in again.stdout
    _assert_same_run(reference, out)


def test_rerun_with_different_flags_is_refused(tiny_dir, manifest, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps({"model": "something-else"}))
    proc = subprocess.run(_cmd(tiny_dir, manifest, out), capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert proc.returncode == 2
    assert "holds a different unfinished run" in proc.stderr and "model" in proc.stderr


def test_an_unfinished_run_from_before_a_new_flag_resumes_as_that_flags_default(tmp_path):
    """A run_config.json written before --mask-time-prob existed ran without masks: the same run resumes, one with
    masks is refused."""
    from lora.config import build_config
    from lora.errors import LoraError
    from lora.training.run_folder import RunFolder

    cfg = build_config(output_dir=str(tmp_path))
    old = {k: v for k, v in cfg.to_dict().items() if not k.startswith("mask_time")}
    (tmp_path / "run_config.json").write_text(json.dumps(old))
    assert RunFolder(tmp_path).resuming(cfg, force=False, resume=False)
    with pytest.raises(LoraError, match="differs in: mask_time_prob"):
        RunFolder(tmp_path).resuming(build_config(output_dir=str(tmp_path), mask_time_prob=0.1), False, False)
