"""Time masks on the encoder's frames while training: SpecAugment's time masking (Park et al., 2019), as wav2vec2
and Whisper apply it in ``transformers`` (their ``mask_time_prob`` and ``mask_time_length``), which Moonshine's model
does not have. Spans of ``length`` frames after the convolution stem are zeroed, about ``prob`` of each clip's frames
(spans may overlap), so the adapter cannot lean on every frame of a prompt it has heard a dozen times.

Hand-rolled rather than ``transformers``' ``_compute_mask_indices`` (same rule: ``prob * frames / length``
spans, a fractional span kept with its fraction as probability, starts drawn uniformly): that helper is private
and draws from numpy's global generator, which checkpoints do not save; this draws from torch's, which they do, so
a resumed run masks the same frames. The draws are made on the host: nothing waits on a GPU. Validation, test and
canaries are never masked. Under torchrun every rank is seeded alike, so the ranks draw the same numbers for
different clips. Measured, and why the personal preset leaves it off: docs/recorded.md ("Time masks on the
encoder's frames").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lora.config import RunConfig
from lora.model.encoder import encoder_frames


@dataclass(frozen=True)
class TimeMask:
    prob: float  # expected fraction of a clip's frames covered by spans (before overlaps)
    length: int  # frames per span (base-en's encoder: ~42 frames per second of audio)

    @classmethod
    def of(cls, cfg: RunConfig) -> TimeMask | None:
        return cls(cfg.mask_time_prob, cfg.mask_time_length) if cfg.mask_time_prob else None

    def draw(self, model, values: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        """Frames to zero, ``[clips, frames]`` (True: masked), for a padded batch (:func:`stem_inputs`)."""
        drop = torch.zeros(len(samples), int(encoder_frames(model, torch.tensor(values.shape[1]))), dtype=torch.bool)
        for row, n in zip(drop, encoder_frames(model, samples).tolist(), strict=True):
            spans = self.prob * n / self.length
            spans = int(spans) + int(torch.rand(()) < spans - int(spans))
            if n > self.length:
                for start in torch.randint(0, n - self.length, (spans,)).tolist():
                    row[start:start + self.length] = True
        return drop
