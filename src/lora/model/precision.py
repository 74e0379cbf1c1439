"""Training and evaluation precision: fp32, bf16 autocast (CUDA; CPUs with AVX512-BF16/AMX), and frozen
weights kept in bf16 for bf16 steps."""

from __future__ import annotations

import contextlib

import torch

from lora.errors import ModelError
from lora.model.device import device_name


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


def cpu_has_bf16_units() -> bool:
    """Whether this CPU has bf16 matrix units (AVX512-BF16 or AMX); without them bf16 runs far slower than fp32."""
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
    if device.type == "cpu" and not cpu_has_bf16_units():
        raise ModelError("--precision bf16: this CPU has no bf16 matrix units (AVX512-BF16 or AMX), so bf16 "
                         "would be slower than fp32; use --precision fp32")
    if device.type == "mps":
        raise ModelError("--precision bf16 is not supported on MPS by this tool; use --precision fp32")
    return Bf16Autocast(device)
