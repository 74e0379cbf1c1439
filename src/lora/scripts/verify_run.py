"""python -m lora.scripts.verify_run outputs/<run>: check every item of the plan's verification list.

Prints a pass/fail table and writes verification.json; exit 0 only if every check passes.
The artifact test runs in fresh processes (python -m lora.scripts.run_stt), twice: once to
reproduce the run's tuned predictions, once more to reproduce the artifact test itself.
When the run has a runtime export (``<run>/runtime/export.json``, written by
``lora.scripts.export_onnx``), three more checks: its files and adapter are the ones verified at
export, its recorded checks passed, and the runtime it was verified in reloads it and repeats its transcripts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lora.errors import LoraError, cli_main

LOSS_GAIN = 0.1  # acceptance: held-out loss lower by at least this much ...
WER_GAIN = 0.05  # ... or WER lower by at least this fraction of the baseline WER


def acceptance(metrics: dict) -> tuple[bool, str]:
    b, t = metrics["baseline"], metrics["tuned"]
    loss_gain = b["test_loss"] - t["test_loss"]
    wer_gain = (b["wer"] - t["wer"]) / b["wer"] if b["wer"] > 0 else 0.0
    ok = loss_gain >= LOSS_GAIN or wer_gain >= WER_GAIN
    return ok, (f"test loss {b['test_loss']:.4f} -> {t['test_loss']:.4f} (gain {loss_gain:+.4f}, need {LOSS_GAIN}); "
                f"WER {b['wer']:.2%} -> {t['wer']:.2%} (relative gain {wer_gain:+.1%}, need {WER_GAIN:.0%})")


def _run_stt(run: Path, metrics: dict, output: Path, compare: Path) -> tuple[bool, str]:
    from lora.storage import artifacts as R

    cmd = [sys.executable, "-m", "lora.scripts.run_stt", "--model", metrics["config"]["model"],
           "--adapter-dir", str(run / R.ADAPTER), "--processor-dir", str(run / R.PROCESSOR),
           "--manifest", str(run / R.HELDOUT), "--output", str(output), "--compare", str(compare),
           "--batch-size", str(metrics["config"]["eval_batch_size"]),
           "--num-beams", str(metrics["config"]["num_beams"]), "--device", metrics["device"]["type"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    out, err = proc.stdout.strip().splitlines(), proc.stderr.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    detail = (errors or out or err or [f"run_stt exited {proc.returncode}"])[-1]
    return proc.returncode == 0, detail


RUNTIME_RECHECK_CLIPS = 8
Check = tuple[str, Callable[[], tuple[bool, str]]]  # (name, check returning (passed, detail))


def runtime_checks(run: Path) -> list[Check]:
    """Checks of ``<run>/runtime`` (see the module docstring); none when the run was not exported."""
    from lora.export.job import EXPORT_JSON, adapter_hash
    from lora.storage import artifacts as R
    from lora.storage.atomic import file_sha256

    folder = run / R.RUNTIME
    if not (folder / EXPORT_JSON).is_file():
        return []
    info = R.read_json(folder / EXPORT_JSON)
    runtime = info.get("runtime", {}).get("name", "moonshine-cpp")  # exports that do not name one were made there

    def unchanged():
        bad = [n for n, f in info["files"].items()
               if not (folder / n).is_file() or file_sha256(folder / n) != f["sha256"]]
        if bad:
            return False, f"changed since export: {', '.join(bad)}"
        if info["source"]["adapter_sha256"] != adapter_hash(run / R.ADAPTER):
            return False, f"exported from another adapter than {run / R.ADAPTER}; export again"
        return True, (f"{len(info['files'])} files as exported ({info['quantization']}, .{info['format']}), "
                      "from this run's adapter")

    def verified():
        v = info["verification"]
        failed = [c["check"] for c in v["checks"] if not c["passed"]]
        if info.get("status") != "complete":
            failed.insert(0, f"status {info.get('status')!r}")
        w = v["wer"]
        beside = (f"shipped base-en {w['runtime_shipped_base_en']['wer']:.2%}" if "runtime_shipped_base_en" in w
                  else f"PyTorch {w['pytorch_merged']['wer']:.2%}")  # no package ships Moonshine v2
        detail = (f"{v['parity']['identical']}/{v['parity']['clips']} identical to PyTorch; runtime WER "
                  f"{w['runtime_export']['wer']:.2%} vs {beside}")
        return not failed, (f"failed at export: {'; '.join(failed)}" if failed else detail)

    def reloads():
        from lora.runtime.moonshine_cpp import runtime_transcribe

        rows = {r["id"]: r for r in R.read_jsonl(run / R.HELDOUT)}
        preds = info["predictions"][:RUNTIME_RECHECK_CLIPS]
        missing = [p["id"] for p in preds if p["id"] not in rows]
        if missing:
            return False, f"clips not in {R.HELDOUT}: {missing[:3]}"
        wavs = [run / rows[p["id"]]["audio"] for p in preds]
        got = runtime_transcribe(folder, info["format"], info["architecture"], wavs, runtime=runtime,
                                 options=info.get("runtime", {}).get("options")).texts
        diff = [p["id"] for p, g in zip(preds, got, strict=True) if g != p["runtime_export"]]
        return not diff, (f"{len(preds)} clips transcribed as at export" if not diff
                          else f"{len(diff)} of {len(preds)} transcripts changed (first: {diff[0]})")

    return [
        ("runtime export: files and adapter as exported", unchanged),
        ("runtime export: checks passed at export", verified),
        (f"runtime export: {runtime} reloads it, same transcripts", reloads),
    ]


def checks(run: Path, relaxed: bool, accept: Sequence[str] = ()) -> list[Check]:
    """The plan's verification list, in order; the first check loads the metrics later ones read."""
    state: dict = {}  # "m": real_metrics.json, once the first check has read it
    return [
        *_completion_checks(run, state),
        *_artifact_test_checks(run, state),
        *_heldout_checks(run),
        ("no device fallback", lambda: _no_fallback(state["m"])),
        ("model weights learned, not random", lambda: _weights(state["m"])),
        *_outcome_checks(state, relaxed, accept),
        *_terms_checks(run, state, relaxed),
        *runtime_checks(run),
    ]


