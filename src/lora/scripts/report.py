"""python -m lora.scripts.report outputs/<run>: write the training report from the run's artifacts.

Never by hand: every number comes from real_metrics.json, train_log.jsonl, the prediction files
and verification.json (run verify_run first to include the table). Two plots are saved beside
the report: the loss curves and the per-utterance WER change.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lora.errors import cli_main


def _pct(x: float) -> str:
    return f"{x:.2%}"


def _save(fig, path: Path) -> None:
    """The figure as PNG, written atomically like every other file (:mod:`lora.storage.atomic`)."""
    import io

    from lora.storage.atomic import write_bytes

    png = io.BytesIO()
    fig.savefig(png, format="png")
    write_bytes(path, png.getvalue())


def plot_losses(log_rows: list[dict], evals: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([r["step"] for r in log_rows], [r["train_loss"] for r in log_rows], lw=1, alpha=0.6,
            label="train loss (per step)")
    ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation loss (held-out voice)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per token")
    ax.set_title("Loss curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_wer_change(base: list[float], tuned: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diff = sorted(t - b for b, t in zip(base, tuned, strict=True))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    colors = ["tab:green" if d < 0 else "tab:red" if d > 0 else "tab:gray" for d in diff]
    ax.bar(range(len(diff)), diff, color=colors, width=1.0)
    ax.axhline(0, color="black", lw=0.8)
    better, worse = sum(d < 0 for d in diff), sum(d > 0 for d in diff)
    ax.set_title(f"Per-utterance WER change, tuned - baseline ({better} better, {worse} worse, "
                 f"{len(diff) - better - worse} same)")
    ax.set_xlabel("held-out utterances, sorted by change")
    ax.set_ylabel("WER change")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _split_words(data: dict) -> str:
    """What the split makes the numbers mean, in plain words."""
    held = data.get("held_out_sources") or {}
    given = "".join(f" The {p} set is the user's own: {h['description']} "
                    f"({'synthesized' if h['synthesized'] else 'recorded'} speech)." for p, h in held.items())
    dropped = (f"{data['dropped_overlap']} training utterances were dropped because their sentence is held out"
               + (f" and {data['dropped_same_audio']} because the same audio is held out"
                  if data.get("dropped_same_audio") else "") + ", so held-out sentences are unseen in training.")
    if data.get("split_mode", "speaker") == "utterance":
        return (f"Split by utterance ({data.get('split_mode_reason', '')}): **the same voices are in training and "
                "test, so these numbers measure adaptation to those voices, not generalization to new speakers.** "
                + dropped + given)
    return "Split by speaker: no voice is in two parts, so the test measures unseen voices. " + dropped + given


def runtime_section(run: Path) -> list[str]:
    """Markdown lines for ``<run>/runtime/export.json`` (the exported model in the runtime it was verified in), or
    none."""
    from lora.export.job import EXPORT_JSON
    from lora.storage import artifacts as R

    path = run / R.RUNTIME / EXPORT_JSON
    if not path.is_file():
        return []
    e = R.read_json(path)
    v, w, rt = e["verification"], e["verification"]["wer"], e["verification"]["runtime"]
    where = {"unavailable": {}, **e.get("runtime", {"name": "moonshine-cpp", "version": ""})}  # unnamed: made there
    name = where["name"]
    mb = sum(f["bytes"] for n, f in e["files"].items() if n != "export.json") / 1e6
    shipped = "runtime_shipped_base_en" in w  # a Moonshine v2 export has no shipped model to stand beside

    def rtf(key: str) -> str:
        return f"{rt[key]['rtf']:.4f}"

    rows = [("PyTorch, merged adapter (fp32)", w["pytorch_merged"], "")]
    if "pytorch_base_model" in w:
        rows.append(("PyTorch, base model (fp32)", w["pytorch_base_model"], ""))
    if "runtime_export_float" in w:
        rows.append((f"{name}: this export, float32", w["runtime_export_float"], rtf("export_float")))
    rows.append((f"{name}: this export, {e['quantization']} .{e['format']} (`runtime/`)", w["runtime_export"],
                 rtf("export")))
    if shipped:
        rows.append((f"{name}: shipped base-en, int8 .ort (untuned)", w["runtime_shipped_base_en"],
                     rtf("shipped_base_en")))
    table = "\n".join(f"| {name} | {_pct(m['wer'])} | {_pct(m['wer_raw'])} | {cell} |" for name, m, cell in rows)
    sizes = f"Files: {mb:.1f} MB (this export)" + (
        f" vs {sum(v['shipped_base_en_files'].values()) / 1e6:.1f} MB (shipped base-en)." if shipped else ".")
    par = v["parity"]
    largest = (f"largest first-step logit difference {par['max_first_step_logit_diff']:.1e}"
               if "max_first_step_logit_diff" in par else
               f"largest encoder difference {par['max_encoder_diff']:.1e}, the frontend in chunks vs whole "
               f"{par['max_chunked_frontend_diff']:.1e}")
    checks = "\n".join(f"| {'PASS' if c['passed'] else 'FAIL'} | {c['check']} | {c['detail']} |" for c in v["checks"])
    # an older version published exports that failed a check
    if e.get("status") != "complete" or not all(c["passed"] for c in v["checks"]):
        checks += "\n\n**This export failed its checks: do not ship it.**"
    cost = e.get("cost") or {}
    canary_rows = [f"| {n} | {_pct(c['runtime_shipped_base_en']['wer'])} | {_pct(c['runtime_export']['wer'])} | "
                   f"{c['regression']:+.1%} |" for n, c in (cost.get("canaries") or {}).items()]
    canaries = ([f"What it cost in the runtime (the run's canaries, recorded, not judged: the two models are quantized "
                 f"by different tools): words on clips without speech {cost['quiet']['added_words']} added.", "",
                 "| canary | shipped base-en | this export | change |", "|---|---|---|---|", *canary_rows, ""]
                if canary_rows else
                # Moonshine v2: the quiet clips only, against the run's PyTorch base model
                [f"What it cost in the runtime: words on clips without speech {cost['quiet']['added_words']} added "
                 f"(against {cost.get('quiet_baseline', 'shipped base-en')}).", ""] if cost else [])
    not_verified = "".join(f" (not verified in {r}, which cannot run here: {why})"
                           for r, why in where["unavailable"].items())
    return [
        f"## On the device runtime ({name} {where['version']})".replace(" )", ")"),
        "",
        f"`{e['command']}` merged the adapter into the weights and wrote `{run}/runtime/`, which Moonshine's "
        f"runtimes load as it is{not_verified}. Measured on the first {v['clips']} of {v['clips_in_manifest']} "
        "held-out clips "
        f"({v['audio_seconds'] / 60:.1f} min of audio, clips of the test split above). RTF = decoding seconds "
        "per audio second on this machine's CPU, one clip at a time after a warm-up.",
        "",
        "| model | WER | WER (raw) | RTF |",
        "|---|---|---|---|",
        table,
        "",
        f"{sizes} Float export vs PyTorch: {par['identical']}/{par['clips']} greedy transcripts identical, "
        f"{largest}.",
        "",
        *canaries,
        "| result | check | detail |",
        "|---|---|---|",
        checks,
        "",
    ]


def cost_section(m: dict) -> list[str]:
    """Markdown lines: what the adapter cost on speech it was not tuned for (canaries) and on clips without speech."""
    cost = m.get("cost")
    if not cost:
        return []
    from lora.data.general import GATE_WORDS, canary_words
    from lora.evaluation.cost import quiet_line, recorded_line, recorded_of

    rows = []
    for name, c in cost["canaries"].items():
        kind, judged = canary_words(c)
        if c["skipped"]:
            rows.append(f"| {name} | {kind}: {c['description']} | skipped: {c['skipped']} | | | |")
            continue
        b, t = c["baseline"], c["tuned"]
        rows.append(f"| {name} | {kind}: {c['description']} | {b['utterances']} | "
                    f"{_pct(b['wer'])} ({_pct(b['wer_raw'])}) "
                    f"| {_pct(t['wer'])} ({_pct(t['wer_raw'])}) | {c['regression']:+.1%}, {judged} |")
    q = cost["quiet"]
    quiet = "\n".join(f"| {n} | {c['baseline'] or '(nothing)'} | {c['tuned'] or '(nothing)'} |"
                      for n, c in q["clips"].items())
    guard = cost.get("guardrail") or {}
    checks = guard.get("checks") or []
    trail = "; ".join(f"step {e['step']}: " + ", ".join(f"{n} {_pct(w)}" for n, w in e["canary_wer"].items())
                      + ("" if e.get("within_bound", True) else " (beyond)") for e in checks)
    guard_line = (f"During training the guardrail transcribed {guard.get('validation_clips')} canary validation clips "
                  f"and {guard.get('quiet_clips')} clips without speech (not the ones reported here) at step 0 and "
                  f"at every check whose validation loss was the lowest so far (the "
                  f"checks it could keep), WER per canary: {trail}. "
                  f"The adapter kept is from step {guard['kept_step']}, the best validation loss among checks whose "
                  "clips did not show a regression beyond the bound (one-sided 95%, paired over the clips) and that "
                  "wrote no word on a quiet clip where the base model wrote none." if checks
                  else "The guardrail did not run (no canary validation slice and no quiet clip).")
    rec = recorded_of(cost)
    rec_line = recorded_line(rec, cost["max_regression"])
    rec_line = f"Recorded speech: {rec_line}." if rec["enough"] else f"**{rec_line}.**"
    replay = (m.get("general") or {}).get("replay")
    replay_line = (f"Replay: {replay['clips']} clips of {replay['description']} "
                   f"({'recorded' if replay['recorded'] else 'synthesized'}), {m['config']['replay_ratio']:.0%} of "
                   "every training batch." if replay else "No replay: training saw no general speech.")
    quiet_ratio = m["config"].get("quiet_ratio", 0.0)  # a config without it had no quiet clips
    replay_line += (f" {quiet_ratio:.1%} of every training batch was clips without speech with an empty target."
                    if quiet_ratio else " No clip without speech in training.")
    return [
        "## What it cost (speech the adapter was not tuned for)",
        "",
        f"Canaries are measured before and after like the test split, never trained on. Bound: canary WER may rise "
        f"at most {cost['max_regression']:.0%} relative to the base model's (judged for canaries of at "
        f"least {GATE_WORDS} words). {replay_line}",
        "",
        rec_line,
        "",
        "| canary | what it is | clips | baseline WER (raw) | tuned WER (raw) | change |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        guard_line,
        "",
        f"Clips without speech (made in code): {quiet_line(q)}.",
        "",
        "| clip | baseline | tuned |",
        "|---|---|---|",
        quiet,
        "",
    ]


def header_section(run: Path, m: dict) -> list[str]:
    """Markdown lines: the title, what the model's weights are (random ones first of all) and how to reproduce."""
    from lora.model.random_init import weights_line
    from lora.storage.artifacts import model_of

    mark = model_of(m)["random_weights"]
    return [
        "# Training report",
        "",
        *([f"**{weights_line(mark)}.** Every number below measures the mechanics of the job on a model built with "
           "`import_model --random-init`, not the quality of a Moonshine model.", ""] if mark else []),
        f"Generated by `python -m lora.scripts.report {run}` from the run's artifacts; nothing here is typed by hand.",
        f"Reproduce (fresh clone): `bash scripts/run_offline.sh` (runs the command below into `{run}` and "
        f"`verify_run`), then `.venv/bin/python -m lora.scripts.report {run}`. Numbers repeat exactly (seeded, "
        "deterministic on CPU); timings do not.",
        "",
    ]


