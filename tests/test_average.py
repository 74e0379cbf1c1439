"""The adapter's moving average (lora.training.average): its arithmetic, and that the loop keeps what it measured."""

from __future__ import annotations

import pytest
import torch

from lora.training.average import WeightAverage
from tests.test_train import _data, _run


def test_the_average_follows_the_weights_with_decay_one_minus_one_over_steps():
    w = torch.nn.Parameter(torch.zeros(3))
    avg = WeightAverage([w], steps=2)  # decay 0.5
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            w.fill_(value)
        avg.update()
    assert torch.equal(avg.average[0], torch.full((3,), 2.125))  # 0 -> 0.5 -> 1.25 -> 2.125


def test_given_the_optimizer_it_updates_after_each_of_its_steps():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=1.0)
    avg = WeightAverage([w], steps=2, optimizer=opt)
    w.grad = torch.tensor([-1.0])
    opt.step()  # w = 1
    assert w.item() == 1.0 and avg.average[0].item() == 0.5


def test_swapped_in_holds_the_average_and_gives_the_live_weights_back_even_on_error():
    w = torch.nn.Parameter(torch.ones(2))
    avg = WeightAverage([w], steps=4)
    with torch.no_grad():
        w.fill_(5.0)
    avg.update()  # 1 + (5 - 1) / 4 = 2
    with pytest.raises(RuntimeError), avg.swapped_in():
        assert torch.equal(w.detach(), torch.full((2,), 2.0))
        raise RuntimeError("a failed measurement")
    assert torch.equal(w.detach(), torch.full((2,), 5.0))


@pytest.mark.slow
def test_an_average_over_one_step_is_the_adapter_itself(tiny_dir, tmp_path):
    from lora.model.load import load_model, load_processor

    plain, _ = _run((load_model(str(tiny_dir)), load_processor(str(tiny_dir))), tmp_path)
    one, _ = _run((load_model(str(tiny_dir)), load_processor(str(tiny_dir))), tmp_path, average_steps=1)
    assert one.evals == plain.evals


def test_the_kept_adapter_is_the_average_its_checks_measured(tiny_dir, tmp_path):
    from lora.evaluation.evaluate import EvalContext, eval_loss
    from lora.model.load import load_model, load_processor

    processor = load_processor(str(tiny_dir))
    plain, _ = _run((load_model(str(tiny_dir)), processor), tmp_path)
    averaged, model = _run((load_model(str(tiny_dir)), processor), tmp_path, average_steps=4)
    assert [e["eval_loss"] for e in averaged.evals[1:]] != [e["eval_loss"] for e in plain.evals[1:]]
    data = _data()
    now = eval_loss(model, EvalContext(processor, "cpu"), [u.audio for u in data], [u.text for u in data])
    assert abs(now - averaged.best_eval_loss) < 1e-5
