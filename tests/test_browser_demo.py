"""Notebook 07's demo in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

What a learner does with `make lab`: open notebooks/07_interactive_demo.ipynb, run all cells, pick an
excerpt in the dropdown; the probability chart and the instruments' names must appear. Widget events
never fire under nbval, so this is the only test of the widgets' wiring (irmas_lib/widgets.py).

Setup: JupyterLab (the `course` extra), Playwright for Python (the `test` extra) and a Chromium binary:
Debian's `chromium` (`make unit` installs it, .ci/ensure_chromium.sh), `chromium-browser`, or the path
in $IRMAS_CHROMIUM. Playwright's own browser download is never used. Without them the test skips.

The notebook runs in CI's reduced setting (IRMAS_QUICK=1), exactly as under nbval: the same model
(the notebooks' own quick one, trained once when missing) and the same files in runs/notebook07.
JupyterLab's autosave is off and the test checks that the browser never asked to save a file; the
server's settings, workspaces, checkpoints and runtime files live in the test's temporary folder, where
the screenshots go.
"""
from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from irmas_lib.widgets import INSTRUMENT_NAMES

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/07_interactive_demo.ipynb"
RUN_ALL_TIMEOUT_S = 15 * 60   # a fresh clone renders mini-IRMAS and trains the 6-epoch model first
WIDGET_TIMEOUT_S = 60         # one prediction, one figure


def chromium_path() -> str | None:
    """$IRMAS_CHROMIUM, or Debian's `chromium`, or Ubuntu's `chromium-browser` on PATH."""
    explicit = os.environ.get("IRMAS_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def stereo_tone_wav() -> bytes:
    """4 s of a 440-Hz tone, stereo, 48 kHz, 16-bit: what a learner's own file may look like."""
    import numpy as np
    import soundfile as sf

    t = np.arange(4 * 48000) / 48000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone, tone], axis=1), 48000, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_lab_settings(settings_dir: Path) -> None:
    """User settings for this server only: no autosave (the repository's notebook stays untouched),
    every cell in the DOM (no windowing, so outputs above the viewport can be read), no news or
    update checks (no network, no pop-ups)."""
    files = {
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": '{"autosave": false}',
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            '{"fetchNews": "false", "checkForUpdates": false}',
    }
    for name, text in files.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture()