def _completion_checks(run: Path, state: dict) -> list[Check]:
    """The run finished (its metrics go into ``state["m"]``) and recorded every number."""
    from lora.storage import artifacts as R

    def complete():
        m = R.read_json(run / R.METRICS, "real_metrics.json (the run's completed marker)")
        state["m"] = m
        return m.get("status") == "complete", f"status={m.get('status')!r}"

    return [
        ("run completed (real_metrics.json)", complete),
        ("metrics: train/eval loss and WER, baseline and tuned", lambda: _metrics_fields(state["m"])),
    ]


def _metrics_fields(m: dict) -> tuple[bool, str]:
    need = [("train", "train_loss")] + [(p, k) for p in ("baseline", "tuned")
                                         for k in ("eval_loss", "test_loss", "wer", "wer_raw", "cer")]
    missing = [f"{p}.{k}" for p, k in need if not isinstance(m.get(p, {}).get(k), int | float)]
    return not missing, ("missing: " + ", ".join(missing) if missing
                         else "train loss, eval/test loss, WER (norm+raw), CER")


def _artifact_test_checks(run: Path, state: dict) -> list[Check]:
    """run_stt in a fresh process: once to match the tuned predictions, once more to match its own output."""
    from lora.storage import artifacts as R

    def artifact_test():
        out = run / R.ARTIFACT_TEST
        ok, msg = _run_stt(run, state["m"], out, run / R.PRED_TUNED)
        if not ok:
            return False, msg
        data = R.read_json(out)
        has = isinstance(data.get("samples"), list) and data["samples"] and isinstance(data.get("wer"), float)
        return bool(has), f"{len(data.get('samples', []))} samples, WER {data.get('wer', float('nan')):.2%}; {msg}"

    def rerun():
        tmp = run / ".verify_rerun.json"
        try:
            return _run_stt(run, state["m"], tmp, run / R.ARTIFACT_TEST)
        finally:
            tmp.unlink(missing_ok=True)

    return [
        ("artifact test (fresh process) reproduces tuned predictions", artifact_test),
        ("artifact test rerun reproduces artifact_test.json", rerun),
    ]


