"""Time masks on the encoder's frames while training: SpecAugment's time masking (Park et al., 2019), as wav2vec2
and Whisper apply it in ``transformers`` (their ``mask_time_prob`` and ``mask_time_length``), which Moonshine's model
does not have. Spans of ``length`` frames after the convolution stem are zeroed, about ``prob`` of each clip's frames
(spans may overlap), so the adapter cannot lean on every frame of a prompt it has heard a dozen times.

Hand-rolled rather than ``transformers``' ``_compute_mask_indices`` (same rule: ``prob * frames / length``
spans, a fractional span kept with its fraction as probability, starts drawn uniformly): that helper is private
and draws from numpy's global generator, so a clip's masks would depend on what was drawn before it. Here each
clip's masks come from its own generator, seeded by (run seed, optimizer step, the clip's index among the run's
training clips): a resumed run masks the same frames without any saved generator state, and under torchrun a clip is
masked as one process would mask it, whichever rank holds it (and the ranks' clips differ). The draws are made on
the host: nothing waits on a GPU. Only the user's own clips are masked: replay clips (general speech mixed into
every batch, :func:`lora.config.replay_per_batch`) are there to hold the model to speech as it was, and are fed as
they are. Validation, test and canaries are never masked. Measured, and why the personal
preset leaves it off: docs/recorded.md ("Time masks on the encoder's frames").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lora.config import RunConfig
from lora.model.family import family_of


@dataclass(frozen=True)
class TimeMask:
    """The masks of one optimizer step."""

    prob: float  # expected fraction of a clip's frames covered by spans (before overlaps)
    length: int  # frames per span (base-en's encoder: ~42 frames per second of audio)
    seed: int = 0  # the run's seed
    step: int = 0  # the optimizer step: a clip seen again in a later epoch is masked afresh
    own: int | None = None  # clips numbered from here on are replay, never masked (None: every clip is the user's)

    @classmethod
    def of(cls, cfg: RunConfig, step: int, own: int) -> TimeMask | None:
        return cls(cfg.mask_time_prob, cfg.mask_time_length, cfg.seed, step, own) if cfg.mask_time_prob else None

    def draw(self, model, values: torch.Tensor, samples: torch.Tensor, clips: Sequence[int]) -> torch.Tensor:
        """Frames to zero, ``[clips, frames]`` (True: masked), for a padded batch (:func:`stem_inputs`) of the
        training set's clips numbered ``clips`` (the user's first, then the replay's)."""
        encoder_frames = family_of(model).encoder().encoder_frames
        drop = torch.zeros(len(samples), int(encoder_frames(model, torch.tensor(values.shape[1]))), dtype=torch.bool)
        for row, n, clip in zip(drop, encoder_frames(model, samples).tolist(), clips, strict=True):
            if self.own is not None and clip >= self.own:
                continue
            rng = np.random.default_rng([self.seed % 2**64, self.step, clip])
            spans = self.prob * n / self.length
            spans = int(spans) + int(rng.random() < spans - int(spans))
            if n > self.length:
                for start in rng.integers(0, n - self.length, spans).tolist():
                    row[start:start + self.length] = True
        return drop
