"""Every row of docs/errors.md, executed: exit code 2 and the documented one-line message."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import tone

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (?P<what>[^|]+?) \| `(?P<cmd>[^`]+)` \| `(?P<msg>[^`]+)` \|$")


# A row whose command names any of these gets past the argument checks: it imports torch and transformers, often
# loads a model or reads data, and takes seconds (the slow tier). The others are refused in a fraction of a second.
LOADS = ("--model", "--preset", "--source", "--ls-", "--run", "--adapter-dir", "--manifest", "run_stt", "import_model",
         "$FULL", "$RO")


def _rows():
    rows = [m.groupdict() for line in (ROOT / "docs" / "errors.md").read_text().splitlines() if (m := ROW.match(line))]
    assert len(rows) >= 30
    return [pytest.param(r, id=r["what"], marks=[pytest.mark.slow] if any(w in r["cmd"] for w in LOADS) else [])
            for r in rows]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, tiny_dir, tiny_v2_dir):
    t = tmp_path_factory.mktemp("bad")
    sf.write(t / "ok.wav", tone(1.0), 16000)
    sf.write(t / "silent.wav", np.zeros(16000, np.float32), 16000)
    (t / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")

    def jsonl(name, rows):
        (t / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))

    for i in range(6):
        sf.write(t / f"ok{i}.wav", tone(1.0, 200 + 30 * i), 16000)
    jsonl("ok.jsonl", [{"audio": f"ok{i}.wav", "text": f"hello {i}", "speaker": f"s{i}", "id": f"u{i}"}
                       for i in range(6)])
    jsonl("missing.jsonl", [{"audio": "gone.wav", "text": "x"}])
    jsonl("corrupt.jsonl", [{"audio": "corrupt.wav", "text": "x"}])
    jsonl("bad.jsonl", [{"audio": "ok.wav", "text": "x"}, "{not json"])
    (t / "latin1.jsonl").write_bytes(b'{"audio": "ok.wav", "text": "caf\xe9"}\n')
    jsonl("noaudio.jsonl", [{"text": "x"}])
    jsonl("silent.jsonl", [{"audio": "silent.wav", "text": "x", "id": f"q{i}", "speaker": f"s{i}"} for i in range(3)])
    jsonl("notext.jsonl", [{"audio": "ok.wav", "text": "", "id": f"n{i}", "speaker": f"s{i}"} for i in range(3)])
    jsonl("onespeaker.jsonl", [{"audio": "ok.wav", "text": f"x {i}", "id": f"o{i}", "speaker": "s"} for i in range(3)])
    for d in ("empty", "finished", "other", "notrun"):
        (t / d).mkdir()
    (t / "finished" / "real_metrics.json").write_text('{"status": "complete"}')
    (t / "measured").mkdir()  # a run's metrics with two canaries, for --accept-cost
    (t / "measured" / "real_metrics.json").write_text('{"status": "complete", "cost": {"canaries": {"calls": {}, '
                                                      '"recorded-readings": {}}}}')
    (t / "other" / "run_config.json").write_text('{"model": "another-model"}')
    (t / "notrun" / "holiday.jpg").write_bytes(b"\xff\xd8")
    (t / "noterms.txt").write_text("# nothing but a comment\n\n")
    (t / "terms.txt").write_text("kubectl\nRedis\n")
    jsonl("twoclips.jsonl", [{"audio": "ok.wav", "text": f"two {i}", "id": f"t{i}"} for i in range(2)])
    for d, pairs in (("notxt", {"a.wav": None}), ("halftxt", {"a.wav": "hello", "b.wav": None})):
        (t / d).mkdir()
        for wav, text in pairs.items():
            sf.write(t / d / wav, tone(1.0), 16000)
            if text:
                (t / d / wav).with_suffix(".txt").write_text(text)
    (t / "twofmt").mkdir()
    for name in ("a.wav", "a.flac"):
        sf.write(t / "twofmt" / name, tone(1.0), 16000)
    (t / "twofmt" / "list.txt").write_text("a: hello\n")
    (t / "af").mkdir()
    sf.write(t / "af" / "a.wav", tone(1.0), 16000)
    (t / "af" / "metadata.jsonl").write_text('{"file_name": "a.wav", "transcription": "hi"}\n{"file_name": "a.wav"}\n')
    (t / "noproc").mkdir()  # a v2 checkpoint's config and weights, without its processor
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_v2_dir / name, t / "noproc" / name)
    (t / "whisper").mkdir()
    (t / "whisper" / "config.json").write_text('{"model_type": "whisper"}')
    (t / "noadapter").mkdir()
    (t / "noadapter" / "real_metrics.json").write_text('{"status": "complete", "config": {"model": "offline"}}')

    from lora.model.adapter import attach_lora, target_regex
    from lora.model.load import load_model

    model = load_model(str(tiny_dir))
    adapter = t / "tiny_adapter"
    attach_lora(model, 2, 4, 0.0, target_regex(model, "both")).save_pretrained(adapter)
    # $TMP/busy: a folder another process is writing (it holds the folder's lock until the module ends)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom lora.storage.lock import FolderLock\n"
                               "held = FolderLock(sys.argv[1]).__enter__()\nprint('locked', flush=True)\n"
                               "time.sleep(900)",
                               str(t / "busy")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "locked"
    # $FULL: a 3 MB disk, $RO: a read-only one (tmpfs; their rows are skipped where mounting is not allowed)
    mounts = {}
    for key, opts in (("$FULL", "size=3m"), ("$RO", "ro,size=1m")):
        (t / key[1:].lower()).mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(t / key[1:].lower())],
                          capture_output=True).returncode == 0:
            mounts[key] = str(t / key[1:].lower())
    yield {"$TMP": str(t), "$TINY_ADAPTER": str(adapter), "$TINY": str(tiny_dir), "$TINY_V2": str(tiny_v2_dir),
           **mounts}
    holder.kill()
    holder.wait()
    for path in mounts.values():
        subprocess.run(["umount", path], capture_output=True)


def _expand(text: str, subs: dict) -> str:
    for key in sorted(subs, key=len, reverse=True):
        text = text.replace(key, subs[key])
    return text


@pytest.mark.parametrize("row", _rows())
def test_documented_refusal(row, bad_inputs, tmp_path):
    for key in ("$FULL", "$RO"):
        if key in row["cmd"] and key not in bad_inputs:
            pytest.skip(f"no tmpfs for {key}: mounting is not allowed here")
    words = shlex.split(_expand(row["cmd"], bad_inputs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[0] == "RS":
        words[:1] = [sys.executable, "-m", "lora.runners.real_small"]
    elif words[0] == "python":
        words[0] = sys.executable
    # in a folder of its own: a row without --output-dir uses the default (outputs/real_small), which two rows run
    # at once (parallel workers) would both lock
    proc = subprocess.run(words, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert err and re.search(".*".join(map(re.escape, _expand(row["msg"], bad_inputs).split("…"))), err[-1]), err[-1:]
    assert "error: " in err[-1]
    assert not [*Path(bad_inputs["$TMP"]).rglob(".tmp-*"), *tmp_path.rglob(".tmp-*")], "a temporary artifact was left"
    assert (Path(bad_inputs["$TMP"]) / "notrun" / "holiday.jpg").exists(), "a folder that is not a run was touched"
