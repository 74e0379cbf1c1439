"""The export of a Moonshine v2 (streaming) model to the folder ``moonshine-voice`` loads, verified before it is
published, as :mod:`lora.export.job` does for the first generation.

Steps (each timed in ``export.json``):

1. the merged model (``peft``'s ``merge_and_unload``, by :func:`lora.export.job.load_merged`) saved as a checkpoint;
2. its five float graphs (``frontend``, ``encoder``, ``adapter``, ``cross_kv``, ``decoder_kv``) and
   ``streaming_config.json`` written by Moonshine's own exporter, ``moonshine_voice.lora.export`` (in the
   moonshine-voice wheel): the graph split, the inclusive sliding windows and the state the runtime carries are
   Moonshine's, so this module does not hand-roll a second copy of them;
3. **parity**: greedy transcripts of the float graphs in onnxruntime (:class:`lora.runtime.ort_streaming.OrtStreaming`)
   against PyTorch on the held-out clips, the largest encoder difference, and the frontend fed in chunks of
   :data:`CHUNK_SAMPLES` against the whole clip (the runtime streams audio in chunks);
4. int8 (``--quantize int8``: the same dynamic quantization as first-generation exports, on every graph) and
   ``.ort`` files, ``tokenizer.bin`` for every id the model can write;
5. **in the runtime**: moonshine-voice transcribes the clips from this folder (and from the float graphs when it
   is int8), its token budget raised to PyTorch's (:func:`runtime_options`), and its transcripts of the float
   graphs must equal the graphs' own on the audio it reads: moonshine-voice 0.1.5 reads whole 80 ms chunks and
   never emits a clip's last 320 ms of encoder frames (:mod:`lora.runtime.ort_streaming`), so on the whole clip
   it can differ from PyTorch by design; both agreements are recorded, and the WERs side by side;
6. every check must pass, else nothing is published (:class:`lora.export.job.VerificationFailed`); then
   ``export.json`` and one rename into place.

With a run, the clips without speech are transcribed in the runtime too, and no words may appear where the run's
PyTorch base model wrote none (``--accept-cost quiet`` publishes anyway, recorded). Not done for v2 (first-generation
exports do them): the comparison with a shipped model in the runtime (no package ships v2 weights) and the run's
canaries in the runtime.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import warnings
from pathlib import Path

from lora.errors import ModelError

GRAPHS = ("frontend", "encoder", "adapter", "cross_kv", "decoder_kv")
CHUNK_SAMPLES = 1280  # 16 frames of 80 samples: the frontend carries 4 frames of state, so chunks of 4k frames
FRONTEND_TOLERANCE = 1e-4
# moonshine-voice's ModelArch for each v2 size, by encoder width (lora.model.random_init.SHAPES: the cards' widths).
# The runtime reads every dimension from streaming_config.json; the architecture names the family (a 4-layer,
# 32-wide stand-in runs as TINY_STREAMING).
ARCHITECTURES = {320: "tiny_streaming", 620: "small_streaming", 768: "medium_streaming"}


def streaming_architecture(config) -> str:
    return ARCHITECTURES.get(config.encoder_config.hidden_size, "tiny_streaming")


def runtime_options(clips) -> dict[str, str]:
    """moonshine-voice stops decoding at ``max_tokens_per_second`` x the clip's length (6.5 by default); PyTorch here
    allows ``ceil(6.5 s) + 8`` tokens (:func:`lora.evaluation.evaluate.max_new_tokens`), so on short clips the runtime
    would cut a transcript PyTorch finishes. The verification runs it with the highest rate any clip needs, so the
    export, not the budget, is compared; an app sets the same option (docs/v2.md)."""
    from lora.evaluation.evaluate import max_new_tokens

    rate = max(max_new_tokens(u.duration) / u.duration for u in clips)
    return {"max_tokens_per_second": f"{math.ceil(rate * 10) / 10:g}"}


def write_float_graphs(model, folder: Path, work: Path, log=print) -> None:
    """The five float graphs and streaming_config.json, by Moonshine's exporter, from the merged model saved in
    ``work``. Its progress lines go to the log only when it fails."""
    from moonshine_voice.lora import export as moonshine_export

    checkpoint = work / "merged"
    model.save_pretrained(checkpoint)
    said = io.StringIO()
    try:  # torch.onnx's warnings on the exporter's dynamic axes are about its code, not the user's model
        with contextlib.redirect_stdout(said), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            moonshine_export.export_checkpoint(checkpoint, folder)
    except Exception as exc:
        log(said.getvalue()[-2000:])
        raise ModelError(f"moonshine_voice's exporter failed on this model: {str(exc).splitlines()[0][:300]}") from exc
    missing = [g for g in GRAPHS if not (folder / f"{g}.onnx").is_file()]
    if missing or not (folder / "streaming_config.json").is_file():
        raise ModelError(f"moonshine_voice's exporter wrote no {', '.join(missing) or 'streaming_config.json'}")


def parity(model, processor, clips, float_dir: Path) -> tuple[dict, list[str]]:
    """Float graphs vs PyTorch on ``clips``: identical greedy transcripts, the largest encoder difference, and the
    chunked frontend against the whole clip."""
    import numpy as np
    import torch

    from lora.evaluation.evaluate import EvalContext, max_new_tokens, transcribe
    from lora.export.job import PARITY_MIN
    from lora.model.encoder import encode
    from lora.runtime.ort_streaming import OrtStreaming

    audios = [u.audio for u in clips]
    torch_texts = transcribe(model, EvalContext(processor, "cpu"), audios)
    graphs = OrtStreaming(float_dir)
    ort_texts, as_read, encoder_diff, frontend_diff = [], [], 0.0, 0.0
    with torch.no_grad():
        for a in audios:
            encoded, budget = graphs.encode(a), max_new_tokens(a.size / 16000)
            ort_texts.append(processor.tokenizer.decode(graphs.greedy(a, budget, encoded),
                                                        skip_special_tokens=True).strip())
            as_read.append(processor.tokenizer.decode(graphs.as_runtime_reads(a, budget),
                                                      skip_special_tokens=True).strip())
            ours = encode(model, processor, [a], "cpu").last_hidden_state.numpy()
            encoder_diff = max(encoder_diff, float(np.abs(encoded - ours).max()) if encoded.shape == ours.shape
                               else math.inf)
            whole, chunked = graphs.features(a), graphs.features(a, CHUNK_SAMPLES)
            frontend_diff = max(frontend_diff, float(np.abs(chunked - whole).max()) if chunked.shape == whole.shape
                                else math.inf)
    same = sum(t == o for t, o in zip(torch_texts, ort_texts, strict=True))
    differ = [{"id": u.id, "pytorch": t, "onnx": o}
              for u, t, o in zip(clips, torch_texts, ort_texts, strict=True) if t != o]
    return {"clips": len(clips), "identical": same, "fraction": same / len(clips), "min_fraction": PARITY_MIN,
            "max_encoder_diff": encoder_diff, "max_chunked_frontend_diff": frontend_diff,
            "chunk_samples": CHUNK_SAMPLES, "differing": differ[:5], "as_runtime_reads": as_read}, torch_texts


def package(float_dir: Path, graphs: Path, tmp: Path, quantize: str, processor) -> None:
    """The runtime's files in ``tmp``: five ``.ort`` graphs (int8 or float), streaming_config.json, tokenizer.bin."""
    from lora.export.runtime_files import quantize_int8, to_ort, tokenizer_bin

    graphs.mkdir()
    for g in GRAPHS:
        src = float_dir / f"{g}.onnx"
        to_ort(quantize_int8(src, graphs / f"{g}.onnx") if quantize == "int8" else src, tmp / f"{g}.ort")
    shutil.copy(float_dir / "streaming_config.json", tmp / "streaming_config.json")
    # every id the decoder can write (the tokenizer's 32,000 pieces and its 768 special tokens): the runtime indexes
    # tokenizer.bin by id, and an id past its end stops it (measured: 'vector::_M_range_check')
    (tmp / "tokenizer.bin").write_bytes(tokenizer_bin(processor.tokenizer, len(processor.tokenizer)))