def _heldout_checks(run: Path) -> list[Check]:
    """The held-out clips are real audio and were kept out of training."""
    return [
        ("held-out manifest decodes to real audio", lambda: _real_audio(run)),
        ("held-out data unseen in training (speakers too, when split by speaker)", lambda: _disjoint(run)),
    ]


def _real_audio(run: Path) -> tuple[bool, str]:
    from lora.data import audio as A
    from lora.storage import artifacts as R

    rows = R.read_jsonl(run / R.HELDOUT)
    bad = []
    for r in rows:
        wav = A.decode_file(run / r["audio"])
        why = A.problem(wav, r["text"])
        if why is None and abs(wav.size / A.SAMPLE_RATE - r["duration"]) > 1e-3:
            why = f"duration {wav.size / A.SAMPLE_RATE:.3f} != {r['duration']}"
        if why is None and abs(A.rms(wav) - r["rms"]) > 1e-4:
            why = f"rms {A.rms(wav):.5f} != {r['rms']}"
        if why:
            bad.append(f"{r['id']}: {why}")
    hours = sum(r["duration"] for r in rows) / 3600
    return not bad and bool(rows), (f"{len(rows)} clips, {hours:.3f} h, all speech-shaped" if not bad
                                    else f"{len(bad)} bad: {bad[0]}")


def _disjoint(run: Path) -> tuple[bool, str]:
    from lora.storage import artifacts as R

    split = R.read_json(run / R.SPLIT)
    parts, mode, given = split["parts"], split.get("mode", "speaker"), set(split.get("given", []))
    held_parts = [p for p in ("validation", "test") if p in parts]

    def in_training(key: str) -> set[str]:
        """The held-out parts' ``key`` entries (ids, audio fingerprints, sentences) that training has too."""
        return set(parts["train"][key]) & {x for p in held_parts for x in parts[p][key]}

    ids = in_training("ids")
    names = ""
    if "audio" in parts["train"]:  # clips compared by their audio: two folders may both hold a 0001.wav
        if shared := in_training("audio"):
            return False, f"held-out audio in training: {len(shared)} clips"
        names = f" ({len(ids)} held-out clip names also name other audio in training)" if ids else ""
    elif ids:  # a split.json without audio fingerprints (older versions wrote none): clips known by id only
        return False, (f"held-out clips in training: {sorted(ids)[:5]} (compared by clip id: this run's split.json "
                       "predates audio fingerprints)")
    sentences = "sentences" in parts["train"]
    if sentences and (shared := in_training("sentences")):
        return False, f"held-out sentences in training: {sorted(shared)[:3]}"
    words = ("held-out sentences unseen in training" if sentences else "held-out clips unseen in training") + names
    if mode == "utterance":
        return True, (f"split by utterance ({split.get('mode_reason', '')}): the same voices are in training and "
                      f"test, so the numbers measure adaptation to them; {words}")
    train = set(parts["train"]["speakers"])
    drawn = [p for p in held_parts if p not in given]
    held = {s for p in drawn for s in parts[p]["speakers"]}
    if "test" not in given:
        held |= {r["speaker"] for r in R.read_jsonl(run / R.HELDOUT)}
    overlap = train & held
    note = f"; {', '.join(sorted(given))} given by the user" if given else ""
    return not overlap, (f"train {len(train)} speakers, held-out {len(held)}; none shared; {words}{note}"
                         if not overlap else f"shared speakers: {sorted(overlap)[:5]}")


def _no_fallback(m: dict) -> tuple[bool, str]:
    d = m["device"]
    return not d["used_mps_fallback"], f"{d['name']}, used_mps_fallback={d['used_mps_fallback']}"


