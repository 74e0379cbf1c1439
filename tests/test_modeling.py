"""Model loading, LoRA attachment, device choice."""

from __future__ import annotations

import contextlib
import time

import pytest
import torch

from lora.errors import ModelError
from lora.model.adapter import attach_lora, load_adapter, parameter_counts, target_regex
from lora.model.attention import ALIGNED_SDPA, aligned_sdpa, use_aligned_attention
from lora.model.device import FallbackMonitor, resolve_device
from lora.model.load import load_model, load_processor, resolve_model
from lora.model.precision import precision_name, train_autocast
from tests.conftest import tone


def test_forward_backward_generate_with_lora(tiny):
    from lora.data.batching import collate, encode_labels

    model, processor = tiny
    peft_model = attach_lora(model, 4, 8, 0.0, target_regex(model, "both"))
    trainable, total = parameter_counts(peft_model)
    assert 0 < trainable < total
    assert all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)
    batch = collate(processor, [tone(1.0)], [encode_labels(processor.tokenizer, "hi")])
    loss = peft_model(**batch).loss
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    out = peft_model.generate(input_values=batch["input_values"], attention_mask=batch["attention_mask"],
                              max_new_tokens=4)
    assert out.shape[0] == 1


@pytest.mark.parametrize("scope,present,absent", [("decoder", "decoder", "encoder"), ("encoder", "encoder", "decoder")])
def test_scope_limits_adapted_layers(tiny, scope, present, absent):
    model, _ = tiny
    peft_model = attach_lora(model, 2, 4, 0.0, target_regex(model, scope, ("q_proj",)))
    names = [n for n, _ in peft_model.named_parameters() if "lora_A" in n]
    assert names and all(f".{present}." in n for n in names) and not any(f".{absent}." in n for n in names)


def test_target_modules_matching_nothing_fails(tiny):
    model, _ = tiny
    with pytest.raises(ModelError, match="match no linear layer.*q_proj"):
        target_regex(model, "both", ("query",))


def test_resolve_model_errors(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="no such folder"):
        resolve_model("./does/not/exist")


def test_unreachable_hub_fails_fast_naming_offline_way(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="--model offline|import_model"):
        load_model("UsefulSensors/not-cached-model")
    assert time.perf_counter() - t0 < 10


def test_adapter_that_does_not_fit_is_refused(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(ModelError, match="adapter_config.json"):
        load_adapter(model, tmp_path)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA"):
            resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ModelError, match="MPS is not available"):
            resolve_device("mps")


def test_fallback_monitor_records_and_enforces():
    import warnings

    mon = FallbackMonitor(torch.device("mps"), strict=False)
    with mon.watch():
        warnings.warn("The operator 'aten::foo' is not currently supported on the MPS backend and will fall back "
                      "to run on the CPU.", UserWarning, stacklevel=1)
    assert mon.used_fallback
    strict = FallbackMonitor(torch.device("mps"), strict=True)
    with pytest.raises(ModelError, match="--require-device"), strict.watch():
        warnings.warn("The operator 'aten::foo' is not currently supported on the MPS backend", UserWarning,
                      stacklevel=1)


def test_training_precision_choices(monkeypatch):
    cpu = torch.device("cpu")
    assert precision_name(train_autocast(cpu, "fp32")) == "fp32"
    assert precision_name(train_autocast(cpu, "auto")) == "fp32"  # auto keeps the CPU in fp32
    with pytest.raises(ModelError, match="unknown --precision 'fp16'"):
        train_autocast(cpu, "fp16")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(ModelError, match="no bf16 matrix units.*--precision fp32"):
        train_autocast(cpu, "bf16")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    ctx = train_autocast(cpu, "bf16")
    assert precision_name(ctx) == "bf16"
    for _ in range(2):  # reusable, like torch.autocast
        with ctx:
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert not torch.is_autocast_enabled("cpu")


def test_frozen_weights_stored_in_bf16_give_autocast_own_numbers(tiny):
    """FrozenBf16 rounds the frozen weights to bf16 once, as autocast does at every pass: same loss, same gradients;
    the fp32 weights are back afterwards and the adapters never leave fp32."""
    from lora.data.batching import pad_labels
    from lora.model.encoder import encode
    from lora.model.loss import token_cross_entropy
    from lora.model.precision import FrozenBf16, precision_name, step_precision
    from lora.model.seed import seed_everything

    model, processor = tiny
    seed_everything(0)
    model = attach_lora(model, 4, 8, 0.0, target_regex(model, "both"))
    torch.nn.init.normal_(next(p for n, p in model.named_parameters() if "lora_B" in n))
    audios, labels = [tone(0.8), tone(0.5, 400)], pad_labels([[5, 6, 7, 2], [8, 2]])
    before = {n: p.clone() for n, p in model.named_parameters()}
    out = []
    for ctx in (torch.autocast("cpu", dtype=torch.bfloat16),
                step_precision(model, torch.autocast("cpu", dtype=torch.bfloat16))):
        model.zero_grad()
        with ctx:
            loss = token_cross_entropy(model, encode(model, processor, audios, "cpu"), labels)[0]
        loss.backward()
        out.append((float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    frozen = step_precision(model, torch.autocast("cpu", dtype=torch.bfloat16))
    assert isinstance(frozen, FrozenBf16) and precision_name(frozen) == "bf16" and len(frozen.slots) > 10
    assert out[0][0] == out[1][0]
    for a, b in zip(out[0][1], out[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n
    assert step_precision(model, contextlib.nullcontext()).__class__ is contextlib.nullcontext


def test_aligned_attention_pads_heads_and_changes_nothing(tiny_dir):
    """Heads zero-padded to a multiple of 8 (what lets CUDA's fused kernels run): the same loss (forced on the CPU)."""
    import functools

    from transformers import AttentionInterface, MoonshineConfig, MoonshineForConditionalGeneration

    from lora.data.batching import pad_labels
    from lora.model.encoder import encode
    from lora.model.loss import token_cross_entropy

    torch.manual_seed(0)
    config = MoonshineConfig.from_pretrained(tiny_dir, hidden_size=48, intermediate_size=96)  # 12-wide heads
    model, processor = MoonshineForConditionalGeneration(config).eval(), load_processor(str(tiny_dir))
    audios, labels = [tone(0.8), tone(0.5, 400)], pad_labels([[5, 6, 7, 2], [8, 2]])
    widths = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, *a, **k):
        widths.append(q.shape[-1])
        return real(q, *a, **k)

    with torch.no_grad():
        plain = token_cross_entropy(model, encode(model, processor, audios, "cpu"), labels)[0]
        use_aligned_attention(model, "cpu")
        assert model.config._attn_implementation == "sdpa"  # nothing changes off CUDA
        use_aligned_attention(model, "cuda")  # what a GPU run does (the padding itself is forced below)
        assert model.config._attn_implementation == ALIGNED_SDPA
        AttentionInterface.register(ALIGNED_SDPA, functools.partial(aligned_sdpa, pad_on_cpu=True))
        try:
            torch.nn.functional.scaled_dot_product_attention = spy
            padded = token_cross_entropy(model, encode(model, processor, audios, "cpu"), labels)[0]
        finally:
            torch.nn.functional.scaled_dot_product_attention = real
            AttentionInterface.register(ALIGNED_SDPA, aligned_sdpa)
    assert widths and set(widths) == {16}  # 12 -> 16
    torch.testing.assert_close(plain, padded, atol=1e-5, rtol=1e-6)
