"""python -m lora.scripts.build_manifest: write a held-out JSONL manifest of real audio from any source.

The audio is decoded, screened (silent, empty, too long -> rejected and counted), split with
the same seed, ratios and --split-by as training, and the chosen part is written as 16 kHz WAV
files beside the manifest, with per-row duration and RMS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lora.errors import cli_main


def main(argv: Sequence[str] | None = None) -> int:
    from lora.runners.real_small import add_data_arguments, config_from_args, show_defaults

    p = argparse.ArgumentParser(prog="python -m lora.scripts.build_manifest", description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True,
                   help="librispeech[:SPLIT] | librispeech-dir:PATH | manifest:PATH | folder:PATH | "
                        "audiofolder:PATH | synth:PATH | synth:default")
    p.add_argument("--output", required=True, help="manifest path (.jsonl); WAVs go to <stem>_audio/ beside it")
    p.add_argument("--part", default="test", choices=["train", "validation", "test", "all"],
                   help="which split to write (default test)")
    add_data_arguments(p)
    p.add_argument("--seed", type=int, help="seed for sampling and the split")
    show_defaults(p)
    p.set_defaults(preset="none")
    args = p.parse_args(argv)
    from lora.data.manifest import write_manifest
    from lora.data.run_data import prepare_data

    cfg = config_from_args(args)  # same defaults and checks as the training run, so the split matches
    data = prepare_data(cfg)
    split, screening = data.split, data.screening
    utts = [u for us in split.parts.values() for u in us] if args.part == "all" else split.parts[args.part]
    rows = write_manifest(args.output, utts)
    hours = sum(r["duration"] for r in rows) / 3600
    print(f"manifest: {len(rows)} rows, {len({r['speaker'] for r in rows})} speakers, {hours:.3f} h, "
          f"{screening.n_rejected} rejected -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
