"""requirements.txt is a complete lock of requirements.in (scripts/lock.py), and this suite runs on it."""
from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import lock  # noqa: E402

LOCKED = lock.parse_pins((REPO / "requirements.txt").read_text())


def _direct() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "requirements.in").read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def test_every_line_of_the_lock_is_an_exact_pin_and_every_direct_dependency_is_locked():
    assert len(LOCKED) > 20
    for requirement in _direct():
        key = lock.canonical(requirement.name)
        assert key in LOCKED, f"{requirement.name} is in requirements.in but not locked"
        assert requirement.specifier.contains(LOCKED[key][1], prereleases=True), (requirement, LOCKED[key])
    assert LOCKED["torch"][1] == "2.14.1" and LOCKED["torchvision"][1] == "0.29.1"


def test_the_lock_is_closed_under_dependencies():
    """Every dependency that a locked package declares (for this platform, no extras) is locked too,
    at a version it accepts: pip install -r requirements.txt needs nothing the lock does not name."""
    missing = []
    for key, (name, version) in LOCKED.items():
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            dep = lock.canonical(requirement.name)
            if dep not in LOCKED:
                missing.append(f"{name}=={version} needs {text}, which the lock does not name")
            elif not requirement.specifier.contains(LOCKED[dep][1], prereleases=True):
                missing.append(f"{name}=={version} needs {text}, the lock has {LOCKED[dep][1]}")
    assert not missing, "\n".join(missing)


def test_this_suite_runs_on_the_locked_versions():
    wrong = {name: (metadata.version(name), version) for name, version in LOCKED.values()
             if metadata.version(name) != version}
    assert not wrong, f"installed, locked: {wrong}; install the lock: pip install -r requirements.txt"


def test_check_names_every_difference_between_an_environment_and_the_lock():
    pins = lock.parse_pins("numpy==2.0.0\nPillow==10.0\nsix==1.0\n")
    installed = lock.parse_pins("numpy==2.0.0\npillow==11.0\nextra_pkg==3\n")
    assert lock.differences(installed, pins) == [
        "extra: extra_pkg==3 is installed but not in the lock",
        "version: Pillow is 11.0, the lock says 10.0",
        "missing: six==1.0 is locked but not installed"]
    assert lock.differences(pins, pins) == []
    with pytest.raises(ValueError, match="line 2: 'numpy>=2' is not a name==version pin"):
        lock.parse_pins("# a comment\nnumpy>=2\n")


def test_check_command_reports_this_environment():
    """``lock.py check`` on this interpreter: exit 0 exactly when pip freeze is the lock (CI runs it
    in the fresh venv it builds, where it must be 0); what it prints names each difference."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "lock.py"), "check"], capture_output=True,
                          text=True, timeout=120)
    problems = lock.differences(lock.parse_pins(lock.freeze(sys.executable)), LOCKED)
    assert proc.returncode == (1 if problems else 0), proc.stdout + proc.stderr
    for line in problems:
        assert line in proc.stdout
    assert not [p for p in problems if not p.startswith("extra:")]  # nothing locked is missing or different