def _averaged(cfg: dict) -> str:
    n = cfg.get("average_steps")  # absent from a config written without the flag: it was off
    return f", validated and kept as a moving average over ~{n} steps" if n else ""


def _masked(cfg: dict) -> str:
    p = cfg.get("mask_time_prob")  # absent from a config written without the flag: it was off
    return (f", time masks on ~{p:.0%} of each training clip's encoder frames ({cfg['mask_time_length']}-frame spans)"
            if p else "")


def run_section(m: dict) -> list[str]:
    """Markdown lines: the command, model, LoRA and optimiser settings, training length and environment."""
    from lora.storage.artifacts import model_of

    cfg, tr, label = m["config"], m["train"], model_of(m)["label"]
    return [
        "## Run",
        "",
        f"- Command: `{m['command']}`",
        f"- Model: `{cfg['model']}` (`{Path(m['model_path']).name}`, {label}), LoRA r={cfg['lora_r']}, "
        f"alpha={cfg['lora_alpha']}, dropout={cfg['lora_dropout']}, scope={cfg['lora_scope']}, "
        f"modules `{cfg['target_modules']}` "
        f"({m['lora']['adapted_layers']} layers, {m['lora']['trainable_parameters']:,} trainable of "
        f"{m['lora']['total_parameters']:,} parameters)",
        f"- Optimisation: AdamW lr={cfg['learning_rate']}, warmup {cfg['warmup_steps']} + cosine, "
        f"batch {cfg['batch_size']} x accumulation {cfg['grad_accum']}, max {cfg['max_steps']} steps, "
        f"validation every {cfg['eval_every']} (patience {cfg['patience']}){_averaged(cfg)}{_masked(cfg)}, "
        f"seed {cfg['seed']}",
        f"- Trained {tr['steps']} steps ({tr['samples_seen']} utterances seen) in {tr['seconds']:.0f} s; best "
        f"validation loss at step {tr['best_step']}{' (stopped early)' if tr['stopped_early'] else ''}; whole run "
        f"{m['elapsed_seconds']:.0f} s",
        f"- Device: {m['device']['name']}; MPS fallback: {m['device']['used_mps_fallback']}; torch "
        f"{m['versions']['torch']}, transformers {m['versions']['transformers']}, peft {m['versions']['peft']}; "
        f"commit `{(m.get('git_commit') or 'unknown')[:12]}`",
        "",
    ]