def jupyter_lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 (free port, random token) serving the repository; yields
    (base URL, token) and stops the server and its kernels afterwards."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (the `course` extra: make unit installs it)")
    token = secrets.token_hex(16)
    port = free_port()
    home = tmp_path / "jupyter"
    env = dict(os.environ,
               IRMAS_QUICK="1",                                   # CI's reduced setting, as under nbval
               JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               JUPYTER_PLATFORM_DIRS="1",
               PYTHONUNBUFFERED="1")
    env.pop("JUPYTER_TOKEN", None)
    write_lab_settings(home / "settings")
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", "--allow-root", "--ServerApp.terminals_enabled=False",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}",
         # opening a notebook makes a checkpoint: into the temporary folder, not notebooks/.ipynb_checkpoints
         f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited ({server.returncode}):\n{(tmp_path / 'jupyterlab.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within 120 s:\n{(tmp_path / 'jupyterlab.log').read_text()}")
            time.sleep(0.5)
        yield base, token
    finally:
        # Kernels run in sessions of their own (jupyter_client starts them with start_new_session): shut
        # them down through the server first, then stop the server's process group.
        try:
            with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=5) as response:
                kernels = json.loads(response.read())
            for kernel in kernels:
                request = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(request, timeout=30).close()
        except OSError:
            pass    # the server is already gone: its kernels' parent poller ends them
        for stop in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(server.pid, stop)
            except ProcessLookupError:
                break
            try:
                server.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


@pytest.fixture()
def browser():
    """Headless Chromium (the system's, never a Playwright download), or skip."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright for Python is not installed (the `test` extra: make unit installs it)")
    executable = chromium_path()
    if executable is None:
        pytest.skip(f"IRMAS_CHROMIUM={os.environ['IRMAS_CHROMIUM']} is not an executable" if os.environ.get("IRMAS_CHROMIUM")
                    else "Chromium is not installed (Debian: apt-get install chromium; `make unit` installs it "
                         "through .ci/ensure_chromium.sh), or point IRMAS_CHROMIUM at a Chromium binary")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def test_demo_widgets_in_jupyterlab(browser, jupyter_lab, tmp_path):  # browser first: a skip starts no server
    base, token = jupyter_lab
    checkpoints = REPO / "notebooks" / ".ipynb_checkpoints"
    had_checkpoints = checkpoints.exists()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    writes: list[str] = []  # requests that would change a file in the repository (a save, a rename...)
    page.on("request", lambda request: "/api/contents" in request.url and request.method in ("PUT", "PATCH", "DELETE")
            and writes.append(f"{request.method} {request.url.split('?')[0]}"))
    try:
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
        page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        # the kernel is up when the status bar says Idle
        page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=120_000)

        # Run ▸ Run All Cells, as a learner would
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()

        # the last cell shows the demo: a dropdown (a <select>) in a widget box
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
        dropdown = notebook.locator(".widget-dropdown select")
        dropdown.wait_for(state="visible", timeout=RUN_ALL_TIMEOUT_S * 1000)
        page.wait_for_function(  # every cell has finished ([*] prompts gone)
            "() => ![...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*'))",
            timeout=RUN_ALL_TIMEOUT_S * 1000)
        outputs = notebook.locator(".jp-OutputArea-output")
        all_output = "\n".join(outputs.all_inner_texts())
        page.screenshot(path=str(tmp_path / "01_run_all.png"))
        assert "Traceback" not in all_output and "Error displaying widget" not in all_output, all_output[-3000:]

        # The dropdown's labels: relative path and the true instruments (ipywidgets writes them with
        # non-breaking spaces). Section 1 printed the excerpt the model hears well and what it found there
        # at the same threshold (0.6): pick that one, and the widget must say the same. Should the
        # notebook's wording change, the first excerpt is picked and only the widget's own output checked.
        labels = [text.replace("\xa0", " ") for text in
                  dropdown.evaluate("select => [...select.options].map(option => option.textContent)")]
        assert labels and all(re.search(r"\.wav  \(.+\)$", text) for text in labels), labels[:5]
        printed = re.search(r"^(?P<name>.+\.wav): [\d.]+ s, \d+ windows\s*\n\s*truth: .*\n\s*present: (?P<present>.*)$",
                            all_output, re.MULTILINE)
        if printed:
            excerpt, present = printed["name"], printed["present"].strip()
            label = next((text for text in labels if excerpt in text), None)
            assert label is not None, f"{excerpt!r} is not among the dropdown's {len(labels)} options: {labels[:8]!r}"
        else:
            label, present = labels[0], None
            excerpt = re.match(r"(.*/)?(?P<name>[^/]+\.wav)  \(", label)["name"]
        dropdown.select_option(label=label)

        demo = notebook.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-dropdown")).last
        chart = demo.locator(".widget-output img")
        chart.wait_for(state="visible", timeout=WIDGET_TIMEOUT_S * 1000)
        summary = demo.locator(".widget-html-content")
        summary.filter(has_text="present:").wait_for(timeout=WIDGET_TIMEOUT_S * 1000)
        demo.scroll_into_view_if_needed()
        demo.screenshot(path=str(tmp_path / "02_demo.png"))
        page.screenshot(path=str(tmp_path / "03_page.png"))

        # the chart is a real image; the summary names the excerpt, the same instruments as section 1
        # and the true ones, spelled out
        size = chart.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size[0] > 200 and size[1] > 100, size
        text = summary.inner_text()
        assert excerpt in text, text
        found = re.search(r"present: (.*)$", text, re.MULTILINE)[1].strip()
        assert present is None or found == present, (found, present)
        names = re.findall(r"([a-z][a-z ]*[a-z]) \(\d\.\d\d\)", found)
        assert (names or found == "none") and set(names) <= set(INSTRUMENT_NAMES), found
        truth = re.search(r"truth: (.*)$", text, re.MULTILINE)[1].strip()
        assert set(truth.split(", ")) <= set(INSTRUMENT_NAMES) and label.endswith(f"  ({truth})"), (truth, label)
        # the player (hidden before) got the clip
        assert demo.locator("audio").is_visible() and demo.locator("audio").evaluate("audio => audio.src.length") > 0

        # the threshold slider: type 1 into its readout; nothing is above 1 (p > t), the chart is redrawn
        first_chart = chart.get_attribute("src")
        readout = demo.locator(".widget-readout")
        readout.click()
        readout.fill("1")
        readout.press("Enter")
        summary.filter(has_text="present: none").wait_for(timeout=WIDGET_TIMEOUT_S * 1000)
        page.wait_for_function("([img, before]) => img.isConnected === false || img.src !== before",
                               arg=[chart.element_handle(), first_chart], timeout=WIDGET_TIMEOUT_S * 1000)
        chart.wait_for(state="visible", timeout=WIDGET_TIMEOUT_S * 1000)

        # an upload of one's own (any name, rate and channel count) and a file that is not audio
        def upload(name: str, content: bytes) -> None:   # the button opens a file chooser, as for a learner
            with page.expect_file_chooser() as chooser:
                demo.locator(".widget-upload").click()
            chooser.value.set_files(files=[{"name": name, "mimeType": "audio/wav", "buffer": content}])

        upload("my <recording>.wav", stereo_tone_wav())
        summary.filter(has_text="my <recording>.wav").wait_for(timeout=WIDGET_TIMEOUT_S * 1000)
        assert "present: none" in summary.inner_text()          # the slider still says 1
        assert dropdown.evaluate("select => select.selectedIndex") == -1  # the list names no clip now
        upload("notes.wav", b"not audio")
        summary.filter(has_text="cannot decode audio").wait_for(timeout=WIDGET_TIMEOUT_S * 1000)
        assert "notes.wav" in summary.inner_text() and chart.count() == 0 and not demo.locator("audio").is_visible()
        page.screenshot(path=str(tmp_path / "04_bad_upload.png"))
    finally:
        (tmp_path / "console_errors.txt").write_text("\n".join(console_errors), encoding="utf-8")
        page.close()
        # autosave is off and nothing was saved: the repository's notebook is as it was (checked through
        # the requests, not the file, which another editor may be changing meanwhile)
        assert not writes, f"the browser run wrote into the repository: {writes}"
        assert had_checkpoints or not checkpoints.exists(), f"the browser run left {checkpoints}"
