"""How long until the lesson opens, against a one-line Streamlit app, timed side by side.

Each trial starts a real ``streamlit run`` server (the one-line app, or ours on an **empty cache
folder**, so the first view comes from the shipped assets/ or would be trained), opens it in
Debian's Chromium, and stops the clock when the page is populated: the one-line app's text shown;
for ours, the lesson's first step with its heading, its numbers and its chart drawn. Trials
alternate between the two apps (so a busy moment of the machine hits both alike); the script prints
each trial, the medians and their ratio.

Usage: python scripts/startup_ratio.py [--trials 3] [--no-assets] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_LINE = 'import streamlit as st\nst.write("Hello from a one-line app")\n'
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
STEP_ONE_DRAWN = """() => {
  const chart = document.querySelector('svg[aria-label="test accuracy per digit"] rect');
  const heading = Array.from(document.querySelectorAll('h1, h2, h3')).some(h => h.textContent.includes('The model, and the digit to forget'));
  return Boolean(chart) && heading && document.body.innerText.includes('test images it is right');
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_populated(browser, script: Path, ready, env: dict, path: str = "") -> float:
    """Seconds from launching ``streamlit run script`` to ``ready(page)`` returning, on the page at
    ``path`` (the root by default)."""
    port = _free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        while True:
            try:
                page.goto(f"http://127.0.0.1:{port}/{path}", timeout=5_000)
                break
            except Exception:
                if time.perf_counter() - started > 120:
                    raise
                time.sleep(0.1)
        ready(page)
        seconds = time.perf_counter() - started
        page.close()
        return seconds
    finally:
        server.terminate()
        server.wait(timeout=10)


def launch(playwright):
    """Debian's Chromium (``$LFSSD_CHROMIUM`` elsewhere), never Playwright's download."""
    return playwright.chromium.launch(executable_path=os.environ.get("LFSSD_CHROMIUM", "/usr/bin/chromium"),
                                      args=CHROMIUM_ARGS)


def measure(trials: int = 3, assets: bool = True) -> dict:
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="lfssd-startup-"))
    one_line = folder / "one_line.py"
    one_line.write_text(ONE_LINE)
    base_env = dict(os.environ, HF_HUB_OFFLINE="1", LFSSD_ASSETS="1" if assets else "0")
    runs: dict[str, list[float]] = {"one_line": [], "lesson": []}
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            for trial in range(trials):
                runs["one_line"].append(time_to_populated(
                    browser, one_line, lambda p: p.get_by_text("Hello from a one-line app").wait_for(timeout=60_000),
                    base_env))
                env = dict(base_env, LFSSD_CACHE_DIR=tempfile.mkdtemp(prefix="lfssd-cold-"))  # an empty cache
                runs["lesson"].append(time_to_populated(
                    browser, ROOT / "app.py", lambda p: p.wait_for_function(STEP_ONE_DRAWN, timeout=300_000), env))
                print(f"trial {trial + 1}: one-line app {runs['one_line'][-1]:.2f} s, "
                      f"lesson step 1 {runs['lesson'][-1]:.2f} s", file=sys.stderr)
        finally:
            browser.close()
    one, ours = statistics.median(runs["one_line"]), statistics.median(runs["lesson"])
    return {"trials": trials, "assets": assets, "one_line_s": runs["one_line"], "lesson_s": runs["lesson"],
            "one_line_median_s": one, "lesson_median_s": ours, "ratio": ours / one, "goal": 2.5}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--no-assets", action="store_true", help="LFSSD_ASSETS=0: train as a machine without assets/")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.trials, not args.no_assets)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"one-line app: median {result['one_line_median_s']:.2f} s; lesson, step 1 from an empty cache"
              f"{'' if result['assets'] else ' (no assets)'}: median {result['lesson_median_s']:.2f} s; "
              f"ratio {result['ratio']:.2f} (goal ≤ {result['goal']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
