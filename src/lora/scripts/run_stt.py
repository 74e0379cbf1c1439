"""python -m lora.scripts.run_stt: reload base model + LoRA adapter in a fresh process and transcribe a manifest.

Writes ``samples`` (id, reference, prediction) and ``wer`` (normalized; raw and CER beside it).
``--compare FILE`` exits non-zero unless every prediction equals the one in FILE (a previous
artifact test, or ``predictions_tuned.jsonl``). ``--merge DIR`` also exports a merged checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lora.errors import LoraError, cli_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lora.scripts.run_stt", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="base model: hub id, checkpoint folder, or 'offline'")
    p.add_argument("--adapter-dir", help="outputs/<run>/lora_adapter (omit to transcribe with the base model)")
    p.add_argument("--processor-dir", help="outputs/<run>/processor (default: the model's own processor)")
    p.add_argument("--manifest", required=True,
                   help="JSONL manifest to transcribe (e.g. outputs/<run>/heldout_manifest.jsonl)")
    p.add_argument("--output", required=True, help="where to write artifact_test.json")
    p.add_argument("--compare", help="previous artifact_test.json or predictions_*.jsonl that this run must reproduce")
    p.add_argument("--merge", metavar="DIR", help="also save the base model with the adapter merged in, to DIR")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    p.add_argument("--batch-size", type=int, default=16,
                   help="transcription batch size; keep the run's --eval-batch-size to reproduce it exactly "
                        "(default 16)")
    p.add_argument("--num-beams", type=int, default=1, help="1 = greedy (default)")
    return p


def load_reference(path: Path) -> dict[str, str]:
    from lora.storage.artifacts import read_json, read_jsonl

    rows = read_jsonl(path) if path.suffix == ".jsonl" else read_json(path).get("samples", [])
    if not rows:
        raise LoraError(f"--compare {path} holds no samples")
    return {r["id"]: r["prediction"] for r in rows}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lora.data.sources import read_manifest
    from lora.evaluation.evaluate import EvalContext, transcribe, wer_metrics
    from lora.model.adapter import load_adapter
    from lora.model.attention import use_aligned_attention
    from lora.model.device import device_name, resolve_device
    from lora.model.load import load_model, load_processor, progress_bars_only_on_a_terminal, resolve_model
    from lora.model.precision import autocast
    from lora.model.seed import seed_everything
    from lora.storage.atomic import atomic_dir, write_json

    progress_bars_only_on_a_terminal()
    seed_everything(0)
    utts = list(read_manifest(args.manifest))
    if not utts:
        raise LoraError(f"--manifest {args.manifest} has no rows")
    model_path = resolve_model(args.model)
    processor = load_processor(args.processor_dir or model_path)
    model = load_model(model_path)
    if args.adapter_dir:
        model = load_adapter(model, args.adapter_dir)
    device = resolve_device(args.device)
    model.to(device)
    use_aligned_attention(model, device)  # as the run was evaluated
    ctx = EvalContext(processor, device, args.batch_size, args.num_beams, autocast(device))
    hyps = transcribe(model, ctx, [u.audio for u in utts])
    metrics = wer_metrics([u.text for u in utts], hyps)
    result = {
        "model": args.model, "adapter_dir": args.adapter_dir, "manifest": args.manifest,
        "device": device_name(device), "batch_size": args.batch_size, "num_beams": args.num_beams,
        "wer": metrics["wer"], "wer_raw": metrics["wer_raw"], "cer": metrics["cer"],
        "samples": [{"id": u.id, "reference": u.text, "prediction": h} for u, h in zip(utts, hyps, strict=True)],
    }
    write_json(args.output, result)
    print(f"artifact test: {len(utts)} utterances, WER {metrics['wer']:.2%} (raw {metrics['wer_raw']:.2%}) -> "
          f"{args.output}")
    if args.merge:
        if not args.adapter_dir:
            raise LoraError("--merge needs --adapter-dir")
        with atomic_dir(args.merge, force=True) as tmp:
            model.merge_and_unload().save_pretrained(tmp)
            processor.save_pretrained(tmp)
        print(f"merged checkpoint: {args.merge}")
    if args.compare:
        ref = load_reference(Path(args.compare))
        ours = {s["id"]: s["prediction"] for s in result["samples"]}
        diff = [i for i in ours if ref.get(i) != ours[i]] + [i for i in ref if i not in ours]
        if diff:
            print(f"error: {len(diff)} of {len(ref)} predictions differ from {args.compare} (first: {diff[0]})",
                  file=sys.stderr)
            return 1
        print(f"reproduced: all {len(ref)} predictions equal {args.compare}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
