"""Load Moonshine + processor, attach PEFT LoRA, pick and watch the device.

``--model`` accepts a hub id (``UsefulSensors/moonshine-tiny``), a local checkpoint folder, or
``offline``: the base-en model imported from the moonshine-cpp wheel into a cache folder on
first use (see :mod:`lora.offline_model`). An unreachable hub fails within seconds with the
offline alternative, never a hang and never a silent swap of models.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lora.errors import ModelError

OFFLINE_MODEL = "offline"
ATTENTION_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJ = ("fc1", "fc2")
SCOPES = ("both", "encoder", "decoder")


def progress_bars_only_on_a_terminal() -> None:
    """transformers draws a bar while loading weights; in a log file that is carriage-return noise."""
    import sys

    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def cache_root() -> Path:
    return Path(os.environ.get("MOONSHINE_LORA_CACHE", Path.home() / ".cache" / "moonshine-lora"))


def offline_model_dir(log=print) -> Path:
    """The imported base-en checkpoint, importing it into the cache on first use (and saying so)."""
    from lora.offline_model import find_wheel_files, import_model, is_imported_dir

    files = find_wheel_files()
    target = cache_root() / f"base-en-moonshine-cpp-{files.versions['moonshine-cpp']}"
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
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"--model {spec}: no such folder")
    return spec


def _hub_error(spec: str, reason: str) -> ModelError:
    return ModelError(f"cannot load '{spec}' from the Hugging Face hub ({reason}); offline, use --model offline "
                      f"or --model DIR after: python -m lora.scripts.import_model --output DIR")


def _from_pretrained(cls, spec: str):
    """Local files (folder or hub cache) first; the hub only if it is reachable."""
    try:
        return cls.from_pretrained(spec, local_files_only=True)
    except OSError:
        if Path(spec).exists():
            raise
    from lora.data.sources import hub_offline_reason

    reason = hub_offline_reason()
    if reason:
        raise _hub_error(spec, reason)
    try:
        return cls.from_pretrained(spec)
    except OSError as exc:
        raise _hub_error(spec, str(exc).splitlines()[0]) from exc


def load_processor(spec: str):
    from transformers import AutoProcessor

    try:
        return _from_pretrained(AutoProcessor, spec)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a processor from '{spec}': {str(exc).splitlines()[0]}") from exc


def load_model(spec: str):
    from transformers import MoonshineForConditionalGeneration

    try:
        model = _from_pretrained(MoonshineForConditionalGeneration, spec)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a Moonshine model from '{spec}': {str(exc).splitlines()[0]}") from exc
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


# ---------------------------------------------------------------- LoRA

def target_regex(model, scope: str = "both", modules: tuple[str, ...] = ATTENTION_PROJ + MLP_PROJ) -> str:
    """A PEFT ``target_modules`` regex for ``modules`` inside the chosen encoder/decoder scope.

    Fails if it matches no real module of ``model``: a typo must not train nothing.
    """
    if scope not in SCOPES:
        raise ModelError(f"unknown --lora-scope '{scope}'; valid: {', '.join(SCOPES)}")
    parts = "encoder|decoder" if scope == "both" else scope
    pattern = rf".*\.({parts})\.layers\.\d+\.\w+\.({'|'.join(re.escape(m) for m in modules)})"
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.fullmatch(pattern, n)]
    if not names:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ModelError(f"--target-modules {','.join(modules)} match no linear layer in the {scope} scope; "
                         f"the model's linear layers are: {', '.join(linear)}")
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
        raise ModelError(f"adapter {adapter_dir} does not fit the base model: {str(exc).splitlines()[0][:200]}") from exc


# ---------------------------------------------------------------- devices

def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA device is available to this torch build")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ModelError("--device mps: MPS is not available (needs Apple silicon and a macOS torch build)")
    if name not in ("cpu", "cuda", "mps"):
        raise ModelError(f"unknown --device '{name}'; valid: auto, cpu, cuda, mps")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def autocast(device: torch.device):
    """Evaluation precision: bf16 autocast on CUDA cards that support it; a no-op elsewhere (CPU/MPS stay fp32).

    ``run_stt`` uses the same rule, so a run's transcripts and ``run_stt``'s are computed alike.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


PRECISIONS = ("auto", "fp32", "bf16")


class Bf16Autocast:
    """Reusable bf16 autocast; on the CPU it also picks PyTorch's math attention kernel, whose bf16
    backward was 4x faster than the flash kernel's on our CPU (the flash one took 20% of a step)."""

    def __init__(self, device: torch.device):
        self.device_type = device.type

    def __enter__(self):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(torch.autocast(self.device_type, dtype=torch.bfloat16))
        if self.device_type == "cpu":
            self._stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


def precision_name(context) -> str:
    """'bf16' for the contexts :func:`autocast` / :func:`train_autocast` return, else 'fp32'."""
    if isinstance(context, FrozenBf16):
        return precision_name(context.amp)
    return "bf16" if isinstance(context, (torch.autocast, Bf16Autocast)) else "fp32"


