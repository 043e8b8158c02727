"""How fast is the app? Three measurements, one run.

0. Cold start: a real ``streamlit run`` server on an empty cache folder, Debian's Chromium opens
   its Forget page, seconds until the default view is populated (the D_f card shown; the model trains first).
1. Server time: AppTest reruns of the whole app after setting α (importances cached).
2. Browser time: from an ArrowRight key press on the α slider (one step of its log scale) to the
   moment the "parameters dampened" card shows a new element count, against a real server.
   It starts at α = 2, where every step changes that count. The α-dependent part of the Forget
   page is a fragment, so this is a fragment rerun.

Usage: python scripts/measure_app_speed.py [--moves 10] [--json]
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 3.5, 2.0]


def server_times(moves: int) -> list[float]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).switch_page("views/forget.py")
    at.run()  # trains / loads the model and the importances
    times = []
    for alpha in (ALPHAS * 3)[:moves]:
        at.select_slider(key="alpha_slider").set_value(alpha)
        started = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - started)
        assert not at.exception, at.exception
    return times


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cold_start_seconds() -> float:
    """Server start on an empty cache → the populated default view (the Forget page) in the browser."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT))
    from scripts.startup_ratio import launch, time_to_populated

    env = dict(os.environ, LFSSD_CACHE_DIR=tempfile.mkdtemp(prefix="lfssd-cold-"), HF_HUB_OFFLINE="1")
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            return time_to_populated(browser, ROOT / "app.py", lambda page: page.locator(
                '[data-testid="stMetric"]', has_text="D_f accuracy").wait_for(timeout=300_000), env, "forget")
        finally:
            browser.close()


def browser_times(moves: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/?alpha=2")
            metric = page.locator('[data-testid="stMetric"]', has_text="parameters dampened").locator('[data-testid="stMetricDelta"]')
            metric.wait_for(timeout=120_000)
            slider = page.get_by_role("slider", name="α").first
            times = []
            for _ in range(moves):
                before = metric.inner_text()
                slider.focus()
                started = time.perf_counter()
                page.keyboard.press("ArrowRight")
                deadline = started + 30
                while metric.inner_text() == before and time.perf_counter() < deadline:
                    time.sleep(0.01)
                times.append(time.perf_counter() - started)
            browser.close()
        return times
    finally:
        server.terminate()
        server.wait(timeout=10)


def summary(times: list[float]) -> dict:
    return {"n": len(times), "median_s": statistics.median(times), "max_s": max(times), "min_s": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LFSSD_CACHE_DIR", tempfile.mkdtemp(prefix="lfssd-speed-"))
    result = {"cold_start_to_populated_default_s": round(cold_start_seconds(), 2),
              "apptest_rerun": summary(server_times(args.moves)),
              "browser_key_to_metric": summary(browser_times(args.moves))}
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