def data_section(data: dict) -> list[str]:
    """Markdown lines: where the data came from, what screening kept, and the split table."""
    synth = ("synthesized speech (espeak-ng voices), not recorded human speech" if data["synthesized"]
             else "recorded speech")
    split_rows = "\n".join(f"| {p} | {s['utterances']} | {s['speakers']} | {s['hours']:.3f} |"
                           for p, s in data["split"].items())
    return [
        "## Data",
        "",
        f"Source: {data['description']}. This is **{synth}**. Text mode: {data['text_mode']}. "
        f"Screening kept {data['screening']['kept']} utterances, rejected "
        f"{sum(len(v) for v in data['screening']['rejected'].values())}. " + _split_words(data),
        "",
        "| part | utterances | speakers | hours |",
        "|---|---|---|---|",
        split_rows,
        "",
    ]


def comparison_section(m: dict, loss_png: Path, wer_png: Path) -> list[str]:
    """Markdown lines: baseline vs tuned loss, WER and CER on the held-out data, then the two plots."""
    b, t = m["baseline"], m["tuned"]
    rel = (b["wer"] - t["wer"]) / b["wer"] if b["wer"] else 0.0
    return [
        "## Baseline vs tuned (same held-out data)",
        "",
        "Loss: token-weighted cross-entropy over the whole split. WER: normalized (Whisper English normalizer), "
        "raw beside it. WER/CER and test loss are on the test split; validation loss chose the checkpoint.",
        "",
        "| metric | baseline | tuned | change |",
        "|---|---|---|---|",
        f"| validation loss | {b['eval_loss']:.4f} | {t['eval_loss']:.4f} | {t['eval_loss'] - b['eval_loss']:+.4f} |",
        f"| test loss | {b['test_loss']:.4f} | {t['test_loss']:.4f} | {t['test_loss'] - b['test_loss']:+.4f} |",
        f"| WER (normalized) | {_pct(b['wer'])} | {_pct(t['wer'])} | {rel:+.1%} relative |",
        f"| WER (raw) | {_pct(b['wer_raw'])} | {_pct(t['wer_raw'])} | |",
        f"| CER (normalized) | {_pct(b['cer'])} | {_pct(t['cer'])} | |",
        "",
        f"![loss curves]({loss_png.name})",
        "",
        f"![per-utterance WER change]({wer_png.name})",
        "",
    ]


