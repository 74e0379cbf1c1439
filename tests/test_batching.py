"""Batches for training: forward passes sized by audio, prepared in a background thread, same gradient."""

from __future__ import annotations

import pytest
import torch

from lora.data.batching import BatchLoader, encode_labels, forward_passes
from lora.data.sources import Utterance
from lora.model.adapter import attach_lora, target_regex
from lora.model.seed import seed_everything
from lora.training.loop import backward_step
from tests.conftest import tone


def test_forward_passes_pack_the_step_by_length_or_only_cap_it():
    sizes = [100, 400, 100, 400, 100, 400, 100, 400]
    micro = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert forward_passes(micro, sizes, None) == micro
    packed = forward_passes(micro, sizes, budget=800)
    assert packed == [[0, 2, 4, 6], [1, 3], [5, 7]]  # short clips together, long ones apart: no padding
    capped = forward_passes(micro, sizes, budget=800, merge=False)
    assert capped == [[0, 2], [1, 3], [4, 6], [5, 7]]  # each micro-batch split, none merged
    for passes in (packed, capped):
        assert sorted(i for p in passes for i in p) == list(range(8))  # every clip once
        assert all(len(p) * max(sizes[i] for i in p) <= 800 for p in passes)
    assert forward_passes([[0, 1]], sizes, budget=10) == [[0], [1]]  # a clip over the budget runs alone


def _clips(n=6):
    texts = ["one two", "three four five", "six", "seven eight", "nine ten eleven twelve", "thirteen"]
    return [Utterance(f"u{i}", tone(0.5 + 0.15 * i, 200 + 40 * i), texts[i], "s") for i in range(n)]


def test_background_preparation_gives_the_same_batches(tiny):
    _, processor = tiny
    clips = _clips()
    labels = [encode_labels(processor.tokenizer, c.text) for c in clips]
    steps = [[[0, 1], [2, 3]], [[4, 5]], [[5, 0, 3]]]
    made = []
    for background in (True, False):
        with BatchLoader(processor, clips, labels, "cpu", background=background) as loader:
            for micro in steps:
                loader.submit(micro)
            made.append([b for _ in steps for b in loader.take()])
    assert len(made[0]) == len(made[1]) == 4
    for a, b in zip(*made, strict=True):
        for x, y in zip((a.values, a.samples, a.labels), (b.values, b.samples, b.labels), strict=True):
            assert torch.equal(x, y)


def test_a_rank_prepares_only_its_share(tiny):
    _, processor = tiny
    clips = _clips()
    labels = [encode_labels(processor.tokenizer, c.text) for c in clips]
    with BatchLoader(processor, clips, labels, "cpu", share=lambda idx: idx[1::2]) as loader:
        loader.submit([[0, 1, 2, 3]])
        (batch,) = loader.take()
    assert batch.samples.tolist() == [clips[1].n_samples, clips[3].n_samples]


@pytest.mark.parametrize("budget", [None, 1, 10**9])
def test_the_step_gradient_does_not_depend_on_how_clips_are_grouped(tiny, budget):
    """One pass per micro-batch, one clip per pass, or the whole step in one pass: the same gradient."""
    model, processor = tiny
    seed_everything(0)
    model = attach_lora(model, 4, 8, 0.0, target_regex(model, "both"))
    torch.nn.init.normal_(next(p for n, p in model.named_parameters() if "lora_B" in n))
    clips = _clips()
    labels = [encode_labels(processor.tokenizer, c.text) for c in clips]
    micro = [[0, 1, 2], [3, 4, 5]]
    tokens = sum(len(labels[i]) for idx in micro for i in idx)
    grads = {}
    for b in (None, budget):
        model.zero_grad()
        with BatchLoader(processor, clips, labels, "cpu", budget=b) as loader:
            loader.submit(micro)
            loss = backward_step(model, loader.take(), tokens, "cpu")
        grads[b] = (float(loss), [p.grad.clone() for p in model.parameters() if p.requires_grad])
    (loss_a, ga), (loss_b, gb) = grads[None], grads[budget]
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_pass_budget_defaults(monkeypatch):
    from types import SimpleNamespace

    from lora.config import GPU_MEMORY_SHARE, TRAIN_BYTES_PER_AUDIO_SECOND, RunConfig, pass_budget
    from lora.errors import LoraError

    assert pass_budget(RunConfig(), torch.device("cpu")) == (None, True)  # the CPU: as before
    assert pass_budget(RunConfig(pass_seconds=0), torch.device("cpu")) == (None, True)
    assert pass_budget(RunConfig(pass_seconds=30), torch.device("cpu"), world=2) == (2 * 30 * 16000, True)
    with pytest.raises(LoraError, match="--pass-seconds"):
        pass_budget(RunConfig(pass_seconds=-1), torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=80 * 2**30))
    budget, merge = pass_budget(RunConfig(), torch.device("cuda"))
    assert not merge and budget == int(GPU_MEMORY_SHARE * 80 * 2**30 / TRAIN_BYTES_PER_AUDIO_SECOND * 16000)
