"""`make lab` in a real browser: headless Chromium opens the JupyterLab that the Makefile target starts,
double-clicks a jupytext `.py` notebook, checks that it opened as a notebook (not in the text editor),
runs all its cells and waits for a figure in an output area.

Run by `make test-browser` (which installs Chromium and playwright first); `make test` deselects it
(the `browser` marker). Every wait has a deadline; the Lab server and its kernels are ended whatever
happens. A screenshot of the page is saved in the test's temporary folder, passed or failed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ALKIT_CHROMIUM", "/usr/bin/chromium")
# Notebook (a) renders its two figures from the committed runs in about 15 s, writing only under
# notebooks/executed/ (ignored by git).
NOTEBOOK = "a_toy_vs_many_class.py"
# Without the background-networking flags Chromium waits on connections that this offline machine refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

SERVER_START_S = 120      # make lab (venv check included) until the server answers
PAGE_S = 60               # Lab's page, its file browser, the opened notebook
RUN_S = 240               # Run All Cells until every cell has run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fingerprint(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def log_tail(log: Path, n=3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def stop(proc: subprocess.Popen, timeout=15):
    """End `make lab` and everything it started: the kernels live in process groups of their own, so
    the server's descendants are collected first, then the make group is terminated, then killed."""
    import psutil   # ipykernel's dependency

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:
        p.kill()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@pytest.fixture
def lab(tmp_path):
    """`make lab` on a free port with a token; Lab's user settings and workspaces in a temporary folder,
    so that nothing of this machine's user masks the defaults that the Makefile writes. Autosave off
    (a user setting): running the notebook must not write its outputs into the repository's pair."""
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp_path / "user-settings"
    docmanager = settings / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True)
    (docmanager / "plugin.jupyterlab-settings").write_text('{"autosave": false}\n')
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    lab_args = (f"--no-browser --ServerApp.ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
                f"--IdentityProvider.token={token} --LabApp.news_url=None "
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    # make lab writes jupytext's default viewer into this environment's settings: a file left by an
    # earlier run must not stand in for it
    Path(sys.prefix, "share", "jupyter", "lab", "settings", "overrides.json").unlink(missing_ok=True)
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS={lab_args}"], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"make lab exited with {proc.returncode} before serving:\n{log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"make lab did not answer on {url} within {SERVER_START_S} s:\n{log_tail(log)}")
                time.sleep(0.5)
        yield url, token, log
    finally:
        stop(proc)


def test_double_clicked_py_notebook_runs_and_shows_a_figure(lab, tmp_path):
    # imported here, not at the top: `make test` collects this module without playwright installed
    sync_api = pytest.importorskip("playwright.sync_api", reason="make test-browser installs playwright")
    url, token, log = lab
    pair = [ROOT / "notebooks" / NOTEBOOK, (ROOT / "notebooks" / NOTEBOOK).with_suffix(".ipynb")]
    before = fingerprint(pair)
    shot = tmp_path / "lab.png"
    with sync_api.sync_playwright() as pw:
        # playwright gives the browser a fresh temporary profile (user data dir) and adds --headless
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                     timeout=PAGE_S * 1000)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(PAGE_S * 1000)
            try:
                drive_lab(sync_api, page, url, token)
            finally:
                print(f"lab log: {log}")
                with contextlib.suppress(sync_api.Error):   # a failed screenshot must not hide the failure
                    page.screenshot(path=shot)
                    print(f"screenshot: {shot}")
        finally:
            browser.close()
    assert fingerprint(pair) == before, f"running {NOTEBOOK} in Lab changed the repository's pair {pair}"