class FrozenBf16:
    """bf16 training steps with the frozen weights of the linear and convolution layers stored in bf16 once.

    Autocast casts every fp32 weight a bf16 matmul or convolution reads, at every forward pass, and keeps the
    cast copy for the backward pass; it caches casts only of weights that require gradients, so the frozen
    base (all but the adapters) is cast again at every micro-batch. Here those weights are cast once, and
    swapped in while a step runs (``with FrozenBf16(model, amp):``); leaving puts the fp32 weights back, for
    fp32 evaluation and saving. The numbers are autocast's own: the same rounding to bf16, done once. The
    adapters, their gradients and the optimizer stay fp32; norms and embeddings stay fp32, as autocast runs them.

    PEFT's input casting is switched off meanwhile (``cast_input_dtype_enabled``, what
    ``peft.helpers.disable_input_dtype_casting`` sets, here without walking the model at every pass): each
    adapter cast its bf16 input up to fp32 for its fp32 weights, and autocast cast it straight back down for the
    matmul; the values are the same without the two copies.
    """

    def __init__(self, model, amp):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.amp, self.slots = amp, []
        self.adapters = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d)):
                for name in ("weight", "bias"):
                    p = module._parameters.get(name)
                    if p is not None and not p.requires_grad and p.dtype == torch.float32:
                        self.slots.append((module, name, p, torch.nn.Parameter(p.detach().to(torch.bfloat16),
                                                                               requires_grad=False)))

    def __enter__(self):
        self.amp.__enter__()
        for module, name, _, low in self.slots:
            module._parameters[name] = low
        for adapter in self.adapters:
            adapter.cast_input_dtype_enabled = False
        return self

    def __exit__(self, *exc):
        for module, name, full, _ in self.slots:
            module._parameters[name] = full
        for adapter in self.adapters:
            adapter.cast_input_dtype_enabled = True
        return self.amp.__exit__(*exc)


def step_precision(model, amp):
    """The context a training step runs in: ``amp``, with :class:`FrozenBf16` when ``amp`` is bf16."""
    return FrozenBf16(model, amp) if precision_name(amp) == "bf16" else amp


ALIGNED_SDPA = "sdpa_aligned"


def aligned_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None,
                 pad_on_cpu: bool = False, **kwargs):
    """transformers' SDPA attention with the head size zero-padded to a multiple of 8 on CUDA.

    base-en's heads are 52 wide (416 / 8). PyTorch's fused CUDA kernels (flash, memory-efficient, cuDNN) need a
    multiple of 8, so SDPA fell back to its math kernel, which for bf16 inputs computes in fp32 (``torch.backends
    .cuda.allow_fp16_bf16_reduction_math_sdp`` is off by default): fp32 matrix products, casts and a separate
    softmax in every attention. Zero columns change neither ``q.k`` nor the used columns of the output, and the
    scale stays ``1/sqrt(52)``; the padding is sliced off after. Elsewhere (CPU) this is transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    size = query.shape[-1]
    pad = -size % 8
    if not pad or (query.device.type != "cuda" and not pad_on_cpu):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    q, k, v = (torch.nn.functional.pad(t, (0, pad)) for t in (query, key, value))
    out, weights = sdpa_attention_forward(module, q, k, v, attention_mask, dropout=dropout,
                                          scaling=size**-0.5 if scaling is None else scaling, is_causal=is_causal,
                                          **kwargs)
    return out[..., :size], weights


def use_aligned_attention(model, device) -> None:
    """On CUDA, run ``model``'s attention through :func:`aligned_sdpa` (where it used SDPA); masks are made as
    for SDPA. Elsewhere nothing changes (the padding would buy no kernel there)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if torch.device(device).type != "cuda" or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    AttentionInterface.register(ALIGNED_SDPA, aligned_sdpa)
    AttentionMaskInterface.register(ALIGNED_SDPA, sdpa_mask)
    model.config._attn_implementation = ALIGNED_SDPA


def _cpu_has_bf16_units() -> bool:
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch.cpu helpers; absent = no
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def train_autocast(device: torch.device, precision: str = "auto"):
    """Training precision. auto: as evaluation (bf16 on CUDA, fp32 elsewhere); fp32; or bf16 autocast
    (weights and the optimizer stay fp32), which on the CPU needs bf16 units (AVX512-BF16 or AMX)."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown --precision '{precision}'; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return autocast(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ModelError(f"--precision bf16: {device_name(device)} has no bf16 support; use --precision fp32")
    if device.type == "cpu" and not _cpu_has_bf16_units():
        raise ModelError("--precision bf16: this CPU has no bf16 matrix units (AVX512-BF16 or AMX), so bf16 "
                         "would be slower than fp32; use --precision fp32")
    if device.type == "mps":
        raise ModelError("--precision bf16 is not supported on MPS by this tool; use --precision fp32")
    return Bf16Autocast(device)


_FALLBACK = re.compile(r"not (currently )?supported on the MPS backend|fall ?back to run on the CPU", re.I)


@dataclass
class FallbackMonitor:
    """Records PyTorch's MPS->CPU fallback warnings while active; with ``strict`` they are errors."""

    device: torch.device
    strict: bool = False
    messages: list[str] = field(default_factory=list)

    @property
    def used_fallback(self) -> bool:
        return bool(self.messages)

    @contextlib.contextmanager
    def watch(self):
        if self.device.type != "mps":
            yield self
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield self
            except NotImplementedError as exc:
                raise ModelError(f"an operator is not implemented on MPS ({str(exc).splitlines()[0][:160]}); set "
                                 "PYTORCH_ENABLE_MPS_FALLBACK=1 to allow CPU fallback, or use --device cpu") from exc
            finally:
                for w in caught:
                    if _FALLBACK.search(str(w.message)):
                        self.messages.append(str(w.message).splitlines()[0])
                    else:
                        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        if self.strict and self.messages:
            raise ModelError(f"MPS fell back to the CPU ({self.messages[0][:160]}); --require-device forbids it")
