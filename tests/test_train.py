"""The training loop on a tiny random model: it learns, keeps the best checkpoint, is deterministic."""

from __future__ import annotations

import json

from lora.config import RunConfig
from lora.data.sources import Utterance
from lora.evaluation.evaluate import EvalContext
from lora.model.adapter import attach_lora, target_regex
from lora.model.seed import seed_everything
from lora.training.loop import train
from tests.conftest import tone


def _data():
    texts = ["one two", "three four", "five six", "seven eight"]
    return [Utterance(f"u{i}", tone(1.0, 200 + 40 * i), t, "s") for i, t in enumerate(texts)]


def _run(tiny_pair, tmp_path, train_autocast=None, **kw):
    model, processor = tiny_pair
    seed_everything(0)
    model = attach_lora(model, 8, 16, 0.0, target_regex(model, "both"))
    cfg = RunConfig(max_steps=12, warmup_steps=1, eval_every=4, batch_size=2, grad_accum=2, learning_rate=5e-3,
                    patience=0, **kw)
    data = _data()
    return train(model, EvalContext(processor, "cpu"), data, data, cfg, tmp_path / "log.jsonl",
                 train_autocast=train_autocast), model


def test_training_lowers_loss_and_logs_every_step(tiny, tmp_path):
    result, _ = _run(tiny, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert result.best_eval_loss < result.evals[0]["eval_loss"] - 0.1
    assert result.samples_seen == 12 * 2 * 2
    assert {"train_loss", "lr", "grad_norm", "step_seconds"} <= set(rows[0])


def test_best_checkpoint_is_restored(tiny, tmp_path):
    from lora.evaluation.evaluate import EvalContext, eval_loss

    result, model = _run(tiny, tmp_path)
    _, processor = tiny
    data = _data()
    now = eval_loss(model, EvalContext(processor, "cpu"), [u.audio for u in data], [u.text for u in data])
    assert abs(now - result.best_eval_loss) < 1e-5


def test_same_seed_same_result(tiny_dir, tmp_path):
    from lora.model.load import load_model, load_processor

    a, _ = _run((load_model(str(tiny_dir)), load_processor(str(tiny_dir))), tmp_path)
    b, _ = _run((load_model(str(tiny_dir)), load_processor(str(tiny_dir))), tmp_path)
    assert a.evals == b.evals


def test_early_stopping(tiny, tmp_path):
    model, processor = tiny
    seed_everything(0)
    model = attach_lora(model, 8, 16, 0.0, target_regex(model, "both"))
    cfg = RunConfig(max_steps=50, warmup_steps=1, eval_every=1, batch_size=2, grad_accum=1, learning_rate=1e-9,
                    patience=2)
    data = _data()
    result = train(model, EvalContext(processor, "cpu"), data, data, cfg, tmp_path / "log.jsonl")
    assert result.stopped_early and result.steps < 50


def test_bf16_training_learns_and_keeps_fp32_adapter_weights(tiny, tmp_path):
    import pytest
    import torch

    from lora.errors import ModelError
    from lora.model.precision import train_autocast

    try:
        amp = train_autocast(torch.device("cpu"), "bf16")
    except ModelError as exc:
        pytest.skip(str(exc))
    result, model = _run(tiny, tmp_path, train_autocast=amp)
    assert result.best_eval_loss < result.evals[0]["eval_loss"] - 0.1
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_time_masks_change_training_not_validation_and_repeat_with_the_seed(tiny_dir, tmp_path):
    from lora.model.load import load_model, load_processor

    def run(**kw):
        return _run((load_model(str(tiny_dir)), load_processor(str(tiny_dir))), tmp_path, **kw)[0]

    plain, masked, again = run(), run(mask_time_prob=0.3), run(mask_time_prob=0.3)
    assert masked.evals == again.evals
    assert masked.evals[0] == plain.evals[0]  # the untouched model's check: validation is never masked
    assert masked.evals[1]["eval_loss"] != plain.evals[1]["eval_loss"]
