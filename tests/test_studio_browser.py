"""The studio in a real browser: Debian's Chromium driven by Playwright, its microphone fed from WAV files
(``--use-file-for-fake-audio-capture``). Plan the prompts, record one with speech (saved as the folder corpus),
record one with silence by the keyboard shortcuts (refused on screen, nothing saved). Screenshots of each page land
in the test's folder."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; scripts/setup.sh does as root)")
    pytest.importorskip("playwright")
    workspace, port = tmp_path_factory.mktemp("workspace"), _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "lora.studio", "--workspace", str(workspace), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(proc.stdout.read()[-3000:])
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/", workspace
    proc.terminate()
    proc.wait(timeout=30)


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
