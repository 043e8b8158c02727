"""The app under hostile input and several sessions at once (AppTest, real files, real models).

Every malformed or odd file of the shared corpus goes through the Forget page's upload widget and
ends in a converted image or a clear message; two sessions with different targets and α never see
each other's numbers; the baseline model every session shares keeps its weights.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.cache import TensorCache
from core.experiment import ExperimentConfig, forget, prepare
from core.models.registry import weights_hash
from core.models.training import trained_model
from tests.hostile_files import write_corpus

APP = str(Path(__file__).resolve().parents[1] / "app.py")
FORGET = "views/forget.py"  # the Forget page (the root URL opens the Overview)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest: one torch thread keeps these tests fast on a loaded 2-core machine."""


@pytest.fixture
def app(cache_dir, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return AppTest.from_file(APP, default_timeout=300).switch_page(FORGET)


# The upload widget's own type filter (by name) turns these away before the app sees a byte; the
# content check behind it is what the corpus exercises (a text file named .png, a PNG named .jpg…).
UPLOAD_TYPES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    cases = [case for case in write_corpus(tmp_path_factory.mktemp("corpus")) if case.is_upload]
    return [case for case in cases if case.path.suffix.lower() in UPLOAD_TYPES]


def test_the_widget_accepts_exactly_the_image_types(app):
    at = _upload_page(app)
    assert set(at.get("file_uploader")[0].proto.type) == UPLOAD_TYPES


def _upload_page(at: AppTest) -> AppTest:
    at.run()
    at.radio(key="t_kind").set_value("images").run()
    at.radio(key="t_source").set_value("upload").run()
    return at


def _mime(path: Path) -> str:
    return {"png": "image/png", "gif": "image/gif", "webp": "image/webp", "bmp": "image/bmp"}.get(
        path.suffix.lstrip(".").lower(), "image/jpeg")


def _metric(at, start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(start))


def test_the_corpus_is_big_enough(corpus):
    assert len(corpus) >= 30
    assert {c.expectation.outcome for c in corpus} == {"converted", "message"}


def test_all_hostile_files_at_once_convert_or_are_named_in_a_warning(app, corpus):
    at = _upload_page(app)
    files = [(c.path.name, c.path.read_bytes(), _mime(c.path)) for c in corpus]
    at.file_uploader(key="uploads").set_value(files).run()
    assert not at.exception and not at.error
    converted = [c for c in corpus if c.expectation.outcome == "converted"]
    assert f"{len(converted)} unlabelled image(s)" in at.subheader[0].value
    warnings = [w.value for w in at.warning]
    for case in corpus:
        if case.expectation.outcome == "message":
            said = [w for w in warnings if case.path.name in w]
            assert said, f"no warning names {case.path.name}"
            assert re.search(case.expectation.pattern, said[0]), (case.path.name, said[0])


def test_each_refused_file_alone_is_an_error_and_the_next_upload_works(app, corpus):
    at = _upload_page(app)
    refused = [c for c in corpus if c.expectation.outcome == "message"]
    for case in refused:
        at.file_uploader(key="uploads").set_value([(case.path.name, case.path.read_bytes(), _mime(case.path))]).run()
        assert not at.exception, case.path.name
        assert at.error and re.search(case.expectation.pattern, at.error[0].value), (case.path.name, at.error)
        assert case.path.name in at.error[0].value
    good = next(c for c in corpus if c.path.name == "rgb16.png")
    at.file_uploader(key="uploads").set_value([(good.path.name, good.path.read_bytes(), "image/png")]).run()
    assert not at.exception and not at.error
    assert "1 unlabelled image(s)" in at.subheader[0].value


def test_too_many_files_at_once_are_refused_with_the_limit(app):
    from ui.compute import MAX_UPLOADS

    buffer = io.BytesIO()
    Image.new("L", (8, 8), 200).save(buffer, format="PNG")
    at = _upload_page(app)
    at.file_uploader(key="uploads").set_value(
        [(f"tiny_{i}.png", buffer.getvalue(), "image/png") for i in range(MAX_UPLOADS + 1)]).run()
    assert not at.exception
    assert f"over the limit of {MAX_UPLOADS}" in at.error[0].value


def test_two_sessions_at_once_see_only_their_own_results(cache_dir, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    baseline, _ = trained_model("small_cnn", __import__("core.data.registry", fromlist=["x"]).load_dataset("digits"),
                                cache=TensorCache(cache_dir))
    before = weights_hash(baseline)
    first, second = (AppTest.from_file(APP, default_timeout=300).switch_page(FORGET),
                     AppTest.from_file(APP, default_timeout=300).switch_page(FORGET))
    first.query_params.update({"target": "class:3", "alpha": "3.5"})
    second.query_params.update({"target": "class:5", "alpha": "2"})
    first.run()
    second.run()
    # interleaved moves: each session changes its own α and target while the other one reruns
    second.select_slider(key="alpha_slider").set_value(1.5)
    first.select_slider(key="alpha_slider").set_value(4.0)
    second.run()
    first.run()
    first.selectbox(key="t_class").set_value(7)
    first.run()
    second.run()
    for at, target, alpha in ((first, "class:7", 4.0), (second, "class:5", 1.5)):
        assert not at.exception and not at.error
        assert f"class {target[-1]}" in at.subheader[0].value
        assert at.select_slider(key="alpha_slider").value == alpha
        expected = forget(prepare(ExperimentConfig(forget=target), TensorCache(cache_dir)), alpha, 1.0).result
        assert _metric(at, "D_f accuracy") == f"{expected.d_f:.1f} %"
        assert _metric(at, "MIA") == f"{expected.mia:.1f}"
        assert at.query_params["alpha"] == f"{alpha:g}" and at.query_params["target"] == target
    # the model every session shared was never changed, in memory or on disk
    from ui import compute

    shared, _ = compute._prepared("digits", "small_cnn", "class:7", "lfssd", "batch", None, "default", None, None, (),
                                  str(cache_dir))
    assert weights_hash(shared.model) == before
    assert weights_hash(trained_model("small_cnn", shared.dataset, cache=TensorCache(cache_dir))[0]) == before


def test_an_unwritable_cache_folder_is_a_visible_warning_and_the_app_works(monkeypatch, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(blocker / "cache"))
    at = AppTest.from_file(APP, default_timeout=300).switch_page(FORGET)
    at.run()
    assert not at.exception and not at.error
    assert any(w.value.startswith("cache:") and "memory" in w.value for w in at.warning), [w.value for w in at.warning]
    assert float(_metric(at, "D_f accuracy").rstrip(" %")) <= 10.0


def test_uploads_stay_in_use_while_the_uploader_is_not_drawn(app, corpus):
    """Streamlit drops a file uploader's files on any run that does not draw it; the session keeps
    them (ui.state owns the uploads): switching to a class and back forgets the same images, and
    Clear is the one way to stop using them."""
    good = next(c for c in corpus if c.path.name == "rgb16.png")
    at = _upload_page(app)
    at.file_uploader(key="uploads").set_value([(good.path.name, good.path.read_bytes(), "image/png")]).run()
    before = _metric(at, "test accuracy")
    at.radio(key="t_kind").set_value("class").run()
    assert "class 3" in at.subheader[0].value
    at.radio(key="t_kind").set_value("images").run()
    assert not at.exception and not at.error
    assert "1 unlabelled image(s)" in at.subheader[0].value and _metric(at, "test accuracy") == before
    assert any("In use: 1 image(s) uploaded earlier (rgb16.png)" in c.value for c in at.sidebar.caption)
    at.sidebar.button(key="uploads_clear").click().run()
    assert not at.error and at.info and "Upload one or more images" in at.info[0].value
