"""Time masks (lora.training.masking): spans inside each clip's own frames, about the asked share of them."""

from __future__ import annotations

import torch

from lora.model.encoder import encoder_frames
from lora.training.masking import TimeMask


def test_masks_cover_about_the_asked_share_of_each_clip_and_never_its_padding(tiny):
    model, _ = tiny
    samples = torch.tensor([48000, 24000, 8000])
    values = torch.zeros(3, 48000)
    frames = encoder_frames(model, samples).tolist()
    mask = TimeMask(prob=0.2, length=5)
    torch.manual_seed(0)
    draws = torch.stack([mask.draw(model, values, samples) for _ in range(300)])
    assert draws.shape[1:] == (3, frames[0])
    for clip, n in enumerate(frames):
        assert not draws[:, clip, n:].any()  # padding frames are never chosen
        share = draws[:, clip, :n].float().mean().item()
        assert 0.15 < share < 0.22, (n, share)  # 0.2 in spans, less what overlapping spans share, plus chance
    runs = draws[0, 0].int().diff().abs().sum()  # a span is 5 frames, or longer where two overlap
    assert draws[0, 0].sum() >= 5 * (runs // 2)


def test_the_same_seed_draws_the_same_masks(tiny):
    model, _ = tiny
    samples, values = torch.tensor([32000, 16000]), torch.zeros(2, 32000)
    torch.manual_seed(3)
    a = TimeMask(0.15, 5).draw(model, values, samples)
    torch.manual_seed(3)
    assert torch.equal(a, TimeMask(0.15, 5).draw(model, values, samples))
    assert a.any()
