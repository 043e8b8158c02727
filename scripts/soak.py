"""A long soak: the model-based random walk of ``tests/walk.py`` for as many seeds and steps as you
like, against a fresh ``streamlit run app.py`` in Debian's Chromium.

    python scripts/soak.py --seeds 1-10 --steps 500 [--minutes 60] [--cache-dir DIR]

Prints one line per seed (steps, seconds, the first broken invariant if any) and exits 1 if any
walk broke one; screenshots of failures go to ``screenshots/``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    return seeds


def main(argv: list[str] | None = None) -> int:
    from tests.conftest import CHROMIUM_ARGS, _free_port, _healthy, _stop, chromium_path
    from tests.walk import Engine, Walk, WalkFailure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-5", help="e.g. 1-10 or 3,7")
    parser.add_argument("--steps", type=int, default=300, help="steps per seed")
    parser.add_argument("--minutes", type=float, default=None, help="stop starting new steps after this long")
    parser.add_argument("--cache-dir", default=None, help="the server's cache (default: a new temporary folder)")
    args = parser.parse_args(argv)
    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="lfssd-soak-"))
    port = _free_port()
    env = dict(os.environ, LFSSD_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    log = open(cache / "server.log", "ab")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              cwd=REPO, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = None if args.minutes is None else time.monotonic() + args.minutes * 60
    failed = 0
    shots = REPO / "screenshots"
    shots.mkdir(exist_ok=True)
    try:
        while not _healthy(port):
            if server.poll() is not None:
                print(f"error: the server exited ({server.returncode}); see {cache / 'server.log'}", file=sys.stderr)
                return 2
            time.sleep(0.2)
        from playwright.sync_api import sync_playwright

        engine = Engine(cache)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
            for seed in _seeds(args.seeds):
                if deadline is not None and time.monotonic() > deadline:
                    break
                walk = Walk(browser, f"http://127.0.0.1:{port}/", engine, seed, shots)
                started = time.monotonic()
                try:
                    taken = walk.run(args.steps, deadline)
                    print(f"seed {seed}: {taken} steps in {time.monotonic() - started:.0f} s, every invariant held",
                          flush=True)
                except WalkFailure as exc:
                    failed += 1
                    print(f"seed {seed}: BROKEN after {time.monotonic() - started:.0f} s\n{exc}", flush=True)
            browser.close()
    finally:
        _stop(server)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
