"""Interrupted runs resume: a SIGKILLed run and an uninterrupted one end with equal metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import tone

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    rows = []
    for spk in range(6):
        for i in range(4):
            name = f"s{spk}-{i}.wav"
            sf.write(folder / name, tone(0.6 + 0.1 * i, 150 + 30 * spk + 7 * i), 16000)
            rows.append({"audio": name, "text": f"speaker {spk} says number {i}", "speaker": f"s{spk}"})
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cmd(tiny_dir, manifest, out, steps=60):
    return [sys.executable, "-m", "lora.runners.real_small", "--model", str(tiny_dir), "--source", f"manifest:{manifest}",
            "--samples", "0", "--split-ratios", "0.5,0.25,0.25", "--max-steps", str(steps), "--eval-every", "10",
            "--save-every", "10", "--batch-size", "2", "--grad-accum", "2", "--warmup-steps", "2", "--patience", "0",
            "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--learning-rate", "3e-3",
            "--device", "cpu", "--output-dir", str(out), "-q"]


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


def test_sigkill_then_rerun_matches_uninterrupted_run(tiny_dir, manifest, tmp_path):
    ref = subprocess.run(_cmd(tiny_dir, manifest, tmp_path / "ref"), capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tiny_dir, manifest, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT)
    _wait_for(out / "checkpoints" / "step-000020" / "state.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "real_metrics.json").exists()

    again = subprocess.run(_cmd(tiny_dir, manifest, out), capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resume: continuing from the checkpoint at step" in again.stdout + again.stderr

    m_ref, pred_ref, log_ref = _results(tmp_path / "ref")
    m_res, pred_res, log_res = _results(out)
    assert [r["step"] for r in log_res] == list(range(1, 61))
    for a, b in zip(log_ref, log_res, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-7)
    for part in ("tuned",):
        for key in ("eval_loss", "test_loss", "wer", "cer"):
            assert m_res[part][key] == pytest.approx(m_ref[part][key], rel=1e-5, abs=1e-7), key
    assert pred_res == pred_ref
    assert len(list((out / "checkpoints").iterdir())) == 2  # only the last K are kept


def test_ctrl_c_saves_checkpoint_and_says_how_to_resume(tiny_dir, manifest, tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_cmd(tiny_dir, manifest, out, steps=400), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=ROOT)
    _wait_for(out / "checkpoints" / "step-000010" / "state.pt", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped: interrupted at step") and "Rerun the same command to resume" in last
    step = int(last.split("at step ")[1].split(";")[0])
    assert (out / "checkpoints" / f"step-{step:06d}" / "state.pt").is_file()
    assert not (out / "real_metrics.json").exists()


def test_rerun_with_different_flags_is_refused(tiny_dir, manifest, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps({"model": "something-else"}))
    proc = subprocess.run(_cmd(tiny_dir, manifest, out), capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert proc.returncode == 2
    assert "holds a different unfinished run" in proc.stderr and "model" in proc.stderr