def runtime_quiet(src, work: Path, folder: Path, architecture: str, options: dict, log) -> dict | None:
    """The run's clips without speech in moonshine-voice from ``folder``, against what the run's PyTorch base model
    wrote for them (None without a run): the shape :func:`lora.export.job.cost_checks` judges."""
    from lora.config import MAX_REGRESSION
    from lora.data import audio as A
    from lora.data.general import quiet_clips
    from lora.evaluation.cost import quiet_line, quiet_summary
    from lora.runtime.moonshine_cpp import runtime_transcribe
    from lora.storage import artifacts as R

    if src.run is None:
        return None
    m = R.read_json(src.run / R.METRICS)
    base = {n: c["baseline"] for n, c in m["cost"]["quiet"]["clips"].items()}
    wavs = {}
    for name, audio in quiet_clips().items():
        if name in base:
            wavs[name] = work / "quiet" / f"{name}.wav"
            A.write_wav(wavs[name], audio)
    texts = runtime_transcribe(folder, "ort", architecture, list(wavs.values()), runtime="moonshine-voice",
                               options=options).texts
    quiet = quiet_summary({n: base[n] for n in wavs}, dict(zip(wavs, texts, strict=True)))
    log(f"runtime cost: {quiet_line(quiet)} (before: the run's PyTorch base model; no package ships v2 for the "
        "runtime)")
    return {"max_regression": m["config"].get("max_regression", MAX_REGRESSION),
            "quiet_ratio": m["config"].get("quiet_ratio", 0.0), "quiet": quiet, "canaries": {},
            "quiet_baseline": "the run's PyTorch base model (cost.quiet in real_metrics.json)"}


