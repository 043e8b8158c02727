"""Shared fixtures: a real Streamlit server and a real Chromium for the browser tests.

The browser tests need Debian's Chromium (``/usr/bin/chromium``) and the Python ``playwright``
package (in requirements.txt; Playwright's own browser downloads are never used). Without them the
tests marked ``browser`` are skipped with the command that installs Chromium, unless
``LFSSD_REQUIRE_BROWSER=1`` is set (CI sets it in ``.ci/run``), which turns the skip into a failure.
``LFSSD_CHROMIUM`` overrides the Chromium path.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

# The shipped assets (core.assets) stay off: tests rely on cold training and computing in places,
# and the app servers and CLI runs they start inherit this. tests/test_assets.py turns them on.
os.environ.setdefault("LFSSD_ASSETS", "0")

REPO = Path(__file__).resolve().parents[1]
INSTALL_CHROMIUM = "apt-get install -y chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
SERVER_START_TIMEOUT_S = 60
SERVER_STOP_TIMEOUT_S = 10


def chromium_path() -> str:
    return os.environ.get("LFSSD_CHROMIUM", "/usr/bin/chromium")


def browser_required() -> bool:
    return os.environ.get("LFSSD_REQUIRE_BROWSER", "") == "1"


def browser_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    path = chromium_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return f"Chromium not found at {path}; install it with: {INSTALL_CHROMIUM}"
    if importlib.util.find_spec("playwright") is None:
        return "the Python package 'playwright' is missing; install it with: pip install -r requirements.txt"
    return None


def _skip_or_fail(reason: str) -> None:
    if browser_required():
        pytest.fail(f"LFSSD_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    """Skip browser tests up front (before a server starts) when Chromium or Playwright is missing."""
    reason = browser_missing_reason()
    if reason is None or browser_required():
        return  # required: the browser fixture fails with the reason instead
    marker = pytest.mark.skip(reason=f"{reason} (LFSSD_REQUIRE_BROWSER=1 makes this a failure)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(marker)


# --- the Streamlit server -----------------------------------------------------------------------

@dataclass
class StreamlitServer:
    url: str
    port: int
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    cache_dir: Path | None = None  # its $LFSSD_CACHE_DIR

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        parts = []
        for name, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- server {name} (last {chars} chars) ---\n{text[-chars:]}")
        return "\n".join(parts)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _stop(process: subprocess.Popen) -> None:
    """Stop the server by its own PID: SIGTERM, then SIGKILL after a timeout."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def streamlit_server(tmp_path_factory):
    """``streamlit run app.py`` on a free port, with its own cache dir; yields a StreamlitServer."""
    workdir = tmp_path_factory.mktemp("streamlit")
    cache_dir = workdir / "cache"
    cache_dir.mkdir()
    port = _free_port()
    env = dict(os.environ, LFSSD_CACHE_DIR=str(cache_dir), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    # One torch thread unless told otherwise: on a 2-core machine shared with Chromium (and often
    # another pytest), two spinning intra-op threads made first-run training ~5x slower (8 s -> 40-60 s).
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "streamlit", "run", "app.py",
               "--server.headless", "true", "--server.port", str(port),
               "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false",
               # the tests must not react to edits of the sources while they run
               "--server.fileWatcherType", "none", "--server.runOnSave", "false"]
    stdout_path, stderr_path = workdir / "server.stdout", workdir / "server.stderr"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL)
    server = StreamlitServer(f"http://127.0.0.1:{port}/", port, process, stdout_path, stderr_path, cache_dir)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(port):
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with status {process.returncode} before answering "
                            f"/_stcore/health\n{server.log_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit (pid {process.pid}) did not answer /_stcore/health with 'ok' "
                            f"within {SERVER_START_TIMEOUT_S} s\n{server.log_tail()}", pytrace=False)
            time.sleep(0.2)
        yield server
    finally:
        _stop(process)


# --- the browser ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium():
    """One Chromium for the session (Debian's, through Playwright's sync API)."""
    reason = browser_missing_reason()
    if reason:
        _skip_or_fail(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            yield browser
        finally:
            browser.close()


RUN_COUNTER_JS = (Path(__file__).parent / "run_counter.js").read_text()


def app_context(browser):
    """A new browser context at 1280×800 (its own Streamlit session) that counts finished reruns
    in ``window.__lfssdRuns`` (``tests/run_counter.js``)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(RUN_COUNTER_JS)
    return context


@pytest.fixture
def browser_page(chromium):
    """A fresh page (own context, so its own Streamlit session) at 1280×800."""
    context = app_context(chromium)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """``<repo>/screenshots/`` (git-ignored)."""
    path = REPO / "screenshots"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache folder for every test that opens the app: the default model, its importances and
    its retrained reference are computed once per test run, then loaded."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two spinning intra-op torch threads on a loaded 2-core machine made training and sweeps
    up to 3x slower; page tests that train use one thread, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
