"""Load Moonshine and its processor: a hub id, a local folder, or ``offline`` (base-en imported from the
moonshine-cpp wheel into a cache folder on first use, :mod:`lora.model.offline`). An unreachable hub fails within
seconds with the offline alternative, never a hang and never a silent swap of models.
"""

from __future__ import annotations

from pathlib import Path

from lora.errors import ModelError
from lora.storage.cache import cache_root, filling, hub_offline_reason

OFFLINE_MODEL = "offline"


def progress_bars_only_on_a_terminal() -> None:
    """transformers draws a bar while loading weights; in a log file that is carriage-return noise."""
    import sys

    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def offline_model_dir(log=print) -> Path:
    """The imported base-en checkpoint, importing it into the cache on first use (and saying so)."""
    from lora.model.offline import find_wheel_files, import_model, is_imported_dir

    files = find_wheel_files()
    target = cache_root() / f"base-en-moonshine-cpp-{files.versions['moonshine-cpp']}"
    with filling(target):
        if not is_imported_dir(target):
            log(f"model: importing Moonshine base-en from the moonshine-cpp wheel into {target} (first use)")
            import_model(target, force=True)
    return target


def resolve_model(spec: str, log=print) -> str:
    """A path (or hub id) that ``from_pretrained`` can load without surprises."""
    if spec == OFFLINE_MODEL:
        return str(offline_model_dir(log))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"--model {spec}: folder has no config.json; expected a transformers checkpoint "
                             "(e.g. one written by python -m lora.scripts.import_model)")
        _check_family(path)
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"--model {spec}: no such folder")
    return spec


def _check_family(folder: Path) -> None:
    """A local checkpoint of another kind of model is refused before anything is loaded (hub ids: by load_model)."""
    import json

    from lora.model.family import family_named

    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"--model {folder}: config.json is not a readable JSON object ({exc})") from exc
    try:
        family_named(model_type)
    except ModelError as exc:
        raise ModelError(f"--model {folder}: {exc}") from None


def _hub_error(spec: str, reason: str) -> ModelError:
    return ModelError(f"cannot load '{spec}' from the Hugging Face hub ({reason}); offline, use --model offline "
                      f"or --model DIR after: python -m lora.scripts.import_model --output DIR")


def _from_pretrained(cls, spec: str, **kwargs):
    """Local files (folder or hub cache) first; the hub only if it is reachable."""
    try:
        return cls.from_pretrained(spec, local_files_only=True, **kwargs)
    except OSError:
        if Path(spec).exists():
            raise
    reason = hub_offline_reason()
    if reason:
        raise _hub_error(spec, reason)
    try:
        return cls.from_pretrained(spec, **kwargs)
    except OSError as exc:
        raise _hub_error(spec, str(exc).splitlines()[0]) from exc


def load_processor(spec: str):
    from transformers import AutoProcessor

    folder = Path(spec)
    if folder.is_dir():
        needed = (("feature extractor", ("preprocessor_config.json", "processor_config.json")),
                  ("tokenizer", ("tokenizer.json", "tokenizer_config.json")))
        missing = [what for what, names in needed if not any((folder / n).is_file() for n in names)]
        if missing:
            raise ModelError(f"{spec} holds no {' and no '.join(missing)} (preprocessor_config.json or "
                             "processor_config.json, tokenizer.json): save the processor beside the weights "
                             "(processor.save_pretrained(DIR)), as python -m lora.scripts.import_model does")

    try:
        return _from_pretrained(AutoProcessor, spec)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a processor from '{spec}': {str(exc).splitlines()[0]}") from exc


def load_config(spec: str):
    """The checkpoint's config (its ``model_type`` picks the family, :mod:`lora.model.family`)."""
    from transformers import AutoConfig

    try:
        return _from_pretrained(AutoConfig, spec)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read a model config from '{spec}': {str(exc).splitlines()[0]}") from exc


def load_model(spec: str):
    """A Moonshine model of either generation, by the ``model_type`` of its config; anything else is refused."""
    from lora.model.family import family_of

    family = family_of(load_config(spec))
    try:
        # transformers (5.25) kernelizes a model by default: that needs the `kernels` package and, on CUDA, kernels
        # from the hub. Moonshine has no layer they replace, so it buys nothing and would tie a GPU run to the network.
        model = _from_pretrained(family.model_class(), spec, use_kernels=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a Moonshine model from '{spec}': {str(exc).splitlines()[0]}") from exc
    family.prepare(model)
    fix_special_tokens(model.config)
    fix_special_tokens(model.generation_config)
    # We always pass max_new_tokens (derived from audio length); a stored max_length only warns.
    model.generation_config.max_length = None
    return model


def fix_special_tokens(config) -> None:
    """Label shifting and generation need these; Moonshine's tokenizer fixes their values."""
    for name, value in (("pad_token_id", 0), ("decoder_start_token_id", 1), ("eos_token_id", 2), ("bos_token_id", 1)):
        if getattr(config, name, None) is None:
            setattr(config, name, value)
