"""The studio's pages (Gradio): give your sentences and terms, see the plan, record one prompt at a time.

Gradio because it is how the ML community puts a model in front of a person (a microphone component that plays a take
back, tables, tabs), it runs offline on 127.0.0.1, and a test can drive it in a real browser. Every page action goes
through :mod:`lora.studio.plan` and :mod:`lora.studio.takes`; the page never names a file.

Built so far: Prompts, Record, Tune and Review. Try it and Ship are not built yet (issue 38).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PLAN = "plan.json"
# Keys on the Record page (not while typing in a text box): R starts and stops the microphone, S saves, N skips.
SHORTCUTS = """() => {
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT")) return;
    const visible = (selector, text) => [...document.querySelectorAll(selector)]
      .find((b) => b.offsetParent !== null && (!text || b.innerText.trim() === text));
    const key = event.key.toLowerCase();
    const button = key === "r" ? (visible("#mic button", "Stop") || visible("#mic button", "Record"))
      : key === "s" ? visible("#save-take") : key === "n" ? visible("#skip") : null;
    if (button) { button.click(); event.preventDefault(); }
  });
}"""


def load_plan(workspace: Path):
    from lora.studio.plan import Plan

    path = workspace / PLAN
    return Plan.from_dict(json.loads(path.read_text())) if path.is_file() else None


def make_plan(workspace: Path, sentences_text: str, terms_text: str, test_share: float, seed: int = 0):
    """The plan for the sentences typed or pasted on the page, saved (atomically) as the workspace's plan.json."""
    from lora.storage.atomic import write_bytes, write_json
    from lora.studio.plan import check_sentences, plan_prompts
    from lora.studio.tune import TERMS

    # typed text has no comments: a '#' is part of a sentence here
    lines = [(n, text) for n, line in enumerate(sentences_text.splitlines(), 1) if (text := line.strip())]
    sentences = check_sentences(lines, "your sentences")
    terms = [t.strip() for t in terms_text.splitlines() if t.strip()]
    plan = plan_prompts(sentences, terms, test_share=test_share, seed=seed)
    write_json(workspace / PLAN, plan.to_dict())
    terms_file = workspace / TERMS
    if terms:  # the job scores them (--terms): recall before and after, on the held-out recordings
        write_bytes(terms_file, ("\n".join(terms) + "\n").encode("utf-8"), what="terms")
    elif terms_file.exists():
        terms_file.unlink()
    return plan


def to_16k(recording) -> np.ndarray | None:
    """Gradio's microphone value ``(rate, int16 or float samples)`` as 16 kHz mono float."""
    from lora.data.audio import to_mono_16k

    if recording is None:
        return None
    rate, samples = recording
    samples = np.asarray(samples)
    if samples.dtype.kind == "i":
        samples = samples.astype(np.float32) / np.iinfo(samples.dtype).max
    return to_mono_16k(samples.astype(np.float32), int(rate), "the recording")


class Handlers:
    """What each button does, on the workspace's files only (the page passes text, numbers and audio, never paths)."""

    def __init__(self, workspace: Path):
        self.workspace = workspace

    @staticmethod
    def plan_table(plan):
        return [[p.id, p.part, p.source, p.text] for p in plan.prompts] if plan else []

    def prompt_view(self, plan, current: str | None):
        from lora.studio.takes import next_prompt, recorded

        if plan is None:
            return "Make a plan on the Prompts page first.", None
        done = recorded(self.workspace, plan)
        prompt = next((p for p in plan.prompts if p.id == current), None) or next_prompt(self.workspace, plan)
        if prompt is None:
            return f"All {len(plan.prompts)} prompts are recorded.", None
        return (f"**Prompt {plan.prompts.index(prompt) + 1} of {len(plan.prompts)}** ({len(done)} recorded; "
                f"{'held out' if prompt.part == 'test' else 'to train on'})\n\n# {prompt.text}"), prompt.id

    def on_plan(self, sentences, terms, share):
        from lora.errors import LoraError

        try:
            plan = make_plan(self.workspace, sentences, terms, float(share))
        except LoraError as exc:
            return f"error: {exc}", [], *self.prompt_view(load_plan(self.workspace), None)
        return plan.summary(), self.plan_table(plan), *self.prompt_view(plan, None)

    def on_save(self, recording, current):
        from lora.studio.takes import save_take

        plan = load_plan(self.workspace)
        prompt = next((p for p in plan.prompts if p.id == current), None) if plan else None
        if prompt is None:
            return "Make a plan on the Prompts page first.", *self.prompt_view(plan, None), None
        audio = to_16k(recording)
        if audio is None:
            return "Record the prompt first (the microphone button), then save.", *self.prompt_view(plan, current), None
        why = save_take(self.workspace, prompt, audio)
        if why:
            return f"Not saved: {why}", *self.prompt_view(plan, current), recording
        return f"Saved {prompt.id}.", *self.prompt_view(plan, None), None

    def on_skip(self, current):
        from lora.studio.takes import recorded

        plan = load_plan(self.workspace)
        if plan is None:
            return "Make a plan on the Prompts page first.", *self.prompt_view(plan, None)
        ids = [p.id for p in plan.prompts]
        later = ids[ids.index(current) + 1:] + ids if current in ids else ids
        done = set(recorded(self.workspace, plan))
        nxt = next((i for i in later if i not in done and i != current), current)
        return f"Skipped {current}.", *self.prompt_view(plan, nxt)

    def on_load(self):
        plan = load_plan(self.workspace)
        return (plan.summary() if plan else ""), self.plan_table(plan), *self.prompt_view(plan, None)


