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
    draws = torch.stack([TimeMask(prob=0.2, length=5, step=s).draw(model, values, samples, [0, 1, 2])
                         for s in range(300)])
    assert draws.shape[1:] == (3, frames[0])
    for clip, n in enumerate(frames):
        assert not draws[:, clip, n:].any()  # padding frames are never chosen
        share = draws[:, clip, :n].float().mean().item()
        assert 0.15 < share < 0.22, (n, share)  # 0.2 in spans, less what overlapping spans share, plus chance
    runs = draws[0, 0].int().diff().abs().sum()  # a span is 5 frames, or longer where two overlap
    assert draws[0, 0].sum() >= 5 * (runs // 2)


def test_a_clip_is_masked_by_the_seed_step_and_its_index_not_by_its_batch(tiny):
    """So a resumed run, or a clip on another torchrun rank, gets the masks one uninterrupted process would draw."""
    model, _ = tiny
    samples, values = torch.tensor([32000, 16000]), torch.zeros(2, 32000)
    mask = TimeMask(0.15, 5, seed=3, step=7)
    a = mask.draw(model, values, samples, [4, 9])
    assert a.any() and torch.equal(a, mask.draw(model, values, samples, [4, 9]))
    alone = mask.draw(model, values[1:, :16000], samples[1:], [9])  # clip 9 alone, in a shorter padded batch
    assert torch.equal(alone[0], a[1, :alone.shape[1]]) and not a[1, alone.shape[1]:].any()
    assert not torch.equal(a, mask.draw(model, values, samples, [5, 9]))  # another clip, other masks
    assert not torch.equal(a, TimeMask(0.15, 5, seed=3, step=8).draw(model, values, samples, [4, 9]))
    assert not torch.equal(a, TimeMask(0.15, 5, seed=4, step=7).draw(model, values, samples, [4, 9]))


def test_replay_clips_are_fed_as_they_are(tiny):
    """Clips numbered from ``own`` on are general speech replayed to hold the model where it was: never masked."""
    model, _ = tiny
    samples, values = torch.tensor([32000, 32000, 32000]), torch.zeros(3, 32000)
    every = TimeMask(0.3, 5, seed=1, step=2).draw(model, values, samples, [1, 6, 7])
    own = TimeMask(0.3, 5, seed=1, step=2, own=6).draw(model, values, samples, [1, 6, 7])
    assert every[1].any() and every[2].any()  # without ``own``, the replay is masked too
    assert torch.equal(own[0], every[0]) and not own[1:].any()
