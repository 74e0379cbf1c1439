"""python -m lora.scripts.import_model: write an offline Moonshine checkpoint (base-en, or v2 with random weights).

Default: reads the int8 ONNX-Runtime weights shipped in the moonshine-cpp wheel and the tokenizer shipped in
useful-moonshine-onnx; nothing is downloaded. The folder loads with AutoProcessor.from_pretrained(DIR) and
MoonshineForConditionalGeneration.from_pretrained(DIR).

``--random-init streaming-tiny|streaming-small|streaming-medium``: Moonshine v2's architecture with seeded random
weights and the same offline tokenizer (no registry ships v2 weights), marked so that every run, verify_run and
report on it says "random weights: mechanics only, no quality claim" (lora.model.random_init).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lora.errors import cli_main
from lora.model.random_init import SHAPES  # plain data: --help still imports no torch


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora.scripts.import_model", description=__doc__.splitlines()[0])
    p.add_argument("--source", default="moonshine-cpp",
                   help="where the weights come from; valid: moonshine-cpp (default)")
    p.add_argument("--random-init", metavar="SHAPE", choices=list(SHAPES),
                   help=f"instead: Moonshine v2 of this shape with random weights ({', '.join(SHAPES)}); "
                        "mechanics only, no quality claim")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (--random-init)")
    p.add_argument("--output", required=True, help="checkpoint folder to write")
    p.add_argument("--force", action="store_true", help="replace a non-empty --output")
    args = p.parse_args(argv)
    from lora.model.load import progress_bars_only_on_a_terminal

    progress_bars_only_on_a_terminal()
    if args.random_init:
        from lora.model.random_init import RANDOM_WEIGHTS, random_init

        out = random_init(args.random_init, args.output, seed=args.seed, force=args.force)
        print(f"wrote Moonshine v2 {args.random_init} into {out}: {RANDOM_WEIGHTS}")
        return 0
    from lora.model.offline import import_model

    out = import_model(args.output, source=args.source, force=args.force)
    print(f"imported Moonshine base-en into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
