"""python -m lora.scripts.export_onnx: the tuned model as the ONNX folder Moonshine's runtimes load, verified there.

Merges the adapter into the base weights and writes ``encoder_model``, ``decoder_model_merged``
(``.ort`` or ``.onnx``, int8 or float), ``tokenizer.bin`` and ``export.json``. Before the folder
appears, the export is checked against PyTorch (greedy transcripts, first-step logits) and run in
moonshine-cpp beside the shipped base-en: WER and real-time factor on held-out clips. An export that
fails a check is not published (exit 1).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from lora.errors import LoraError, cli_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lora.scripts.export_onnx", description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a finished run folder (outputs/<run>): its base model, adapter, processor and "
                                 "held-out manifest")
    p.add_argument("--model", help="instead of --run: base model (hub id, checkpoint folder, or 'offline')")
    p.add_argument("--adapter-dir", help="with --model: the LoRA adapter to merge (omit to export the base model)")
    p.add_argument("--processor-dir", help="with --model: the processor (default: the model's own)")
    p.add_argument("--manifest",
                   help="held-out JSONL manifest to verify on (default with --run: its heldout_manifest.jsonl)")
    p.add_argument("--output", required=True,
                   help="the runtime folder to write (default layout of moonshine-cpp's models/)")
    p.add_argument("--quantize", choices=["int8", "none"], default="int8",
                   help="int8: dynamic int8 weights like the shipped files (default); none: float32")
    p.add_argument("--format", choices=["ort", "onnx"], default="ort",
                   help="ort: ONNX Runtime format like the shipped files (default); onnx: plain ONNX")
    p.add_argument("--clips", type=int, default=96,
                   help="verify on the first N clips of the manifest (0 = all; default 96)")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --output")
    p.add_argument("--accept-cost", action="append", default=[], choices=["quiet"], metavar="quiet",
                   help="publish although the export writes words on clips without speech where shipped base-en "
                        "writes none: the check passes as ACCEPTED and export.json records it")
    p.add_argument("--allow-random", action="store_true",
                   help="export a model with random weights (import_model --random-init) to check the mechanics; "
                        "export.json and the log say so")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.run) == bool(args.model):
        raise LoraError("pass either --run outputs/<run> or --model M "
                        "(with --adapter-dir, --processor-dir, --manifest)")
    if args.run and (args.adapter_dir or args.processor_dir):
        raise LoraError("--adapter-dir/--processor-dir go with --model; --run takes them from the run folder")
    if args.clips < 0:
        raise LoraError(f"--clips must be >= 0, got {args.clips}")
    from contextlib import nullcontext

    from lora.export.job import ExportSource, VerificationFailed, export, source_from_run
    from lora.model.load import progress_bars_only_on_a_terminal
    from lora.storage.lock import FolderLock

    progress_bars_only_on_a_terminal()

    if args.run and not Path(args.run).is_dir():
        raise LoraError(f"--run {args.run}: no such folder")
    command = "python -m lora.scripts.export_onnx " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    try:  # the run folder is locked while the export reads it (and usually writes runtime/ into it)
        with FolderLock(args.run, "--run") if args.run else nullcontext():
            if args.run:
                src = source_from_run(Path(args.run))
                if args.manifest:
                    src.manifest, src.baseline_predictions = Path(args.manifest), {}
            else:
                src = ExportSource(model=args.model, adapter_dir=Path(args.adapter_dir) if args.adapter_dir else None,
                                   processor_dir=Path(args.processor_dir) if args.processor_dir else None,
                                   manifest=Path(args.manifest) if args.manifest else None)
            info = export(src, Path(args.output), quantize=args.quantize, fmt=args.format, clips=args.clips,
                          force=args.force, command=command, accept=args.accept_cost, allow_random=args.allow_random)
    except VerificationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    w = info["verification"]["wer"]
    shipped = (f"shipped base-en {w['runtime_shipped_base_en']['wer']:.2%}, " if "runtime_shipped_base_en" in w
               else "")  # no package ships Moonshine v2 to compare with
    print(f"exported {args.quantize}/.{args.format} to {args.output}: {info['runtime']['name']} WER "
          f"{w['runtime_export']['wer']:.2%} ({shipped}PyTorch {w['pytorch_merged']['wer']:.2%}) "
          f"on {info['verification']['clips']} clips")
    if info.get("random_weights"):
        print(f"warning: {info['weights']}")
    return 0  # a failed check published nothing (VerificationFailed above)


if __name__ == "__main__":
    sys.exit(cli_main(main))