def drive_lab(sync_api, page, url, token):
    page.goto(f"{url}/lab?token={token}", timeout=PAGE_S * 1000)
    item = page.locator(".jp-DirListing-item").filter(
        has=page.locator(".jp-DirListing-itemText").get_by_text(NOTEBOOK, exact=True))
    try:
        item.wait_for(state="visible")
    except sync_api.TimeoutError:
        pytest.fail(f"{NOTEBOOK} did not appear in Lab's file browser within {PAGE_S} s")
    names = page.locator(".jp-DirListing-itemText").all_inner_texts()
    stem = NOTEBOOK.rsplit(".", 1)[0]
    listed = [n for n in names if n.rsplit(".", 1)[0] == stem]
    assert listed == [NOTEBOOK], f"each notebook must be listed once (its .py), the file browser shows {listed}"
    item.dblclick()

    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab").filter(has_text=NOTEBOOK)
    try:
        tab.wait_for(state="visible")
    except sync_api.TimeoutError:
        pytest.fail(f"double-clicking {NOTEBOOK} opened no tab within {PAGE_S} s")
    panel = page.locator(".jp-MainAreaWidget:not(.lm-mod-hidden)").filter(
        has=page.locator(".jp-Notebook, .jp-FileEditor"))
    try:
        panel.first.wait_for(state="visible")
    except sync_api.TimeoutError:
        pytest.fail(f"double-clicking {NOTEBOOK} showed neither a notebook nor an editor within {PAGE_S} s")
    if panel.locator(".jp-FileEditor").count():
        pytest.fail(f"double-clicking {NOTEBOOK} opened it in the text editor, not as a notebook: "
                    "jupytext's default viewer for Python files (make lab's overrides.json) is not in effect")
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    # a notebook panel shows one empty cell until the file is loaded: wait for the percent file's cells
    cells = sum(line.startswith("# %%") for line in (ROOT / "notebooks" / NOTEBOOK).read_text().splitlines())
    try:
        sync_api.expect(notebook.locator(".jp-Cell")).to_have_count(cells, timeout=PAGE_S * 1000)
    except AssertionError:
        pytest.fail(f"{NOTEBOOK} opened as a notebook with {notebook.locator('.jp-Cell').count()} cells, "
                    f"not its {cells} `# %%` cells, after {PAGE_S} s")
    images = notebook.locator(".jp-OutputArea-output img")
    assert images.count() == 0, "the notebook had figures before it ran (outputs loaded from the pair?)"
    # The kernel named in the file's header starts by itself. Run All before the page holds it clears
    # the cells' prompts and runs nothing (seen on a loaded machine), so wait for it, then make sure the
    # cells were queued, and ask again if not.
    try:
        sync_api.expect(page.locator("#jp-main-statusbar")).to_contain_text(
            re.compile(r"Python 3.*\|\s*Idle"), timeout=PAGE_S * 1000)
    except AssertionError:
        pytest.fail(f"{NOTEBOOK}'s kernel was not idle {PAGE_S} s after it opened "
                    f"(status bar: {page.locator('#jp-main-statusbar').inner_text()!r})")
    prompts = notebook.locator(".jp-CodeCell .jp-InputPrompt")
    for _ in range(3):
        page.locator(".lm-MenuBar-item").filter(has_text="Run").first.click()
        page.locator(".lm-Menu-item").filter(has_text="Run All Cells").first.click()
        try:
            sync_api.expect(prompts.first).not_to_have_text(re.compile(r"\[\s*\]:"), timeout=10_000)
            break
        except AssertionError:
            page.keyboard.press("Escape")
    else:
        pytest.fail(f"Run All Cells queued none of {NOTEBOOK}'s cells in three tries")

    error = notebook.locator("[data-mime-type='application/vnd.jupyter.error']")
    deadline = time.monotonic() + RUN_S
    while not all(re.fullmatch(r"\[\d+\]:", text.strip()) for text in prompts.all_inner_texts()):
        if error.count():
            pytest.fail(f"{NOTEBOOK} raised in Lab:\n{error.first.inner_text()[:2000]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{NOTEBOOK}'s cells had not all run {RUN_S} s after Run All Cells "
                        f"(prompts {prompts.all_inner_texts()})")
        page.wait_for_timeout(500)
    if error.count():
        pytest.fail(f"{NOTEBOOK} raised in Lab:\n{error.first.inner_text()[:2000]}")
    try:   # an output is rendered before its cell's prompt is numbered; allow a moment all the same
        images.first.wait_for(state="visible", timeout=5000)
    except sync_api.TimeoutError:
        pytest.fail(f"every cell of {NOTEBOOK} ran, and no figure appeared in its outputs "
                    "(a kernel without matplotlib's inline backend, e.g. MPLBACKEND=Agg, shows none)")
    images.first.scroll_into_view_if_needed()
    box = images.first.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100, f"the figure is not drawn at a visible size: {box}"
