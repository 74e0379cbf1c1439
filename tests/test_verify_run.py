"""verify_run's mechanical checks on a run's plan, without training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import soundfile as sf

from lora.config import build_config
from lora.data.run_data import prepare_data
from lora.scripts.verify_run import _disjoint
from lora.storage import artifacts as R
from lora.training.run_folder import RunFolder
from tests.conftest import tone


def _folder(root: Path, texts: list[str], freq: float) -> Path:
    """0000.wav, 0001.wav, ... with their transcripts, as synth_corpus and many recorders name clips."""
    root.mkdir()
    for i, text in enumerate(texts):
        sf.write(root / f"{i:04d}.wav", tone(0.8, freq + 7 * i), 16000)
        (root / f"{i:04d}.txt").write_text(text)
    return root


def _plan(tmp_path: Path, train: Path, test: Path) -> Path:
    cfg = build_config("none", source=f"folder:{train}", test_source=f"folder:{test}", output_dir=str(tmp_path / "run"))
    data = prepare_data(cfg, log=lambda *_: None)
    out = Path(cfg.output_dir)
    out.mkdir()
    RunFolder(out).write_plan(cfg, data, SimpleNamespace(measured=[]), force=False)
    return out


def test_held_out_clips_are_compared_by_audio_not_by_file_name(tmp_path):
    """Two folders that both name their clips 0000.wav.. hold different audio: no overlap."""
    train = _folder(tmp_path / "train", [f"training sentence number {w}" for w in "abcdefgh"], 200)
    test = _folder(tmp_path / "test", ["a held out sentence", "another held out sentence"], 400)
    run = _plan(tmp_path, train, test)
    ok, msg = _disjoint(run)
    assert ok, msg
    assert "2 held-out clip names also name other audio in training" in msg


def test_held_out_audio_in_training_fails(tmp_path):
    train = _folder(tmp_path / "train", [f"training sentence number {w}" for w in "abcdefgh"], 200)
    test = _folder(tmp_path / "test", ["a held out sentence", "another held out sentence"], 400)
    run = _plan(tmp_path, train, test)
    split = json.loads((run / R.SPLIT).read_text())
    split["parts"]["train"]["audio"].append(split["parts"]["test"]["audio"][0])  # a plan whose training holds it
    (run / R.SPLIT).write_text(json.dumps(split))
    assert _disjoint(run) == (False, "held-out audio in training: 1 clips")


def test_a_plan_without_audio_fingerprints_is_judged_by_clip_ids(tmp_path):
    """Runs written before split.json recorded audio: a shared id still fails, as it did."""
    train = _folder(tmp_path / "train", [f"training sentence number {w}" for w in "abcdefgh"], 200)
    test = _folder(tmp_path / "test", ["a held out sentence"], 400)
    run = _plan(tmp_path, train, test)
    split = json.loads((run / R.SPLIT).read_text())
    for part in split["parts"].values():
        del part["audio"]
    (run / R.SPLIT).write_text(json.dumps(split))
    ok, why = _disjoint(run)
    assert not ok and why.startswith("held-out clips in training: ['0000'] (compared by clip id"), why


def test_the_same_audio_under_another_name_leaves_training(tmp_path):
    """A test clip copied into the training folder is dropped from training, so the plan passes."""
    train = _folder(tmp_path / "train", [f"training sentence number {w}" for w in "abcdefgh"], 200)
    test = _folder(tmp_path / "test", ["a held out sentence"], 400)
    shutil.copy(test / "0000.wav", train / "copy.wav")
    (train / "copy.txt").write_text("the same clip with other words")
    run = _plan(tmp_path, train, test)
    split = json.loads((run / R.SPLIT).read_text())
    assert split["dropped_same_audio"] == 1 and "copy" not in split["parts"]["train"]["ids"]
    assert _disjoint(run)[0]


def test_a_run_written_before_the_model_block_reads_as_first_generation_with_learned_weights():
    from lora.scripts.verify_run import _weights

    ok, detail = _weights({"status": "complete"})
    assert ok is True and detail.startswith("Moonshine (first generation): learned weights")
    ok, detail = _weights({"model": {"label": "Moonshine v2 (streaming)",
                                     "random_weights": {"shape": "streaming-tiny", "seed": 3}}})
    assert ok is None and "RANDOM WEIGHTS (streaming-tiny, seed 3)" in detail
