"""The Model & data page: core/evaluation/report.py on hand-made cases and real checkpoint files, and
the page itself through AppTest (the default digits small CNN, an upload accepted, one refused)."""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.data.registry import load_dataset
from core.errors import CheckpointError, UserError
from core.evaluation.accuracy import accuracy, predict_logits
from core.evaluation.report import (class_counts, confusion_figure, confusion_matrix, load_uploaded_checkpoint,
                               model_report, per_class_accuracy, sample_mosaic)
from core.models.registry import create_model, save_checkpoint, weights_hash

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "views/model_data.py"


# --- scores ------------------------------------------------------------------------------------

def test_confusion_matrix_and_per_class_accuracy_on_a_hand_made_case():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.nn.functional.one_hot(predicted, 4).float() * 3 - 1  # argmax = predicted; class 3 empty
    matrix = confusion_matrix(logits, labels, 4)
    assert matrix.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    per_class = per_class_accuracy(matrix)
    assert per_class[:3] == pytest.approx([200 / 3, 50.0, 100.0])
    assert np.isnan(per_class[3])  # no samples: no accuracy, not 0 %


def test_model_report_agrees_with_core_evaluate():
    dataset = load_dataset("digits")
    model = create_model("small_cnn", dataset.image_shape, dataset.num_classes, seed=1)
    report = model_report(model, dataset)
    assert report.test == pytest.approx(accuracy(predict_logits(model, dataset, dataset.test_x), dataset.test_y))
    assert report.confusion.sum() == len(dataset.test_y)
    assert report.confusion.sum(1).tolist() == class_counts(dataset)["test"].tolist()


def test_confusion_figure_holds_counts_and_colours_by_row_share():
    matrix = np.array([[8, 2], [1, 29]])
    fig = confusion_figure(matrix, ("a", "b"))
    assert [list(t.z[0]) for t in fig.data] == matrix.tolist()  # z are the counts
    assert [t.zmax for t in fig.data] == [10, 30]  # each row coloured from 0 to its own total
    assert list(fig.data[0].customdata[0]) == pytest.approx([80.0, 20.0])


def test_sample_mosaic_upscales_with_nearest_neighbour():
    dataset = load_dataset("digits")
    mosaic = sample_mosaic(dataset, per_class=3, cell=64, gap=4)
    assert mosaic.shape == (10 * 68 - 4, 3 * 68 - 4, 3)
    first = dataset.train_x[int(np.flatnonzero(dataset.train_y.numpy() == 0)[0]), 0].numpy()  # (8, 8)
    block = mosaic[:64, :64, 0]
    assert (block == np.kron(first, np.ones((8, 8), dtype=np.uint8))).all()  # 8×8 blocks, no blur


# --- uploaded checkpoints ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _safetensors_bytes(model, tmp_path: Path) -> bytes:
    path = tmp_path / "weights.safetensors"
    save_checkpoint(model, path)
    return path.read_bytes()


class _Marker:
    """Unpickling this creates a file: proof that a loader ran code from the file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_a_real_safetensors_checkpoint_is_accepted(digits, tmp_path):
    source = create_model("small_cnn", digits.image_shape, digits.num_classes, seed=7)
    model = load_uploaded_checkpoint(_safetensors_bytes(source, tmp_path), "mine.safetensors", "small_cnn", digits)
    assert weights_hash(model) == weights_hash(source)


def test_a_torch_save_state_dict_is_accepted(digits):
    source = create_model("small_cnn", digits.image_shape, digits.num_classes, seed=3)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    model = load_uploaded_checkpoint(buffer.getvalue(), "mine.pt", "small_cnn", digits)
    assert weights_hash(model) == weights_hash(source)


def test_a_wrong_architecture_names_the_keys(digits, tmp_path):
    other = torch.nn.Sequential(torch.nn.Linear(64, 10))
    with pytest.raises(CheckpointError) as caught:
        load_uploaded_checkpoint(_safetensors_bytes(other, tmp_path), "linear.safetensors", "small_cnn", digits)
    message = str(caught.value)
    assert "linear.safetensors" in message and "missing: conv1.weight" in message
    assert "0.weight" in message.split("unexpected:")[1]


def test_a_checkpoint_for_other_image_sizes_names_the_mis_shaped_key(digits, tmp_path):
    mnist_sized = create_model("small_cnn", (1, 28, 28), 10)
    with pytest.raises(CheckpointError, match=r"wrong shape: fc1.weight"):
        load_uploaded_checkpoint(_safetensors_bytes(mnist_sized, tmp_path), "m.safetensors", "small_cnn", digits)


@pytest.mark.parametrize("wrap", ["plain pickle", "torch.save zip"])
def test_a_pickle_that_would_run_code_is_refused_unrun(digits, tmp_path, wrap):
    marker = tmp_path / "ran"
    if wrap == "plain pickle":
        data = pickle.dumps({"conv1.weight": _Marker(marker)})
    else:
        buffer = io.BytesIO()
        torch.save({"conv1.weight": _Marker(marker)}, buffer)
        data = buffer.getvalue()
    assert not marker.exists()
    with pytest.raises(CheckpointError) as caught:
        load_uploaded_checkpoint(data, "evil.pt", "small_cnn", digits)
    assert not marker.exists()
    assert ("refusing to unpickle" if wrap == "plain pickle" else "weights_only") in str(caught.value)


def test_text_files_and_other_types_are_refused(digits):
    with pytest.raises(CheckpointError, match="neither safetensors nor a torch.save file"):
        load_uploaded_checkpoint(b"these are not weights, just some text\n", "notes.pt", "small_cnn", digits)
    with pytest.raises(UserError, match=r"choose a .safetensors or .pt file, got '.txt'"):
        load_uploaded_checkpoint(b"text", "notes.txt", "small_cnn", digits)


def test_an_upload_over_the_size_limit_is_refused_before_reading(digits):
    with pytest.raises(UserError, match="the limit is 1 MB"):
        load_uploaded_checkpoint(b"\0" * (2 * 1024 * 1024), "big.safetensors", "small_cnn", digits, max_mb=1)


# --- the page ----------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest: one torch thread keeps these page tests fast on a loaded 2-core machine."""


