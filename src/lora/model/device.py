"""Pick the device once (``auto``: cuda, then mps, then cpu) and watch for MPS falling back to the CPU."""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass, field

import torch

from lora.errors import ModelError


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
