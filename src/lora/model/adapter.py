"""PEFT LoRA on Moonshine: which linear layers (a regex over module names), attach, count, reload."""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

import torch

from lora.errors import ModelError

ATTENTION_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJ = ("fc1", "fc2")
SCOPES = ("both", "encoder", "decoder")


def target_regex(model, scope: str = "both", modules: tuple[str, ...] = ATTENTION_PROJ + MLP_PROJ) -> str:
    """A PEFT ``target_modules`` regex for ``modules`` inside the chosen encoder/decoder scope: leaf names inside the
    encoder/decoder layers, plus the family's own layers outside them (v2's ``proj``, :mod:`lora.model.family`).

    Fails if any of ``modules`` matches no real layer of ``model``: a typo, or a name of the other generation's
    layers, must not train less than asked.
    """
    from lora.model.family import family_of

    if scope not in SCOPES:
        raise ModelError(f"unknown --lora-scope '{scope}'; valid: {', '.join(SCOPES)}")
    parts = "encoder|decoder" if scope == "both" else scope
    extra = {name: regex for name, part, regex in family_of(model).extra_targets if scope in ("both", part)}
    inside = [m for m in modules if m not in extra]
    alternatives = [rf".*\.({parts})\.layers\.\d+\.\w+\.({'|'.join(re.escape(m) for m in inside)})"] if inside else []
    alternatives += [extra[m] for m in modules if m in extra]
    pattern = "|".join(f"(?:{a})" for a in alternatives) if len(alternatives) > 1 else alternatives[0]
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    names = [n for n in linear if re.fullmatch(pattern, n)]
    leaves = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in linear}))
    if not names:
        raise ModelError(f"--target-modules {','.join(modules)} match no linear layer in the {scope} scope; "
                         f"the model's linear layers are: {leaves}")
    unused = [m for m in modules if not any(n.rsplit(".", 1)[-1] == m for n in names)]
    if unused:
        raise ModelError(f"--target-modules {','.join(unused)}: no such linear layer in the {scope} scope of this "
                         f"{family_of(model).label} model; its linear layers are: {leaves}")
    return pattern


def attach_lora(model, r: int, alpha: int, dropout: float, target_modules: str):
    """Wrap ``model`` with PEFT LoRA. ``task_type`` stays unset: SEQ_2_SEQ_LM injects ``input_ids``,
    which Moonshine (it takes ``input_values``) rejects."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none")
    with _quiet_peft():
        return get_peft_model(model, config)


@contextlib.contextmanager
def _quiet_peft():
    """peft 0.21 calls a transformers API that transformers 5 deprecated; the warning is not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def load_adapter(base, adapter_dir: str | Path, trainable: bool = False):
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"--adapter-dir {adapter_dir}: no adapter_config.json (expected outputs/<run>/lora_adapter)")
    try:
        with _quiet_peft():
            return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelError(f"adapter {adapter_dir} does not fit the base model: "
                         f"{str(exc).splitlines()[0][:200]}") from exc
