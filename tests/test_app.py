"""The app through Streamlit's AppTest: every page opens on the default and reacts to input."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # shared: the default model trains once per module


@pytest.fixture
def app(cache_dir, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    return AppTest.from_file(APP, default_timeout=180)


def metric(at, label_start):
    return next(m for m in at.metric if m.label.startswith(label_start))


def percent(m) -> float:
    return float(m.value.rstrip(" %"))


def test_default_view_shows_forgetting(app):
    app.run()
    assert not app.exception and not app.error
    d_f = metric(app, "D_f accuracy")
    assert percent(d_f) <= 10.0
    assert float(d_f.delta) < -80
    assert abs(float(metric(app, "D_r accuracy").delta)) <= 2


def test_moving_alpha_up_stops_forgetting(app):
    app.run()
    app.slider(key="alpha").set_value(15.0).run()
    assert not app.exception
    assert percent(metric(app, "D_f accuracy")) > 90
    assert metric(app, "parameters dampened").value == "0.00 %"


def test_url_parameters_set_the_view(app):
    app.query_params["alpha"] = "2"
    app.query_params["target"] = "class:5"
    app.run()
    assert app.slider(key="alpha").value == 2.0
    assert app.text_input(key="target").value == "class:5"
    assert "class 5" in app.subheader[0].value


def test_bad_target_is_an_error_message_not_a_traceback(app):
    app.run()
    app.text_input(key="target").input("class:42").run()
    assert not app.exception
    assert "does not exist" in app.error[0].value


def test_overview_page_explains_and_shows_live_result(app):
    app.switch_page("pages/overview.py").run()
    assert not app.exception
    assert len(app.latex) == 2
    assert percent(metric(app, "D_f accuracy")) <= 10.0
