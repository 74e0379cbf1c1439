"""Shared fixtures: a tiny random Moonshine, real speech clips, and the imported offline model."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SR = 16000

# The tiers (pyproject.toml's markers): a test without `slow` or `acceptance` is in the fast tier
# (`bash scripts/test.sh --fast`), which must stay under two minutes on a 2-core machine. An unmarked test whose call
# takes longer than this fails, naming the marker to add. Generous: it must hold on the slowest of our CPUs.
FAST_TEST_SECONDS = float(os.environ.get("MOONSHINE_LORA_FAST_TEST_SECONDS", "10"))
COST_MARKERS = ("slow", "acceptance")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (report.when == "call" and report.passed and call.duration > FAST_TEST_SECONDS
            and not any(item.get_closest_marker(m) for m in COST_MARKERS)):
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} is in the fast tier but took {call.duration:.1f} s (limit "
                           f"{FAST_TEST_SECONDS:g} s): make it faster, or mark it @pytest.mark.slow")


@pytest.fixture(scope="session", autouse=True)
def shared_caches():
    """The caches many tests read (the imported base-en, the synthesized default corpus, the default canaries) built
    before the first test, not inside whichever test first needs them: on a fresh machine that build (about 30 s) would
    count against a fast test's time limit, or a parallel worker's test would wait for it on the cache's lock. A build
    that fails here is left to the tests that need the cache: they fail with its message."""
    from lora.data.general import default_canaries
    from lora.data.run_data import resolve_source
    from lora.model.load import offline_model_dir

    quiet = lambda m: None  # noqa: E731
    for build in (lambda: offline_model_dir(log=quiet), lambda: resolve_source("synth:default", quiet),
                  lambda: default_canaries(log=quiet)):
        with contextlib.suppress(Exception):  # see the docstring
            build()


def pytest_collection_modifyitems(config, items):
    """Modules with an acceptance run first, then modules with slow tests, then the rest: with parallel workers the
    longest start first and the short ones fill in after them, instead of one long test starting last on an otherwise
    idle machine. A module's tests stay together, in their order: pytest sets a module's fixtures up again each time
    it comes back to the module (a smoke run, a reference run)."""
    def cost(item):
        return 0 if item.get_closest_marker("acceptance") else 1 if item.get_closest_marker("slow") else 2

    module_cost: dict[str, int] = {}
    for item in items:
        module_cost[item.module.__name__] = min(module_cost.get(item.module.__name__, 2), cost(item))
    items.sort(key=lambda item: module_cost[item.module.__name__])  # stable: collection order within a tier


def tone(seconds: float = 1.0, freq: float = 220.0, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(int(freq))
    return (amp * (np.sin(2 * np.pi * freq * t) + 0.03 * rng.standard_normal(t.size))).astype(np.float32)


def tone_manifest(folder: Path, speakers: int, per: int) -> Path:
    """``m.jsonl`` of ``speakers`` x ``per`` distinct tone clips (0.6-1.0 s) with short texts, in ``folder``."""
    import json

    import soundfile as sf

    rows = []
    for spk in range(speakers):
        for i in range(per):
            name = f"s{spk}-{i}.wav"
            sf.write(folder / name, tone(0.6 + 0.1 * (i % 5), 150 + 30 * spk + 7 * i), SR)
            rows.append({"audio": name, "text": f"speaker {spk} says number {i}", "speaker": f"s{spk}"})
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "m.jsonl"


@pytest.fixture(scope="session")
def tokenizer_json() -> Path:
    from lora.model.offline import find_wheel_files

    return find_wheel_files().tokenizer


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer_json) -> Path:
    """A randomly initialised two-layer Moonshine with the real tokenizer, saved like a checkpoint."""
    import torch
    from transformers import MoonshineConfig, MoonshineForConditionalGeneration

    from lora.model.offline import build_processor

    torch.manual_seed(0)
    config = MoonshineConfig(vocab_size=32768, hidden_size=32, intermediate_size=64, encoder_num_hidden_layers=2,
                             decoder_num_hidden_layers=2, encoder_num_attention_heads=4, decoder_num_attention_heads=4,
                             encoder_num_key_value_heads=4, decoder_num_key_value_heads=4,
                             pad_token_id=0, bos_token_id=1, decoder_start_token_id=1, eos_token_id=2)
    out = tmp_path_factory.mktemp("tiny-moonshine")
    MoonshineForConditionalGeneration(config).save_pretrained(out)
    build_processor(tokenizer_json).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_v2_dir(tmp_path_factory) -> Path:
    """A randomly initialised four-layer Moonshine v2 (encoder 32 wide, decoder 48: ``decoder.proj`` is a real
    layer), written as ``import_model --random-init`` writes one (tokenizer from the wheels, the random mark)."""
    from lora.model.random_init import Shape, streaming_config, write_random_init

    return write_random_init(streaming_config(Shape(32, 48, 4, 4, 4, 64, 64)), tmp_path_factory.mktemp("tiny-v2"),
                             "test-4-layers")


@pytest.fixture()
def tiny(tiny_dir):
    from lora.model.load import load_model, load_processor

    return load_model(str(tiny_dir)), load_processor(str(tiny_dir))


@pytest.fixture(scope="session")
def offline_dir() -> Path:
    """The base-en checkpoint imported from the moonshine-cpp wheel: the one ``--model offline`` uses, imported into
    the cache on first use (under its lock: parallel workers import it once) and reused by every later session."""
    from lora.model.load import offline_model_dir

    return offline_model_dir(log=lambda m: None)


@pytest.fixture(scope="session")
def espeak_clips(tmp_path_factory):
    """A few real espeak-ng utterances: list of (text, audio)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    from lora.data.synth import VOICES, speak

    texts = ["The meeting has been moved to Thursday afternoon.", "Please call Stella from the store.",
             "Our team deployed the new build last night."]
    return [(t, speak(t, VOICES[i])) for i, t in enumerate(texts)]


@pytest.fixture(scope="session")
def beckett() -> np.ndarray:
    from lora.data.audio import decode_file
    from lora.model.offline import recorded_audio

    return decode_file(recorded_audio()[0])


@pytest.fixture(scope="session")
def moonshine_runtime() -> str:
    """The Moonshine runtime an export is verified in here (moonshine-cpp, or moonshine-voice where moonshine-cpp's
    AVX-512 build cannot run); skip a test that needs one where none runs."""
    from lora.errors import ModelError
    from lora.runtime.moonshine_cpp import verifying_runtime

    try:
        return verifying_runtime()[0]
    except ModelError as e:
        pytest.skip(str(e))


def no_vnni() -> bool:
    """An x86 CPU without VNNI, where onnxruntime's int8 MatMulInteger saturates (docs/errors.md)."""
    from lora.runtime.moonshine_cpp import cpu_flags

    flags = cpu_flags()
    return bool(flags) and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}