@pytest.fixture
def page(cache_dir, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error
    return at


def _trained_baseline(dataset):
    """The default digits small CNN as core makes it (loaded from the cache the page filled)."""
    from core.cache import TensorCache
    from core.models.training import trained_model

    model, from_cache = trained_model("small_cnn", dataset, cache=TensorCache())
    assert from_cache
    return model


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _charts(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _confusion_totals(at) -> list[int]:
    return [int(sum(sum(row) for t in spec["data"] if t["type"] == "heatmap" for row in t["z"]))
            for spec in _charts(at) if any(t["type"] == "heatmap" for t in spec["data"])]


def test_page_shows_the_data_set_and_the_baseline_core_computes(page, digits):
    assert _metric(page, "train images") == f"{len(digits.train_y):,}"
    assert _metric(page, "test images") == "450"
    assert _metric(page, "image shape (C × H × W)") == "1 × 8 × 8"
    assert _metric(page, "classes") == "10"
    model = _trained_baseline(digits)
    expected = accuracy(predict_logits(model, digits, digits.test_x), digits.test_y)
    assert _metric(page, "test accuracy") == f"{expected:.1f} %"
    assert _confusion_totals(page) == [len(digits.test_y)]
    assert any(t["type"] == "image" for spec in _charts(page) for t in spec["data"])  # the sample grid


def test_uploading_the_baseline_shows_it_beside_the_baseline(page, digits, tmp_path):
    data = _safetensors_bytes(_trained_baseline(digits), tmp_path)
    page.file_uploader(key="md_checkpoint").upload("baseline.safetensors", data).run()
    assert not page.exception and not page.error
    assert _metric(page, "test accuracy of baseline.safetensors") == _metric(page, "test accuracy")
    assert _confusion_totals(page) == [len(digits.test_y)] * 3


def test_an_uploaded_checkpoint_becomes_the_baseline_the_forget_page_forgets_from(page, digits, tmp_path):
    from core.cache import TensorCache
    from core.experiment import ExperimentConfig, forget, prepare
    from core.models.training import default_config, trained_model

    mine, _ = trained_model("small_cnn", digits, default_config("small_cnn", "digits", epochs=5, seed=7),
                            cache=TensorCache(tmp_path / "other"))
    assert weights_hash(mine) != weights_hash(_trained_baseline(digits))
    page.file_uploader(key="md_checkpoint").upload("mine.safetensors", _safetensors_bytes(mine, tmp_path)).run()
    page.button(key="md_use_checkpoint").click().run()
    assert not page.exception and not page.error
    assert "your checkpoint mine.safetensors" in page.subheader[1].value
    assert _metric(page, "test accuracy") == _metric(page, "test accuracy of mine.safetensors")

    page.switch_page("views/forget.py").run()
    assert not page.exception and not page.error
    assert "your checkpoint" in page.subheader[0].value
    expected = forget(prepare(ExperimentConfig(checkpoint=page.session_state["baseline_upload"]["path"])), 3.5, 1.0)
    shown = {m.label.split(" (")[0]: m.value for m in page.metric}
    assert shown["D_r accuracy"] == f"{expected.result.d_r:.1f} %"
    assert shown["MIA"] == f"{expected.result.mia:.1f}"

    page.button(key="use_trained_baseline").click().run()  # the sidebar switches back
    assert "your checkpoint" not in page.subheader[0].value


def test_a_refused_upload_is_an_error_message_and_the_page_keeps_working(page, tmp_path):
    marker = tmp_path / "ran"
    page.file_uploader(key="md_checkpoint").upload("evil.pt", pickle.dumps(_Marker(marker))).run()
    assert not page.exception
    assert "refusing to unpickle" in page.error[0].value
    assert not marker.exists()
    assert _metric(page, "test accuracy").endswith(" %")  # the baseline is still shown
