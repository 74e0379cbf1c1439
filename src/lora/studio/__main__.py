"""python -m lora.studio: the recording studio in the browser, on 127.0.0.1 unless --host says otherwise."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lora.errors import LoraError, cli_main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora.studio", description=__doc__.splitlines()[0])
    p.add_argument("--workspace", required=True,
                   help="the studio's folder: its plan and recordings (recordings/train, recordings/test) live here, "
                        "and nothing outside it is read or written")
    p.add_argument("--port", type=int, default=7860, help="default 7860")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 lets any machine on "
                        "the network record into your workspace)")
    p.add_argument("--model", default="offline",
                   help="the model to tune on the recordings (default offline: the imported base-en)")
    p.add_argument("--job-flag", action="append", default=[], metavar="FLAG",
                   help="a flag added to the training job's command (repeatable), e.g. --job-flag=--max-steps=40")
    args = p.parse_args(argv)
    workspace = Path(args.workspace).expanduser().resolve()
    if workspace.exists() and not workspace.is_dir():
        raise LoraError(f"--workspace {workspace} is a file; give a folder")
    if not 0 < args.port < 65536:
        raise LoraError(f"--port {args.port}: give a port between 1 and 65535")
    workspace.mkdir(parents=True, exist_ok=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the studio and write "
              "into the workspace", file=sys.stderr)
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline, and nothing about the user leaves
    import signal

    from lora.studio.app import SHORTCUTS, build
    from lora.studio.tune import Tuning

    tuning = Tuning(workspace, args.model, tuple(args.job_flag))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so a running job is stopped with the studio (atexit)
    print(f"studio: workspace {workspace}; open http://{args.host}:{args.port}", flush=True)
    build(workspace, tuning).launch(server_name=args.host, server_port=args.port, share=False, show_error=True,
                                    js=SHORTCUTS, allowed_paths=[str(workspace)])  # the Review page plays its clips
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
