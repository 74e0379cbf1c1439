"""The Moonshine generations this toolkit tunes, named in one place: which transformers class loads each, which
module encodes a padded batch for it, and what LoRA may target. Everything else (data, training loop, evaluation,
artifacts) is the same for both; code that differs asks :func:`family_of` instead of testing a model's type.

* ``moonshine``: the first generation (tiny-en, base-en; ``MoonshineForConditionalGeneration``), encoded by
  :mod:`lora.model.encoder`.
* ``moonshine_streaming``: Moonshine v2, the models ``moonshine-voice`` ships today (streaming tiny, small, medium;
  ``MoonshineStreamingForConditionalGeneration``), encoded by :mod:`lora.model.streaming`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from lora.errors import ModelError


@dataclass(frozen=True)
class Family:
    model_type: str  # the ``model_type`` of the checkpoint's config.json
    label: str  # what a person reads
    class_name: str  # the transformers class that loads it
    encoding: str  # the module with ``encode_padded`` and ``encoder_frames`` for a padded batch
    # Linear layers outside the encoder/decoder layers that ``--target-modules`` may also name: (name, the scope
    # that holds it, a regex over module names). v2's ``decoder.proj`` maps the encoder's width onto the decoder's
    # (small: 620 -> 512); tiny has none (both 320: an identity).
    extra_targets: tuple[tuple[str, str, str], ...] = ()

    def model_class(self):
        import transformers

        return getattr(transformers, self.class_name)

    def encoder(self):
        """The module that encodes a padded batch (``encode_padded``, ``encoder_frames``)."""
        return importlib.import_module(self.encoding)

    def prepare(self, model) -> None:
        """What a freshly loaded model of this family needs before use (the encoding module's ``prepare_model``)."""
        prepare_model = getattr(self.encoder(), "prepare_model", None)
        if prepare_model is not None:
            prepare_model(model)


V1 = Family("moonshine", "Moonshine (first generation)", "MoonshineForConditionalGeneration", "lora.model.encoder")
V2 = Family("moonshine_streaming", "Moonshine v2 (streaming)", "MoonshineStreamingForConditionalGeneration",
            "lora.model.streaming", extra_targets=(("proj", "decoder", r".*\.decoder\.proj"),))
FAMILIES = {f.model_type: f for f in (V1, V2)}


def family_of(obj) -> Family:
    """The family of a model, a PEFT model or a config (anything with ``.config.model_type`` or ``.model_type``)."""
    return family_named(getattr(getattr(obj, "config", obj), "model_type", None))


def family_named(model_type: str | None) -> Family:
    """The family of a config's ``model_type``; any other model is refused, naming the ones tuned here."""
    if model_type not in FAMILIES:
        raise ModelError(f"model type '{model_type}' is not a Moonshine model this toolkit tunes; supported: "
                         + ", ".join(f"{f.model_type} ({f.label})" for f in FAMILIES.values()))
    return FAMILIES[model_type]
