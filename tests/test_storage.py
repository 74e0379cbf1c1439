"""A run's files on a real file system: full disks, read-only folders, file modes, damaged checkpoints."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from lora.errors import LoraError
from tests.conftest import tone
from tests.test_cli import run


@pytest.fixture()
def tmpfs(tmp_path):
    """mount(opts) -> a fresh tmpfs folder; skips where mounting is not allowed (not root, containers)."""
    mounted = []

    def mount(opts: str) -> Path:
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], capture_output=True)


def _leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*")] if folder.exists() else []


@pytest.mark.slow
@pytest.mark.offline_model
def test_run_on_a_3mb_disk_is_refused_before_training_with_the_space_needed(tmpfs):
    disk = tmpfs("size=3m")
    proc = run("-m", "lora.runners.real_small", "--preset", "smoke", "--output-dir", str(disk / "run"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert (last.startswith(f"error: --output-dir {disk / 'run'} has ")
            and "MB free, but this run will write about" in last)
    assert "Traceback" not in proc.stderr and "baseline:" not in proc.stdout  # refused before any model work
    assert _leftovers(disk) == []  # nothing written, not even the folder


def _tones_manifest(folder: Path) -> Path:
    from lora.data.audio import write_wav

    rows = []
    for spk in range(4):
        for i in range(3):
            write_wav(folder / f"s{spk}-{i}.wav", tone(1.5, 150 + 40 * spk + 9 * i))
            rows.append({"audio": f"s{spk}-{i}.wav", "text": f"speaker {spk} says {i}", "speaker": f"s{spk}"})
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "m.jsonl"


def test_disk_that_fills_after_the_check_fails_at_the_first_write_with_one_line(tmpfs, tmp_path, tiny_dir, monkeypatch,
                                                                             capsys):
    """The pre-flight check cannot see other writers; a write that then fails is still one line, exit 2."""
    from lora.errors import cli_main
    from lora.runners.real_small import main
    from lora.training import run_folder

    disk = tmpfs("size=64k")  # room for the small files, not for the held-out audio
    manifest = _tones_manifest(tmp_path)
    monkeypatch.setattr(run_folder, "check_space", lambda out, need: None)
    rc = cli_main(main, ["--model", str(tiny_dir), "--source", f"manifest:{manifest}", "--samples", "0",
                         "--split-ratios", "0.5,0.25,0.25", "--max-steps", "2", "--warmup-steps", "0",
                         "--output-dir", str(disk / "run"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot write audio to {disk / 'run' / 'heldout_manifest_audio'}/")
    assert err[0].endswith("no space left on the device; free some space there or choose another folder")
    assert not [p for p in _leftovers(disk) if ".tmp-" in p]


def test_read_only_output_folder_is_one_line(tmpfs):
    disk = tmpfs("ro,size=1m")
    proc = run("-m", "lora.runners.real_small", "--preset", "smoke", "--output-dir", str(disk / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (f"error: cannot write the run's lock file to {disk / 'run'}: "
                                                    "read-only file system; make it writable or choose another folder")


def test_library_errors_that_mean_a_full_disk_become_storage_errors(tmp_path):
    from lora.storage.atomic import StorageError, atomic_dir, write_json, writing

    safetensors_says = "Error while serializing: I/O error: No space left on device (os error 28)"
    with pytest.raises(StorageError, match=r"cannot write the adapter to .*x: no space left on the device"), \
            writing(tmp_path / "x", "the adapter"):
        raise RuntimeError(safetensors_says)
    with pytest.raises(StorageError, match="disk quota exceeded"), atomic_dir(tmp_path / "d"):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(ZeroDivisionError), writing(tmp_path / "y", "y"):  # anything else keeps its traceback
        raise ZeroDivisionError
    assert os.listdir(tmp_path) == []  # the temporary folder went too
    write_json(tmp_path / "ok.json", {"a": 1})
    assert json.loads((tmp_path / "ok.json").read_text()) == {"a": 1}


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_artifacts_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    code = ("import os, sys, pathlib, numpy as np\nos.umask(int(sys.argv[2], 8))\n"
            "from lora.storage.atomic import atomic_dir, write_json\nfrom lora.data.audio import write_wav\n"
            "d = pathlib.Path(sys.argv[1])\nwrite_json(d / 'm.json', {})\n"
            "write_wav(d / 'a' / 'x.wav', np.ones(1600, 'f') * .1)\n"
            "with atomic_dir(d / 'adapter') as t:\n    (t / 'w').write_bytes(b'x')\n    os.chmod(t / 'w', 0o600)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), oct(umask)[2:]], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for f in ("m.json", "a/x.wav", "adapter/w"):
        assert (tmp_path / f).stat().st_mode & 0o777 == file_mode, f
    assert (tmp_path / "adapter").stat().st_mode & 0o777 == dir_mode


# ---------------------------------------------------------------- checkpoints


@pytest.fixture()
def saved(tmp_path, tiny):
    """Two checkpoints (steps 1 and 2) of a tiny LoRA run, and what loading them needs."""
    import random

    import torch

    from lora.model.adapter import attach_lora, target_regex
    from lora.training.checkpoint import Checkpoints, LoopState

    model = attach_lora(tiny[0], 2, 4, 0.0, target_regex(tiny[0]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ckpts = Checkpoints(tmp_path / "checkpoints", keep=2)
    for step in (1, 2):
        ckpts.save(LoopState(step=step), model, {}, opt, sched, random.Random(step))
    return ckpts, (model, opt, sched, random.Random(0))


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(saved, capsys):
    ckpts, load_args = saved
    newest = ckpts.folder / "step-000002" / "state.pt"
    newest.write_bytes(b"junk" * 100)
    state, _ = ckpts.load_latest(*load_args)
    assert state.step == 1
    assert f"warning: checkpoint {newest} is damaged (truncated:" in capsys.readouterr().out


def test_truncated_and_checksum_mismatch_are_both_caught(saved, capsys):
    ckpts, load_args = saved
    newest = ckpts.folder / "step-000002" / "state.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    assert ckpts.load_latest(*load_args)[0].step == 1
    newest.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, one byte flipped
    assert ckpts.load_latest(*load_args)[0].step == 1
    assert "checksum mismatch" in capsys.readouterr().out


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/moonshine-lora-pwned",))


def test_a_checkpoint_is_data_never_code(saved, capsys):
    """A state.pt that would run code when unpickled is refused even with a matching checksum."""
    from lora.storage.atomic import file_sha256

    ckpts, load_args = saved
    newest = ckpts.folder / "step-000002" / "state.pt"
    newest.write_bytes(pickle.dumps({"adapter": _Exploit()}))
    (newest.parent / "checkpoint.json").write_text(json.dumps({"sha256": file_sha256(newest),
                                                               "bytes": newest.stat().st_size}))
    assert ckpts.load_latest(*load_args)[0].step == 1
    assert "not loadable as plain data" in capsys.readouterr().out
    assert not Path("/tmp/moonshine-lora-pwned").exists()


def test_no_intact_checkpoint_is_a_one_line_refusal_naming_the_files(saved):
    ckpts, load_args = saved
    for step in (1, 2):
        (ckpts.folder / f"step-00000{step}" / "state.pt").write_bytes(b"")
    with pytest.raises(LoraError, match=r"no intact checkpoint to resume from: .*step-000002/state.pt \(truncated.*"
                                        r"step-000001/state.pt \(truncated"):
        ckpts.load_latest(*load_args)


def test_a_checkpoint_without_the_adapters_average_does_not_resume_a_run_that_averages(saved):
    """Checkpoints written before --average-steps existed (or without it) are refused by a run with it, and back."""
    from lora.training.average import WeightAverage

    ckpts, (model, opt, sched, rng) = saved
    params = [p for p in model.parameters() if p.requires_grad]
    with pytest.raises(LoraError, match="was written without --average-steps, this run is with it: start it again "
                                        "with --force"):
        ckpts.load_latest(model, opt, sched, rng, WeightAverage(params, 5))
    from lora.training.checkpoint import LoopState

    ckpts.save(LoopState(step=3), model, {}, opt, sched, rng, WeightAverage(params, 5))
    with pytest.raises(LoraError, match="averages the adapter over 5 steps and .* this run over 6"):
        ckpts.load_latest(model, opt, sched, rng, WeightAverage(params, 6))
    assert ckpts.load_latest(model, opt, sched, rng, WeightAverage(params, 5))[0].step == 3
    with pytest.raises(LoraError, match="was written with --average-steps, this run is without it"):
        ckpts.load_latest(model, opt, sched, rng)


def test_resume_on_fewer_or_more_gpus_restores_one_cuda_rng_state_per_visible_gpu(tmp_path, tiny, monkeypatch):
    """A checkpoint saved on 2 GPUs resumes where 1 (or 3) are visible; simulated on the CPU."""
    import random

    import torch

    from lora.model.adapter import attach_lora, target_regex
    from lora.training.checkpoint import Checkpoints, LoopState

    model = attach_lora(tiny[0], 2, 4, 0.0, target_regex(tiny[0]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    states = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    ckpts = Checkpoints(tmp_path / "checkpoints")
    ckpts.save(LoopState(step=3), model, {}, opt, sched, random.Random(0))
    for devices, expected in ((1, [1]), (2, [1, 2]), (3, [1, 2, 1])):
        restored = []

        def set_all(new, devices=devices, restored=restored):
            if len(new) > devices:  # what CUDA says for a state without a device
                raise RuntimeError("CUDA error: invalid device ordinal")
            restored.extend(int(s[0]) for s in new)

        monkeypatch.setattr(torch.cuda, "device_count", lambda devices=devices: devices)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
        assert ckpts.load_latest(model, opt, sched, random.Random(0))[0].step == 3
        assert restored == expected, devices


def test_a_torn_last_log_line_is_dropped_and_a_damaged_middle_line_is_an_error(tmp_path, capsys):
    from lora.training.loop import logged_rows

    log = tmp_path / "train_log.jsonl.partial"
    rows = [json.dumps({"step": s, "train_loss": 1.0 / s}) for s in (1, 2, 3)]
    log.write_text("\n".join(rows) + '\n{"step": 4, "train_lo')  # killed while writing step 4
    assert logged_rows(log, 2) == rows[:2]
    assert logged_rows(log, 3) == rows
    assert f"warning: {log}:4: dropped a torn last line" in capsys.readouterr().out
    log.write_text("\n".join([rows[0], "\x00" * 12, *rows[1:]]) + "\n")
    with pytest.raises(LoraError, match=rf"^{log}:2: not a row of the training log .*delete that line to resume"):
        logged_rows(log, 3)


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK])
def test_a_file_system_without_flock_is_one_line_or_an_explicit_lock_free_run(tmp_path, monkeypatch, capsys, code):
    """NFS without a lock service: flock fails with ENOSYS (or ENOLCK). Refused in one line, never a silent lock
    file that a killed run would leave behind; MOONSHINE_LORA_NO_LOCK=1 goes without the lock, saying so."""
    import fcntl

    from lora.storage.lock import FolderLock, writer_of

    def no_flock(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    run = tmp_path / "run"
    with pytest.raises(LoraError) as refused, FolderLock(run):
        pass
    assert str(refused.value) == (
        f"--output-dir {run}: its file system cannot lock files (flock: {os.strerror(code)}; NFS without a lock "
        "service and some shared mounts do that); use a folder on a local disk, or set MOONSHINE_LORA_NO_LOCK=1 to "
        "go without the lock (then nothing stops a second run writing the same folder)")
    assert not run.exists()  # the folder made for the run went again
    monkeypatch.setenv("MOONSHINE_LORA_NO_LOCK", "1")
    with FolderLock(run):
        (run / "real_metrics.json").write_text("{}")
        assert writer_of(run) is None
    assert "warning: MOONSHINE_LORA_NO_LOCK is set: " in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir()) == ["real_metrics.json"]


def test_ranks_that_do_not_write_answer_every_run_folder_method_and_no_other_name(tmp_path):
    from lora.training.distributed import Dist
    from lora.training.run_folder import NoWrites, RunFolder, for_rank

    assert isinstance(for_rank(tmp_path, Dist()), RunFolder)
    assert isinstance(for_rank(tmp_path, Dist(rank=1, world=2)), NoWrites)
    quiet = NoWrites()
    methods = [n for n in vars(RunFolder) if not n.startswith("_") and callable(getattr(RunFolder, n))]
    assert "write_metrics" in methods and all(getattr(quiet, n)(1, x=2) is None for n in methods)
    with pytest.raises(AttributeError, match="write_metric"):
        quiet.write_metric({})  # misspelt: fails on every rank, as on rank 0
    assert list(tmp_path.iterdir()) == []


def test_two_processes_filling_one_cache_entry_build_it_once(tmp_path):
    """The cache entry a run needs (imported model, synthesized corpus, imported prompts) is built under its lock:
    two processes that start at once (two runs, two test workers) build it once and neither sees it half made."""
    import subprocess
    import sys

    code = ("import sys, time\nfrom pathlib import Path\nfrom lora.storage.cache import filling\n"
            "entry = Path(sys.argv[1])\nwith filling(entry):\n    if not (entry / 'done').exists():\n"
            "        entry.mkdir()\n        time.sleep(1.0)\n        (entry / 'done').write_text('x')\n"
            "        with open(sys.argv[2], 'a') as f:\n            f.write('built\\n')\n")
    entry, log = tmp_path / "entry", tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(entry), str(log)]) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert log.read_text() == "built\n"
