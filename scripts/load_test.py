"""Load test: N browser sessions move the α slider against one local server for a while.

    python scripts/load_test.py [--sessions 10] [--seconds 60] [--json]

Starts ``streamlit run app.py`` (its own cache folder unless LFSSD_CACHE_DIR is set), waits for
the default view, then drives N Chromium contexts at once (Debian's /usr/bin/chromium through
Playwright's async API). Each session presses ArrowRight/ArrowLeft on the α slider at random and
times key press → that rerun finished (Streamlit's script state back to idle, nothing stale).
Reports the updates, the errors (exceptions shown, reruns that never finished, a server that
stopped answering) and the p50/p95 update latency. Exit status 1 when there was any error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LFSSD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_COUNTER = """() => {
  if (window.__runs !== undefined) return;
  window.__runs = 0;
  new MutationObserver(r => { window.__runs += r.length; }).observe(
    document.querySelector('[data-testid="stApp"]'), {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
IDLE_AFTER = """(before) => {
  const app = document.querySelector('[data-testid="stApp"]');
  return window.__runs > before && app.getAttribute('data-test-script-state') === 'notRunning'
      && document.querySelectorAll('[data-stale="true"]').length === 0;
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.read() == b"ok"
    except OSError:
        return False


def start_server(port: int) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.setdefault("LFSSD_CACHE_DIR", tempfile.mkdtemp(prefix="lfssd-load-"))
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _healthy(port):
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the streamlit server did not start")
        time.sleep(0.3)
    return server


async def _direction(slider, rng: random.Random) -> str:
    """A random step that moves the slider (at either end, the only way it can go)."""
    now, low, high = (float(await slider.get_attribute(a)) for a in ("aria-valuenow", "aria-valuemin", "aria-valuemax"))
    if now <= low:
        return "ArrowRight"
    if now >= high:
        return "ArrowLeft"
    return rng.choice(["ArrowRight", "ArrowLeft"])


async def session(browser, url: str, seconds: float, seed: int, out: dict) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    rng = random.Random(seed)
    try:
        await page.goto(url)
        await page.get_by_role("slider", name="α").wait_for(timeout=180_000)
        await page.wait_for_function(IDLE_AFTER.replace("window.__runs > before && ", ""), arg=0, timeout=180_000)
        await page.evaluate(RUN_COUNTER)
        slider = page.get_by_role("slider", name="α")
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            before = await page.evaluate("() => window.__runs")
            await slider.focus()
            started = time.perf_counter()
            await page.keyboard.press(await _direction(slider, rng))
            try:
                await page.wait_for_function(IDLE_AFTER, arg=before, timeout=30_000)
                out["latencies"].append(time.perf_counter() - started)
            except Exception as exc:  # a rerun that never finished (or a dead page) is an error
                out["errors"].append(f"session {seed}: no finished rerun ({type(exc).__name__})")
            if await page.get_by_test_id("stException").count():
                out["errors"].append(f"session {seed}: the app shows an exception")
                break
            await asyncio.sleep(rng.uniform(0.05, 0.3))  # a person's pace between moves
    except Exception as exc:
        out["errors"].append(f"session {seed}: {type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        await context.close()


async def drive(url: str, sessions: int, seconds: float) -> dict:
    from playwright.async_api import async_playwright

    out = {"latencies": [], "errors": []}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            await asyncio.gather(*(session(browser, url, seconds, i, out) for i in range(sessions)))
        finally:
            await browser.close()
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    port = _free_port()
    server = start_server(port)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
        warm = asyncio.run(drive(f"http://127.0.0.1:{port}/", 1, 0))  # trains/loads the default once
        result = asyncio.run(drive(f"http://127.0.0.1:{port}/", args.sessions, args.seconds))
        result["errors"] = warm["errors"] + result["errors"]
        if not _healthy(port):
            result["errors"].append("the server stopped answering /_stcore/health")
    finally:
        server.terminate()
        server.wait(timeout=15)
    lat = result["latencies"]
    report = {"sessions": args.sessions, "seconds": args.seconds, "updates": len(lat), "errors": len(result["errors"]),
              "error_messages": result["errors"][:20],
              "p50_s": round(statistics.median(lat), 3) if lat else None,
              "p95_s": round(percentile(lat, 0.95), 3) if lat else None,
              "max_s": round(max(lat), 3) if lat else None}
    print(json.dumps(report, indent=None if args.json else 2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