def _outcome_checks(state: dict, relaxed: bool, accept: Sequence[str] = ()) -> list[Check]:
    """Acceptance and cost bounds, all passed with a RELAXED note under ``--relaxed``; a cost named in ``accept``
    (``--accept-cost``) passes with an ACCEPTED note."""
    def relaxed_or(ok: bool, msg: str) -> tuple[bool, str]:
        return (True, f"RELAXED (short run; not judged): {msg}") if relaxed else (ok, msg)

    def accepted_or(check) -> tuple[bool, str]:
        ok, msg, culprits = check(state["m"])
        if not ok and culprits and set(culprits) <= set(accept):
            return True, f"ACCEPTED (--accept-cost {', '.join(culprits)}): {msg}"
        return relaxed_or(ok, msg)

    return [
        ("acceptance: loss -0.1 or WER -5% relative", lambda: relaxed_or(*acceptance(state["m"]))),
        ("cost: canaries (speech not tuned for) within --max-regression", lambda: accepted_or(_canaries)),
        ("cost: no words added on clips without speech", lambda: accepted_or(_quiet)),
        ("cost: enough recorded speech to see the bound", lambda: _recorded(state["m"])),
    ]


def _canaries(m: dict) -> tuple[bool, str, list[str]]:
    """(within, the line, the canaries beyond the bound); a failing line ends with what to do."""
    from lora.data.general import canary_words
    from lora.evaluation.cost import cost_fix

    cost = m["cost"]
    rows = []
    for name, c in cost["canaries"].items():
        kind, verdict = canary_words(c)
        rows.append(f"{name} ({kind}) skipped: {c['skipped']}" if c["skipped"] else
                    f"{name} ({kind}) {c['baseline']['wer']:.2%} -> {c['tuned']['wer']:.2%} "
                    f"({c['regression']:+.1%}, {verdict})")
    detail = f"bound +{cost['max_regression']:.0%} relative WER; " + "; ".join(rows) if rows else "no canary measured"
    beyond = [n for n, c in cost["canaries"].items() if c.get("gated") and not c["within_bound"]]
    for name in beyond:
        detail += f". {name}: {cost_fix(name, m['config'])}"
    return cost["within_bound"], detail, beyond


def _quiet(m: dict) -> tuple[bool, str, list[str]]:
    from lora.evaluation.cost import cost_fix, quiet_line

    q = m["cost"]["quiet"]
    ok = q["added_words"] == 0
    return ok, quiet_line(q) + ("" if ok else f". {cost_fix('quiet', m['config'])}"), [] if ok else ["quiet"]


def _terms_checks(run: Path, state: dict, relaxed: bool) -> list[Check]:
    """One check for a run with ``--terms``, none otherwise."""
    from lora.storage import artifacts as R

    try:
        has = bool(json.loads((run / R.METRICS).read_text()).get("terms"))
    except (OSError, ValueError, AttributeError):  # unfinished or damaged: the first check says so
        has = False
    return [("terms: recall as recorded, not lower after tuning", lambda: _terms(run, state["m"], relaxed))] if has \
        else []


def _terms(run: Path, m: dict, relaxed: bool) -> tuple[bool, str]:
    """Each term's recall recomputed from the predictions files, as recorded, and no lower after tuning."""
    from lora.evaluation.terms import score_run, terms_line

    t = m["terms"]
    again = score_run(run, t["listed"])
    if again != {k: t[k] for k in ("baseline", "tuned")}:
        return False, "the recall recomputed from the predictions files differs from real_metrics.json's"
    b, a = again["baseline"], again["tuned"]
    line = terms_line(b, a)
    if relaxed or a["found"] >= b["found"]:
        return True, (f"RELAXED (short run; not judged): {line}" if relaxed else line)
    fell = sorted(n for n, r in a["terms"].items() if r["found"] < b["terms"][n]["found"])
    return False, (f"{line}; fewer found after tuning: {', '.join(fell)}. fix: add training sentences that use "
                   "these terms, or see which clips changed in predictions_tuned.jsonl")


