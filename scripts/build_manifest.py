#!/usr/bin/env python3
"""Same as `python -m lora.scripts.build_manifest` (kept at this path because users type it)."""

import sys

from lora.errors import cli_main
from lora.scripts.build_manifest import main

if __name__ == "__main__":
    sys.exit(cli_main(main))
