"""scripts/load_test.py, briefly: its sessions drive the real server and its report adds up.

The full run (10 sessions for 60 s) is a measurement, not a test; this keeps the script working.
"""
from __future__ import annotations

import asyncio
import importlib.util
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import REPO, chromium_path

pytestmark = pytest.mark.browser


def _load_script():
    spec = importlib.util.spec_from_file_location("load_test", REPO / "scripts" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_sessions_move_the_slider_without_errors(streamlit_server, monkeypatch):
    load_test = _load_script()
    monkeypatch.setattr(load_test, "CHROMIUM", chromium_path())
    drive = load_test.drive(streamlit_server.url, sessions=2, seconds=8.0, chromium=load_test.niced_chromium(10))
    with ThreadPoolExecutor(1) as pool:  # its own thread: the sync Playwright of other tests holds this one's loop
        result = pool.submit(asyncio.run, drive).result()
    assert result["errors"] == []
    assert len(result["latencies"]) >= 2  # both sessions got at least one finished rerun
    assert all(0 < seconds < load_test.UNFINISHED_AFTER_S for seconds in result["latencies"])
    assert load_test.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
