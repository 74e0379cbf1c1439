"""python -m lora.scripts.build_manifest: write a held-out JSONL manifest of real audio from any source.

The audio is decoded, screened (silent, empty, too long -> rejected and counted), split by
speaker with the same seed and ratios as training, and the chosen part is written as 16 kHz WAV
files beside the manifest, with per-row duration and RMS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lora.errors import cli_main


def main(argv: Sequence[str] | None = None) -> int:
    from lora.runners.real_small import _ratios

    p = argparse.ArgumentParser(prog="python -m lora.scripts.build_manifest", description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, help="librispeech | librispeech-dir:PATH | manifest:PATH | synth:PATH | synth:default")
    p.add_argument("--output", required=True, help="manifest path (.jsonl); WAVs go to <stem>_audio/ beside it")
    p.add_argument("--part", default="test", choices=["train", "validation", "test", "all"], help="which split to write (default test)")
    p.add_argument("--ls-config", default="clean", help="LibriSpeech config (default clean)")
    p.add_argument("--ls-split", default="train.100", help="LibriSpeech split (default train.100)")
    p.add_argument("--samples", type=int, default=300, help="utterances drawn with the seed; 0 = all of a local source (default 300)")
    p.add_argument("--max-seconds", type=float, default=20.0, help="drop longer clips (default 20)")
    p.add_argument("--split-ratios", type=_ratios, default=(0.8, 0.1, 0.1), help="train,validation,test (default 0.8,0.1,0.1)")
    p.add_argument("--text-mode", default="auto", choices=["auto", "as-is", "lower", "sentence"], help="default auto")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    args = p.parse_args(argv)
    from lora.config import RunConfig
    from lora.data.manifest import write_manifest
    from lora.pipeline import prepare_data

    cfg = RunConfig(source=args.source, ls_config=args.ls_config, ls_split=args.ls_split, samples=args.samples,
                    max_seconds=args.max_seconds, split_ratios=args.split_ratios, text_mode=args.text_mode,
                    seed=args.seed)
    _, screening, split, _ = prepare_data(cfg)
    utts = [u for us in split.parts.values() for u in us] if args.part == "all" else split.parts[args.part]
    rows = write_manifest(args.output, utts)
    hours = sum(r["duration"] for r in rows) / 3600
    print(f"manifest: {len(rows)} rows, {len({r['speaker'] for r in rows})} speakers, {hours:.3f} h, "
          f"{screening.n_rejected} rejected -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
