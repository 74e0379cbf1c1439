"""On CUDA, attention heads padded to a multiple of 8 so PyTorch's fused SDPA kernels run (base-en: 52 -> 56)."""

from __future__ import annotations

import torch

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