def accepted_costs(run: Path, accept: Sequence[str]) -> list[str]:
    """``--accept-cost`` names checked against what the run measured: ``quiet`` or one of its canaries."""
    if not accept:
        return []
    from lora.storage import artifacts as R

    try:
        valid = ["quiet", *json.loads((run / R.METRICS).read_text())["cost"]["canaries"]]
    except (OSError, ValueError, KeyError):  # an unfinished or damaged run: the first check says so
        return sorted(set(accept))
    for name in accept:
        if name not in valid:
            raise LoraError(f"--accept-cost {name}: not a cost this run measured; valid: {', '.join(valid)}")
    return sorted(set(accept))


def _weights(m: dict) -> tuple[bool | None, str]:
    """A warning (None) on a model with random weights (``import_model --random-init``): its numbers prove the
    mechanics, not quality, and every place that shows them says so."""
    from lora.model.random_init import weights_line
    from lora.storage.artifacts import model_of

    model = model_of(m)
    return (None if model["random_weights"] else True), f"{model['label']}: {weights_line(model['random_weights'])}"


def _recorded(m: dict) -> tuple[bool | None, str]:
    """A warning (None), not a failure, when the canaries hold too little recorded speech: the run is not shown to
    be bad, only not shown to be safe, and the line says what to add."""
    from lora.evaluation.cost import recorded_line, recorded_of

    g = recorded_of(m["cost"])
    return (True if g["enough"] else None), recorded_line(g, m["cost"]["max_regression"])


def verify(run: Path, relaxed: bool = False, log=print, accept: Sequence[str] = ()) -> tuple[list[dict], int]:
    """(results, number of checks planned); an unfinished run stops after the first. ``accept``: costs the user
    ships knowingly (``--accept-cost``, checked by :func:`accepted_costs`)."""
    if not run.is_dir():
        raise LoraError(f"run folder not found: {run}")
    results = []
    planned = checks(run, relaxed, accept)
    for name, check in planned:
        try:
            ok, detail = check()
        except LoraError as exc:
            ok, detail = False, str(exc)
        except KeyError as exc:
            ok, detail = False, f"missing field {exc}"
        results.append({"check": name, "passed": ok is None or bool(ok), "detail": detail, "warning": ok is None})
        log(f"{'WARN' if ok is None else 'PASS' if ok else 'FAIL'}  {name}: {detail}")
        if name.startswith("run completed") and not ok:
            break  # nothing else can be judged on an unfinished run
    return results, len(planned)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora.scripts.verify_run", description=__doc__.splitlines()[0])
    p.add_argument("run", help="outputs/<run>")
    p.add_argument("--relaxed", action="store_true",
                   help="do not judge the acceptance criterion nor the cost bounds (for short smoke runs and untrained "
                        "test models; the table says so)")
    p.add_argument("--accept-cost", action="append", default=[], metavar="NAME",
                   help="pass a failed cost check knowingly: 'quiet' (words on clips without speech) or a canary's "
                        "name; recorded in verification.json and shown as ACCEPTED (repeatable)")
    args = p.parse_args(argv)
    from lora.storage import artifacts as R
    from lora.storage.atomic import write_json
    from lora.storage.lock import FolderLock

    run = Path(args.run)
    if not run.is_dir():
        raise LoraError(f"run folder not found: {run}")
    with FolderLock(run, "run folder"):  # it writes artifact_test.json and verification.json into the run
        accept = accepted_costs(run, args.accept_cost)
        results, planned = verify(run, args.relaxed, accept=accept)
        write_json(run / R.VERIFICATION, {"relaxed": args.relaxed, "accepted_costs": list(accept), "checks": results})
    passed, warned = sum(r["passed"] for r in results), sum(r["warning"] for r in results)
    print(f"{passed} passed, {len(results) - passed} failed" + (f", {warned} warning (read the WARN line)" if warned
                                                                   else ""))
    return 0 if passed == len(results) == planned else 1


if __name__ == "__main__":
    sys.exit(cli_main(main))
