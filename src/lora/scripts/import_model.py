"""python -m lora.scripts.import_model: write the offline Moonshine base-en as a transformers checkpoint.

Reads the int8 ONNX-Runtime weights shipped in the moonshine-cpp wheel and the tokenizer shipped
in useful-moonshine-onnx; nothing is downloaded. The folder loads with
AutoProcessor.from_pretrained(DIR) and MoonshineForConditionalGeneration.from_pretrained(DIR).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lora.errors import cli_main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora.scripts.import_model", description=__doc__.splitlines()[0])
    p.add_argument("--source", default="moonshine-cpp",
                   help="where the weights come from; valid: moonshine-cpp (default)")
    p.add_argument("--output", required=True, help="checkpoint folder to write")
    p.add_argument("--force", action="store_true", help="replace a non-empty --output")
    args = p.parse_args(argv)
    from lora.model.offline import import_model

    out = import_model(args.output, source=args.source, force=args.force)
    print(f"imported Moonshine base-en into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