def terms_section(m: dict) -> list[str]:
    """Markdown lines: ``--terms``, each term's recall before and after on the held-out set; none without it."""
    t = m.get("terms")
    if not t:
        return []
    b, a = t["baseline"], t["tuned"]

    def found(s: dict) -> str:
        return f"{s['found']}/{s['occurrences']}" + (f" ({_pct(s['recall'])})" if s["recall"] is not None else "")

    rows = [f"| {name} | {t['train_occurrences'].get(name, 0)} | {found(b['terms'][name])} | "
            f"{found(a['terms'][name])} | {b['terms'][name]['extra']} -> {a['terms'][name]['extra']} |"
            for name in t["listed"] if b["terms"][name]["occurrences"]]
    other = (f"WER on the other {a['other_words']} words: {_pct(b['other_wer'])} -> {_pct(a['other_wer'])}."
             if a["other_wer"] is not None else "")
    absent = (f" Not in the held-out set (no recall measured): {', '.join(t['absent_from_test'])}."
              if t["absent_from_test"] else "")
    return [
        "## Key terms (--terms)",
        "",
        f"From `{t['file']}`: of each term's occurrences in the held-out references, how many the transcript has "
        f"(docs/terms.md). {other}{absent}",
        "",
        "| term | in training | baseline found | tuned found | written where not said |",
        "|---|---|---|---|---|",
        *rows,
        f"| **all** | | {found(b)} | {found(a)} | {b['extra']} -> {a['extra']} |",
        "",
    ]


