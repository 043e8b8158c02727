"""The dependency lock: ``requirements.in`` (direct dependencies, by hand) → ``requirements.txt``
(every installed package but pip pinned with ==, transitive ones and setuptools included).

    python scripts/lock.py check      # this interpreter's `pip freeze` equals the lock, nothing more
    python scripts/lock.py upgrade    # fresh venv from requirements.in at the newest versions,
                                      # the full test suite there, and only if it passes, a new lock

``upgrade`` is how the lock moves forward on purpose: the new requirements.txt is then a commit of
its own, with the versions it changed. ``--no-test`` writes the lock without running the suite
(only for a lock you test yourself); ``--keep`` keeps the venv and prints its path.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.txt"
DIRECT = REPO / "requirements.in"
HEADER = """\
# The lock: every package the app, the tests and CI install, pinned (transitive ones included).
# Generated from requirements.in by `python scripts/lock.py upgrade` (a fresh venv at the newest
# versions, the test suite run there). Do not edit by hand; `python scripts/lock.py check` verifies
# that an environment is exactly this lock.
"""


def canonical(name: str) -> str:
    """PEP 503 name: case, '-', '_' and '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(text: str) -> dict[str, tuple[str, str]]:
    """{canonical name: (name as written, version)} of ``name==version`` lines; comments skipped.
    Anything else (a range, a URL, an editable install) is an error: a lock pins."""
    pins = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;=<>!~]+)", line)
        if match is None:
            raise ValueError(f"line {number}: '{raw.strip()}' is not a name==version pin")
        pins[canonical(match.group(1))] = (match.group(1), match.group(2))
    return pins


def differences(installed: dict[str, tuple[str, str]], lock: dict[str, tuple[str, str]]) -> list[str]:
    """Every way ``installed`` (a pip freeze) differs from ``lock``, one line each; [] when equal."""
    lines = []
    for key in sorted(set(lock) | set(installed)):
        if key not in installed:
            lines.append(f"missing: {lock[key][0]}=={lock[key][1]} is locked but not installed")
        elif key not in lock:
            lines.append(f"extra: {installed[key][0]}=={installed[key][1]} is installed but not in the lock")
        elif installed[key][1] != lock[key][1]:
            lines.append(f"version: {lock[key][0]} is {installed[key][1]}, the lock says {lock[key][1]}")
    return lines


def freeze(python: str) -> str:
    """``pip freeze --all`` of an interpreter, less pip itself (the installer, not a dependency):
    setuptools is locked too, since torch requires it at run time."""
    out = subprocess.run([python, "-m", "pip", "freeze", "--all"], check=True, capture_output=True, text=True).stdout
    return "".join(line + "\n" for line in out.splitlines() if canonical(line.partition("==")[0]) != "pip")


def check(python: str = sys.executable) -> int:
    problems = differences(parse_pins(freeze(python)), parse_pins(LOCK.read_text()))
    for line in problems:
        print(line)
    if problems:
        print(f"the environment of {python} is not the lock ({len(problems)} difference(s)); "
              "install it into a new venv: pip install -r requirements.txt")
        return 1
    print(f"the environment of {python} is exactly the lock ({len(parse_pins(LOCK.read_text()))} packages)")
    return 0


def upgrade(run_tests: bool, keep: bool) -> int:
    folder = Path(tempfile.mkdtemp(prefix="lfssd-lock-"))
    venv = folder / "venv"
    python = str(venv / "bin" / "python")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        started = time.perf_counter()
        subprocess.run([python, "-m", "pip", "install", "-q", "-r", str(DIRECT)], check=True)
        print(f"installed requirements.in in {time.perf_counter() - started:.0f} s")
        frozen = freeze(python)
        new = parse_pins(frozen)
        if run_tests:
            env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                       VIRTUAL_ENV=str(venv))
            tests = subprocess.run([python, "-m", "pytest"], cwd=REPO, env=env)
            if tests.returncode != 0:
                print(f"the suite failed on the newest versions (exit {tests.returncode}); the lock is unchanged")
                keep = True
                return 1
        old = parse_pins(LOCK.read_text()) if LOCK.is_file() else {}
        for line in differences(new, old):
            print(line.replace("installed but not in the lock", "new").replace("locked but not installed", "gone"))
        LOCK.write_text(HEADER + "".join(f"{name}=={version}\n" for name, version in
                                         sorted(new.values(), key=lambda nv: canonical(nv[0]))))
        print(f"wrote {LOCK.relative_to(REPO)}: {len(new)} packages" + ("" if run_tests else " (suite NOT run)"))
        return 0
    finally:
        if keep:
            print(f"venv kept: {venv}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="this interpreter's pip freeze equals requirements.txt")
    up = sub.add_parser("upgrade", help="rebuild the lock from requirements.in at the newest versions, tested")
    up.add_argument("--no-test", dest="run_tests", action="store_false", help="write the lock without running the suite")
    up.add_argument("--keep", action="store_true", help="keep the temporary venv")
    args = parser.parse_args(argv)
    try:
        return check() if args.command == "check" else upgrade(args.run_tests, args.keep)
    except (ValueError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