def export(src, output: Path, model, processor, model_path, utts, subset, quantize: str, fmt: str, command: str,
           log, clock, accept=()) -> dict:
    """Steps 2-6 of the module's docstring for the merged ``model``; returns export.json's content."""
    from lora.evaluation.evaluate import wer_metrics
    from lora.export.job import EXPORT_JSON, _require_checks, cost_checks, export_steps
    from lora.model.random_init import random_weights, weights_line
    from lora.runtime.moonshine_cpp import runtime_transcribe, runtime_unavailable
    from lora.storage.atomic import write_json

    runtime = "moonshine-voice"
    if fmt != "ort":
        raise ModelError("moonshine-voice loads .ort graphs only: export Moonshine v2 with --format ort (the default)")
    why = runtime_unavailable(runtime)
    if why:
        raise ModelError(f"nothing exported: a Moonshine v2 export is verified in moonshine-voice, and {why}")
    mark = random_weights(model_path)
    if mark:
        log(f"warning: {weights_line(mark)}")
    architecture = streaming_architecture(model.config)
    options = runtime_options(subset)
    log(f"export: {src.model}{' + adapter ' + str(src.adapter_dir) + ' (merged)' if src.adapter_dir else ''}, "
        f"Moonshine v2 '{architecture}'; verifying in {runtime} on {len(subset)} of {len(utts)} clips of "
        f"{src.manifest}")
    steps = export_steps(output, subset, clock, log, lambda folder, work: write_float_graphs(model, folder, work, log),
                         lambda folder: parity(model, processor, subset, folder))
    with steps as (work, float_dir, par, torch_texts, wavs, tmp):
        with clock("package"):
            package(float_dir, work / "final", tmp, quantize, processor)
        with clock("runtime"):
            runs = {"export": runtime_transcribe(tmp, "ort", architecture, wavs, runtime=runtime, options=options)}
            if quantize == "int8":  # the float graphs in the runtime too: what int8 costs there
                float_ort = work / "float_ort"
                float_ort.mkdir()
                package(float_dir, work / "float_graphs", float_ort, "none", processor)
                runs["export_float"] = runtime_transcribe(float_ort, "ort", architecture, wavs, runtime=runtime,
                                                          options=options)
        refs = [u.text for u in subset]
        wer = {"pytorch_merged": wer_metrics(refs, torch_texts)} | {
            f"runtime_{k}": wer_metrics(refs, r.texts) for k, r in runs.items()}
        log("runtime: " + "; ".join(f"{k} WER {wer[f'runtime_{k}']['wer']:.2%}" for k in runs))
        lookahead = json.loads((float_dir / "streaming_config.json").read_text())["total_lookahead"]
        cost = runtime_quiet(src, work, tmp, architecture, options, log)
        checks = _checks(par, wer, runs, torch_texts, quantize, options, lookahead) + cost_checks(cost, accept)
        _require_checks(checks, output, log)
        info = _info(src, command, mark, model_path, architecture, quantize, fmt, tmp, utts, subset, par, wer,
                     runs, checks, torch_texts, options, lookahead, clock)
        info["cost"], info["accepted_costs"] = cost, list(accept)
        write_json(tmp / EXPORT_JSON, info)
    return info


