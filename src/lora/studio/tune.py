"""Tuning from the studio: the training job on the workspace's recordings, as its own process, the same command a
user can type (shown on the page), with its progress read from its log.

The job holds its run folder's lock (:mod:`lora.storage.lock`), so a second start, from another tab or a terminal,
is refused by the job itself. Stop sends SIGTERM: the job finishes its step and saves a checkpoint, and the next
start resumes from it (``--resume``). A job left running when the studio stops is stopped with it.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

RUN, LOG, TERMS = "run", "run.log", "terms.txt"


class Tuning:
    def __init__(self, workspace: Path, model: str = "offline", extra: tuple[str, ...] = ()):
        self.workspace, self.model, self.extra = Path(workspace), model, tuple(extra)
        self.proc: subprocess.Popen | None = None
        atexit.register(self.close)

    @property
    def run(self) -> Path:
        return self.workspace / RUN

    def command(self) -> list[str]:
        """The job on the recordings: the personal preset, the held-out recordings as its test set."""
        rec = self.workspace / "recordings"
        cmd = ["python", "-m", "lora.runners.real_small", "--preset", "personal", "--model", self.model,
               "--source", f"folder:{rec / 'train'}", "--test-source", f"folder:{rec / 'test'}",
               "--output-dir", str(self.run)]
        if (self.workspace / TERMS).is_file():
            cmd += ["--terms", str(self.workspace / TERMS)]
        if (self.run / "checkpoints").is_dir() and not (self.run / "real_metrics.json").is_file():
            cmd.append("--resume")  # a stopped run goes on from its last checkpoint
        elif (self.run / "real_metrics.json").is_file():
            cmd.append("--force")  # tuning again replaces the finished run
        return cmd + list(self.extra)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> str:
        if self.running():
            return "Tuning is already running."
        cmd = self.command()
        self.workspace.mkdir(parents=True, exist_ok=True)
        with open(self.workspace / LOG, "w") as log:  # the job's own lines; its artifacts go to run/
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen([sys.executable, *cmd[1:]], stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        return f"Started: `{shlex.join(cmd)}`"

    def stop(self) -> str:
        if not self.running():
            return "Nothing is running."
        self.proc.send_signal(signal.SIGTERM)
        return "Stopping: the job finishes its step and saves a checkpoint; Start resumes from it."

    def status(self) -> str:
        """The job's state in a few lines of Markdown: running / finished / failed / stopped, the last step and loss,
        its summary or its error."""
        path = self.workspace / LOG
        if not path.is_file():
            return "Not started."
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        steps = [line for line in lines if line.startswith("train: step ")]
        errors = [line for line in lines if line.startswith("error:")]
        summary = [line for line in lines if line.startswith(("baseline WER", "cost:", "terms:", "warning:"))]
        code = self.proc.poll() if self.proc is not None else None
        state = ("running" if self.running() else "finished" if code == 0 and (self.run / "real_metrics.json").is_file()
                 else "stopped (Start resumes)" if code is not None and not errors and code != 2 else
                 "failed" if code is not None else "finished earlier")
        out = [f"**{state}**"]
        if steps:
            out.append(steps[-1])
        if errors:
            out.append(errors[-1])
        if not self.running() and summary:
            out += list(dict.fromkeys(summary))[-4:]  # the job logs a warning and repeats it in its summary
        return "\n\n".join(out)

    def close(self) -> None:
        """Stop a job still running (the studio is stopping)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