def tune_tab(gr, tuning) -> None:
    """The Tune page (inside the Blocks being built): the command, Start and Stop, the job's state every 2 s."""
    import shlex

    def view():
        return f"Start runs: `{shlex.join(tuning.command())}`", tuning.status()

    with gr.Tab("Tune"):
        gr.Markdown("The personal preset on your recordings (held-out prompts as its test set), as its own "
                    "process: the command below is what runs, and you can run it yourself.")
        command_md = gr.Markdown(view()[0], elem_id="tune-command")
        with gr.Row():
            start = gr.Button("Start tuning", variant="primary", elem_id="tune-start")
            stop = gr.Button("Stop", elem_id="tune-stop")
        status = gr.Markdown(tuning.status(), elem_id="tune-status")
        gr.Timer(2.0).tick(view, None, [command_md, status])
    start.click(lambda: (tuning.start(), tuning.status()), None, [command_md, status])
    stop.click(lambda: (tuning.stop(), tuning.status()), None, [command_md, status])


def review_tab(gr, workspace: Path) -> None:
    """The Review page: the latest finished run's held-out clips, filtered, each playable (lora.studio.review)."""
    from lora.studio import review
    from lora.studio.tune import RUN

    run = workspace / RUN

    def view(which):
        if not (run / "real_metrics.json").is_file():
            return "No finished run yet: tune on the Tune page first.", "", gr.update(choices=[], value=None), None
        rows = review.clips(run)
        first = rows[0] if rows else None
        return (review.summary(run), review.table_html(rows, which),
                gr.update(choices=[r["id"] for r in rows], value=first and first["id"]),
                str(first["audio"]) if first else None)

    def play(clip_id):
        if not clip_id or not (run / "real_metrics.json").is_file():
            return None
        return next((str(r["audio"]) for r in review.clips(run) if r["id"] == clip_id), None)

    with gr.Tab("Review"):
        refresh = gr.Button("Show the latest run", elem_id="review-refresh")
        which = gr.Radio(list(review.FILTERS), value="all", label="Clips")
        summary_md = gr.Markdown(elem_id="review-summary")
        table = gr.HTML(elem_id="review")
        clip = gr.Dropdown(label="Listen to a held-out clip", choices=[], elem_id="review-clip")
        audio = gr.Audio(type="filepath", interactive=False, label="The clip")
    refresh.click(view, [which], [summary_md, table, clip, audio])
    which.change(view, [which], [summary_md, table, clip, audio])
    clip.change(play, [clip], [audio])


def build(workspace: Path, tuning=None):
    """The pages for ``workspace``; ``tuning`` (:class:`lora.studio.tune.Tuning`) runs the job."""
    import gradio as gr

    from lora.studio.tune import Tuning

    h = Handlers(workspace)
    plan = load_plan(workspace)
    first_text, first_id = h.prompt_view(plan, None)
    with gr.Blocks(title="moonshine-lora studio", analytics_enabled=False) as demo:
        gr.Markdown("# moonshine-lora studio\nRecord your own prompts for tuning Moonshine on your voice and words.")
        current = gr.State(first_id)
        with gr.Tab("Prompts"):
            sentences = gr.Textbox(label="Your sentences, one per line", lines=10, elem_id="sentences")
            terms = gr.Textbox(label="Your terms (optional), one per line", lines=4, elem_id="terms")
            share = gr.Slider(0.1, 0.5, value=0.2, step=0.05, label="Share held out (whole sentences)")
            plan_button = gr.Button("Make the plan", elem_id="make-plan")
            plan_line = gr.Markdown(plan.summary() if plan else "", elem_id="plan-line")
            table = gr.Dataframe(h.plan_table(plan), headers=["id", "part", "source", "sentence"], interactive=False)
        with gr.Tab("Record"):
            prompt_md = gr.Markdown(first_text, elem_id="prompt")
            mic = gr.Audio(sources=["microphone"], type="numpy", label="Your take (play it back before saving)",
                           elem_id="mic")
            with gr.Row():
                save = gr.Button("Save take", variant="primary", elem_id="save-take")
                skip = gr.Button("Skip", elem_id="skip")
            status = gr.Markdown("", elem_id="take-status")
            gr.Markdown("Keys: **R** record / stop, **S** save, **N** skip.")
        tune_tab(gr, tuning or Tuning(workspace))
        review_tab(gr, workspace)
        plan_button.click(h.on_plan, [sentences, terms, share], [plan_line, table, prompt_md, current])
        save.click(h.on_save, [mic, current], [status, prompt_md, current, mic])
        skip.click(h.on_skip, [current], [status, prompt_md, current])
        demo.load(h.on_load, None, [plan_line, table, prompt_md, current])  # a reload resumes where recording stopped
    return demo