def _info(src, command, mark, model_path, architecture, quantize, fmt, tmp: Path, utts, subset, par, wer, runs,
          checks, torch_texts, options, lookahead, clock) -> dict:
    """export.json: what was exported from what, its files, and every verification."""
    from lora.export.job import _rtf, _version, adapter_hash
    from lora.model.random_init import weights_line
    from lora.runtime.ort_streaming import RUNTIME_CHUNK
    from lora.storage import artifacts as R
    from lora.storage.atomic import file_sha256

    runtime = "moonshine-voice"
    return {
        "status": "complete",
        "command": command,
        "family": "moonshine_streaming",
        "weights": weights_line(mark),
        "random_weights": mark,
        "source": {"run": str(src.run) if src.run else None, "base_model": src.model,
                   "model_path": model_path, "adapter_dir": str(src.adapter_dir) if src.adapter_dir else None,
                   "adapter_sha256": adapter_hash(src.adapter_dir) if src.adapter_dir else None,
                   "processor_dir": str(src.processor_dir) if src.processor_dir else None},
        "architecture": architecture,
        "quantization": quantize,
        "format": fmt,
        "exporter": f"moonshine_voice.lora.export (moonshine-voice {_version(runtime)})",
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.iterdir())},
        "verification": {
            "manifest": str(src.manifest), "clips": len(subset), "clips_in_manifest": len(utts),
            "audio_seconds": sum(u.duration for u in subset), "parity": par, "wer": wer,
            "runtime": {k: {"rtf": _rtf(r.seconds, subset), "seconds": sum(r.seconds),
                            "load_seconds": r.load_seconds} for k, r in runs.items()},
            "checks": checks,
        },
        "predictions": [{"id": u.id, "audio_seconds": round(u.duration, 4), "reference": u.text,
                         "pytorch": t, **{f"runtime_{k}": r.texts[i] for k, r in runs.items()}}
                        for i, (u, t) in enumerate(zip(subset, torch_texts, strict=True))],
        "runtime": {"name": runtime, "version": _version(runtime), "options": options,
                    "reads": {"whole_chunks_of_samples": RUNTIME_CHUNK,
                              "final_encoder_frames_not_emitted": lookahead}},
        "seconds": clock.report(),
        "git_commit": R.git_commit(),
    }


def _checks(par: dict, wer: dict, runs: dict, torch_texts: list[str], quantize: str, options: dict,
            lookahead: int) -> list[dict]:
    from lora.export.job import INT8_MAX_WER_GAP, PARITY_MIN
    from lora.runtime.ort_streaming import RUNTIME_CHUNK

    float_run = runs.get("export_float", runs["export"])
    same = sum(a == b for a, b in zip(float_run.texts, par["as_runtime_reads"], strict=True))
    whole = sum(a == b for a, b in zip(float_run.texts, torch_texts, strict=True))
    out = [{"check": "float graphs reproduce PyTorch", "passed": par["fraction"] >= PARITY_MIN,
            "detail": f"{par['identical']}/{par['clips']} greedy transcripts identical (need {PARITY_MIN:.0%}); max "
                      f"encoder difference {par['max_encoder_diff']:.2e}"},
           {"check": "the frontend fed in chunks equals the whole clip",
            "passed": par["max_chunked_frontend_diff"] <= FRONTEND_TOLERANCE,
            "detail": f"max difference {par['max_chunked_frontend_diff']:.2e} in chunks of {CHUNK_SAMPLES} samples "
                      f"(tolerance {FRONTEND_TOLERANCE:g})"},
           {"check": "moonshine-voice writes what the float graphs write on the audio it reads",
            "passed": same / len(torch_texts) >= PARITY_MIN,
            "detail": f"{same}/{len(torch_texts)} identical (need {PARITY_MIN:.0%}) to the graphs on whole "
                      f"{RUNTIME_CHUNK}-sample chunks without the last {lookahead} encoder frames, as it reads a clip; "
                      f"{whole}/{len(torch_texts)} identical to PyTorch on the whole clip; runtime options {options}"}]
    if quantize == "int8":
        gap = wer["runtime_export"]["wer"] - wer["runtime_export_float"]["wer"]
        out.append({"check": "int8 at most 1 WER point worse than the float export",
                    "passed": gap <= INT8_MAX_WER_GAP,
                    "detail": f"{wer['runtime_export_float']['wer']:.2%} float -> {wer['runtime_export']['wer']:.2%} "
                              f"({gap * 100:+.2f} points)"})
    return out
