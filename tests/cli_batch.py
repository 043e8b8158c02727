"""Run many ``python -m core …`` command lines in one real subprocess.

Each command line runs exactly as ``python -m core`` runs it (``runpy.run_module("core",
run_name="__main__")``, which executes ``core/__main__.py`` afresh with ``sys.argv`` set), so the
CLI's own argument parsing, error handling and exit status are what is tested. Sharing one
interpreter saves torch's and scikit-learn's start-up (5–10 s a process on a busy two-core
machine) and keeps the trained digits model in memory between runs.

Results stream to a JSON-lines file, one line per finished command line, so a hard crash (a
segfault in a decoder) still leaves the earlier results and shows which command line died.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
import torch
torch.set_num_threads(1)
command_lines, results = json.load(open(sys.argv[1])), sys.argv[2]
for args in command_lines:
    out, err, code = io.StringIO(), io.StringIO(), None
    sys.argv = ["python -m core", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("core", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = "uncaught exception"
    with open(results, "a") as fh:
        fh.write(json.dumps({"args": args, "returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
"""


@dataclass(frozen=True)
class CliRun:
    args: tuple[str, ...]
    returncode: int | str
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (f"python -m core {' '.join(self.args)}\nexit {self.returncode}\n"
                f"--- stdout ---\n{self.stdout[-2000:]}\n--- stderr ---\n{self.stderr[-3000:]}")


def cli_env(cache: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LFSSD_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", **extra)
    return env


class Batch:
    """A started batch of command lines; ``results()`` waits for them."""

    def __init__(self, command_lines: list[list[str]], workdir: Path, cache: Path, preexec_fn=None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.command_lines = command_lines
        plan, self.results_path = workdir / "command_lines.json", workdir / "results.jsonl"
        plan.write_text(json.dumps(command_lines))
        self.results_path.unlink(missing_ok=True)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-c", _DRIVER, str(plan), str(self.results_path)], cwd=REPO,
                                     env=cli_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)

    def results(self, timeout: float = 600) -> list[CliRun]:
        """One ``CliRun`` per command line, in order. A command line that never finished (the
        process died or timed out) gets returncode ``"process died"`` and the driver's stderr."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its handle
            _, err = self.proc.communicate()
        lines = self.results_path.read_text().splitlines() if self.results_path.exists() else []
        runs = [CliRun(tuple(r["args"]), r["returncode"], r["stdout"], r["stderr"]) for r in map(json.loads, lines)]
        for args in self.command_lines[len(runs):]:
            runs.append(CliRun(tuple(args), "process died", "", f"driver exit {self.proc.returncode} after "
                                                                 f"{time.perf_counter() - self.started:.0f} s\n{err[-3000:]}"))
        return runs


def run_many(command_lines: list[list[str]], workdir: Path, cache: Path, timeout: float = 600) -> list[CliRun]:
    """Run every command line in one subprocess and wait: one ``CliRun`` per line, in order."""
    return Batch(command_lines, workdir, cache).results(timeout)


def run_cli(args: list[str], cache: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """One real ``python -m core`` process."""
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=cli_env(cache, **env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