def samples_section(base: dict[str, dict], tuned: list[dict]) -> list[str]:
    """Markdown lines: every tenth held-out utterance by id (at most 10), reference beside both predictions."""
    step = max(1, len(tuned) // 10)
    samples = sorted(tuned, key=lambda r: r["id"])[::step][:10]
    sample_rows = "\n".join(f"| {r['id']} | {r['reference']} | {base[r['id']]['prediction']} | {r['prediction']} |"
                            for r in samples)
    return [
        "## Sample predictions",
        "",
        "Every tenth held-out utterance by id.",
        "",
        "| id | reference | baseline | tuned |",
        "|---|---|---|---|",
        sample_rows,
        "",
    ]


def verification_section(run: Path, ver: dict | None) -> list[str]:
    """Markdown lines: the verify_run checks from verification.json, or a row saying it has not been run."""
    ver_rows = ("\n".join(f"| {'WARN' if c.get('warning') else 'PASS' if c['passed'] else 'FAIL'} | {c['check']} | "
                          f"{c['detail']} |"
                          for c in ver["checks"])
                if ver else "| - | verify_run has not been run on this folder | |")
    relaxed = " (acceptance relaxed: short run)" if ver and ver.get("relaxed") else ""
    return [
        f"## Verification{relaxed}",
        "",
        f"`python -m lora.scripts.verify_run {run}`",
        "",
        "| result | check | detail |",
        "|---|---|---|",
        ver_rows,
        "",
    ]


def write_plots(m: dict, log_rows: list[dict], base: dict[str, dict], tuned: list[dict],
                output: Path) -> tuple[Path, Path]:
    """Save the loss-curve and per-utterance WER-change plots beside ``output``; return their paths."""
    from lora.evaluation.evaluate import utterance_wer

    loss_png, wer_png = output.parent / f"{output.stem}_loss.png", output.parent / f"{output.stem}_wer_change.png"
    plot_losses(log_rows, m["train"]["evals"], loss_png)
    per_b = [utterance_wer(r["reference"], base[r["id"]]["prediction"]) for r in tuned]
    per_t = [utterance_wer(r["reference"], r["prediction"]) for r in tuned]
    plot_wer_change(per_b, per_t, wer_png)
    return loss_png, wer_png


def build_report(run: Path, output: Path) -> str:
    """Read the run's artifacts, save the plots beside ``output`` and return the report's Markdown."""
    from lora.errors import LoraError
    from lora.storage import artifacts as R
    from lora.storage.lock import writer_of

    writer = writer_of(run)
    if writer:
        raise LoraError(f"{run} is still being written by {writer}; run the report when it has finished")
    m = R.read_json(run / R.METRICS, "real_metrics.json")
    log_rows = R.read_jsonl(run / R.TRAIN_LOG)
    base = {r["id"]: r for r in R.read_jsonl(run / R.PRED_BASELINE)}
    tuned = R.read_jsonl(run / R.PRED_TUNED)
    verification = run / R.VERIFICATION
    ver = R.read_json(verification) if verification.is_file() else None

    loss_png, wer_png = write_plots(m, log_rows, base, tuned, output)
    lines = [
        *header_section(run, m),
        *run_section(m),
        *data_section(m["data"]),
        *comparison_section(m, loss_png, wer_png),
        *terms_section(m),
        *cost_section(m),
        *samples_section(base, tuned),
        *runtime_section(run),
        *verification_section(run, ver),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora.scripts.report", description=__doc__.splitlines()[0])
    p.add_argument("run", help="outputs/<run>")
    p.add_argument("--output", default="docs/training_report.md",
                   help="report path; plots go beside it (default docs/training_report.md)")
    args = p.parse_args(argv)
    from lora.storage.atomic import write_text

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    text = build_report(Path(args.run), output)
    write_text(output, text)
    print(f"report: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
