"""The studio in a real browser: Debian's Chromium driven by Playwright, its microphone fed from WAV files
(``--use-file-for-fake-audio-capture``). Plan the prompts, record one with speech (saved as the folder corpus),
record one with silence by the keyboard shortcuts (refused on screen, nothing saved). Screenshots of each page land
in the test's folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.espeak]  # a server, a browser and espeak-ng: about 30 s
SENTENCES = [f"Sentence number {i} about the weather." for i in range(7)] + ["Restart the kubectl pod at noon.",
                                                                            "The kubectl logs were empty."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _studio(workspace: Path, *flags: str):
    """The studio serving ``workspace`` on a free port, stopped (and its job with it) at the end."""
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; scripts/setup.sh does as root)")
    pytest.importorskip("playwright")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "lora.studio", "--workspace", str(workspace), "--port", str(port),
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(proc.stdout.read()[-3000:])
            time.sleep(0.5)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=90)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("workspace")
    with _studio(workspace) as url:
        yield url, workspace


def _microphone(folder: Path, name: str, audio: np.ndarray) -> Path:
    """What the fake microphone plays: half a second of silence, ``audio``, then silence to 6 s."""
    path = folder / f"{name}.wav"
    lead = np.zeros(8000, np.float32)
    sf.write(path, np.concatenate([lead, audio, np.zeros(max(0, 96000 - 8000 - audio.size), np.float32)]), 16000)
    return path


def _browser(playwright, microphone: Path):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}"])


def _record(page, seconds: float) -> None:
    page.locator("#mic button", has_text="Record").first.click()
    time.sleep(seconds)
    page.locator("#mic button", has_text="Stop").first.click()
    time.sleep(1.5)  # the take goes from the page to the server
    page.click("#save-take")


def test_plan_then_record_a_take_and_see_a_silent_one_refused(studio, tmp_path):
    from playwright.sync_api import sync_playwright

    from lora.data.synth import VOICES, speak

    url, workspace = studio
    speech = _microphone(tmp_path, "speech", speak("Sentence number zero about the weather.", VOICES[4]))
    silence = _microphone(tmp_path, "silence", np.zeros(0, np.float32))
    with sync_playwright() as p:
        browser = _browser(p, speech)
        page = browser.new_page()
        page.goto(url)
        page.fill("#sentences textarea", "\n".join(SENTENCES))
        page.fill("#terms textarea", "kubectl")
        page.click("#make-plan")
        page.wait_for_function("document.querySelector('#plan-line').innerText.includes('held out')", timeout=30000)
        assert "9 prompts" in page.inner_text("#plan-line")
        assert "every one of 1 terms is in a held-out sentence" in page.inner_text("#plan-line")
        page.screenshot(path=str(tmp_path / "prompts.png"), full_page=True)
        page.get_by_role("tab", name="Record").click()
        page.wait_for_selector("text=Prompt 1 of 9")
        page.screenshot(path=str(tmp_path / "record.png"), full_page=True)
        _record(page, 4.0)
        page.wait_for_function("document.querySelector('#take-status').innerText.includes('Saved')", timeout=30000)
        assert "Prompt 2 of 9 (1 recorded" in page.inner_text("#prompt")
        page.screenshot(path=str(tmp_path / "saved.png"), full_page=True)
        browser.close()
    first = sorted((workspace / "recordings").rglob("*.wav"))
    assert len(first) == 1 and first[0].with_suffix(".txt").read_text().strip() in SENTENCES
    audio, rate = sf.read(first[0])
    assert rate == 16000 and 3.5 < audio.size / rate < 4.5 and np.abs(audio).max() > 0.05
    with sync_playwright() as p:  # a new browser: its microphone now records silence; the plan is where it was
        browser = _browser(p, silence)
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Record").click()
        page.wait_for_selector("text=Prompt 2 of 9")
        page.keyboard.press("r")  # the keys: R starts and stops the microphone, S saves
        time.sleep(3.0)
        page.keyboard.press("r")
        time.sleep(1.5)
        page.keyboard.press("s")
        page.wait_for_function("document.querySelector('#take-status').innerText.includes('Not saved')",
                               timeout=30000)
        assert "Not saved: silent" in page.inner_text("#take-status")
        assert "Prompt 2 of 9" in page.inner_text("#prompt")
        page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)
        browser.close()
    assert sorted((workspace / "recordings").rglob("*.wav")) == first
    out = os.environ.get("STUDIO_SCREENSHOTS")  # STUDIO_SCREENSHOTS=docs/studio: the pictures in docs/studio.md
    if out:
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, Path(out) / png.name)


def test_tune_runs_the_job_on_the_recordings_and_shows_its_command_progress_and_result(tiny_dir, tmp_path):
    """Recordings made (here in code: the browser part is above), the Tune page starts the personal preset on them
    as its own process and shows the command, then the result; the run folder is the job's."""
    from playwright.sync_api import sync_playwright

    from lora.data.synth import VOICES, speak
    from lora.storage.atomic import write_json
    from lora.studio.plan import plan_prompts
    from lora.studio.takes import save_take

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    plan = plan_prompts(SENTENCES, seed=0)
    write_json(workspace / "plan.json", plan.to_dict())
    pad = np.zeros(4800, np.float32)
    for i, prompt in enumerate(plan.prompts):
        assert save_take(workspace, prompt, np.concatenate([pad, speak(prompt.text, VOICES[i % 3]), pad])) is None
    flags = ["--model", str(tiny_dir), "--job-flag=--max-steps=4", "--job-flag=--eval-every=2",
             "--job-flag=--canary=none", "--job-flag=--replay=none", "--job-flag=--device=cpu"]
    with _studio(workspace, *flags) as url, sync_playwright() as p:
        browser = _browser(p, _microphone(tmp_path, "silence", np.zeros(0, np.float32)))
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Tune").click()
        assert "--preset personal" in page.inner_text("#tune-command")
        page.click("#tune-start")
        page.wait_for_function("document.querySelector('#tune-status').innerText.includes('finished')",
                               timeout=240000)
        text = page.inner_text("#tune-status")
        page.screenshot(path=str(tmp_path / "tune.png"), full_page=True)
        page.get_by_role("tab", name="Review").click()
        page.click("#review-refresh")
        page.wait_for_function("document.querySelector('#review') && "
                               "document.querySelector('#review').innerText.includes('held-out clips')", timeout=30000)
        review = page.inner_text("#review")
        summary = page.inner_text("#review-summary")
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
        browser.close()
    assert "baseline WER" in text and "train: step 4/4" in text, text
    held_out = [p.text for p in plan.part("test")]
    assert all(s in review for s in held_out) and f"{len(held_out)} of {len(held_out)} held-out clips" in review
    assert "Held-out WER" in summary and "What it cost" in summary
    assert (workspace / "run" / "real_metrics.json").is_file()
    out = os.environ.get("STUDIO_SCREENSHOTS")
    if out:
        for name in ("tune.png", "review.png"):
            shutil.copy(tmp_path / name, Path(out) / name)
