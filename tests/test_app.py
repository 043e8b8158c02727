"""The app through Streamlit's AppTest: every page opens on the default and reacts to input."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
FORGET = "views/forget.py"  # the Forget page (the root URL opens the Overview)


@pytest.fixture
def app(cache_dir, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    return AppTest.from_file(APP, default_timeout=180).switch_page(FORGET)


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
    assert abs(float(metric(app, "D_r accuracy").delta.replace("±", ""))) <= 2


def test_moving_alpha_up_stops_forgetting(app):
    app.run()
    app.select_slider(key="alpha_slider").set_value(15.0).run()
    assert not app.exception
    assert percent(metric(app, "D_f accuracy")) > 90
    assert metric(app, "parameters dampened").value == "0.00 %"


def test_url_parameters_set_the_view(app):
    app.query_params["alpha"] = "2"
    app.query_params["target"] = "class:5"
    app.run()
    assert app.select_slider(key="alpha_slider").value == 2.0
    assert app.selectbox(key="t_class").value == 5
    assert "class 5" in app.subheader[0].value


@pytest.mark.parametrize("target", ["class:42", "class:nosuch", "bogus"])
def test_bad_url_target_warns_and_falls_back(app, target):
    app.query_params["target"] = target
    app.run()
    assert not app.exception and not app.error
    assert any(target in w.value for w in app.warning)
    assert "class 3" in app.subheader[0].value


def test_url_names_are_case_insensitive_and_every_replaced_value_warns(app):
    app.query_params.update({"method": "SSD", "mode": "zzz", "alpha": "1e-9", "lambda": "1e6",
                             "target": "random:99999"})
    app.run()
    assert not app.exception and not app.error
    warnings = [w.value for w in app.warning]
    assert not any("method" in w for w in warnings)  # SSD is ssd: nothing was replaced
    assert app.radio(key="method").value == "ssd"
    expected = ["URL parameter mode='zzz': not one of batch, sample; using batch",
                "URL parameter alpha='1e-9': outside 0.1–1000; using 0.1",
                "URL parameter lambda='1e6': outside 0–10; using 10",
                "forget target 'random:99999': random:99999 must pick 1–1000 images; using class:3"]
    for message in expected:
        assert message in warnings, (message, warnings)
    assert app.select_slider(key="alpha_slider").value == 0.1 and app.slider(key="lambda_slider").value == 10.0
    assert (app.query_params["alpha"], app.query_params["lambda"], app.query_params["target"]) == ("0.1", "10", "class:3")


def test_each_method_keeps_its_own_alpha(app):
    app.run()
    assert app.select_slider(key="alpha_slider").value == 3.5
    app.select_slider(key="alpha_slider").set_value(4.0).run()
    app.radio(key="method").set_value("ssd").run()
    assert not app.exception and not app.error
    assert app.select_slider(key="alpha_slider").value == 10.0  # SSD's own default (its paper's)
    assert app.query_params["alpha"] in ("10", ["10"])
    assert "At α = 10:" in " ".join(c.value for c in app.caption)
    app.radio(key="method").set_value("lfssd").run()
    assert app.select_slider(key="alpha_slider").value == 4.0  # LFSSD's, as the user left it


def test_retrain_reference_is_shown_next_to_the_metrics(app):
    app.run()
    mia = metric(app, "MIA")
    assert mia.proto.delta_description.startswith("retrain ")
    assert float(mia.proto.delta_description.split()[1]) < 20  # a retrained model looks unseen
    legend = next(c.value for c in app.caption if c.value.startswith("**D_r**: test accuracy on the other classes"))
    assert "reference: one model retrained from scratch on D_r (seed 0, 30 epochs of the default recipe" in legend


def _colour(m) -> str:
    from streamlit.proto.Metric_pb2 import Metric

    return Metric.MetricColor.Name(m.proto.color).lower()


@pytest.mark.parametrize("alpha", [3.5, 100.0])
def test_d_f_and_mia_colours_follow_the_distance_to_the_retrained_model(app, cache_dir, alpha):
    """Colour = how close to the model retrained without D_f, not the direction of the change: at
    α = 3.5 D_f falls to the retrained model's ~0 (green); at α = 100 nothing is forgotten and D_f
    stays far above it (red, under-forgetting). The expected colours come from the engine's own
    figures for the baseline, the dampened and the retrained model."""
    from core.cache import TensorCache
    from core.experiment import ExperimentConfig, forget, prepare, retrain_reference
    from ui.widgets import judge

    app.query_params["alpha"] = f"{alpha:g}"
    app.run()
    assert not app.exception and not app.error
    prep = prepare(ExperimentConfig(forget="class:3"), TensorCache(cache_dir))
    new, retrain = forget(prep, alpha, 1.0).result, retrain_reference(prep, TensorCache(cache_dir))
    for label, field in (("D_f accuracy", "d_f"), ("MIA", "mia")):
        card, value, reference = metric(app, label), getattr(new, field), getattr(retrain, field)
        if value is None:
            continue
        expected, words = judge(field, value, reference)
        assert _colour(card) == expected, (label, value, reference)
        assert card.proto.delta_description == words
    d_f = metric(app, "D_f accuracy")
    if alpha == 3.5:
        assert _colour(d_f) == "green"
    else:
        assert _colour(d_f) == "red" and d_f.proto.delta_description.endswith("· under")


def test_judge_colours_by_distance_not_direction():
    from ui.widgets import judge

    assert judge("mia", 0.0, 2.9) == ("green", "retrain 2.9")
    assert judge("mia", 0.0, 33.6) == ("red", "retrain 33.6 · over")  # over-forgetting: a trace of its own
    assert judge("mia", 0.0, 19.0)[0] == "orange"
    assert judge("d_f", 40.0, 0.0) == ("red", "retrain 0.0 · under")
    assert judge("d_r", 99.9, 99.0)[0] == "green"  # above the reference costs nothing
    assert judge("d_r", 97.5, 99.0) == ("orange", "retrain 99.0 · lost")
    assert judge("d_f", 3.0, None) == ("gray", None)


def test_a_heavy_untrained_model_says_how_long_first_and_waits_for_a_click(app, monkeypatch):
    app.query_params["model"] = "resnet18"
    app.run()
    assert not app.exception and not app.error
    prompt = next(i.value for i in app.info if "not trained on digits yet" in i.value)
    assert "estimated from one timed training batch" in prompt
    train = next(b for b in app.button if b.key == "train_heavy")
    number, unit = train.label.removeprefix("Train it (≈ ").rstrip(")").split()
    seconds = float(number) * (60 if unit == "min" else 1)
    assert seconds >= 20  # ResNet18 on digits: minutes here (179 s measured), against seconds for the small CNN
    assert not app.metric  # nothing was trained: no results yet
    app.button(key="use_small_cnn").click().run()
    assert app.selectbox(key="model").value == "small_cnn"
    assert not app.exception and not app.error and app.metric


def test_the_training_estimate_is_close_to_the_real_time(one_torch_thread):
    import time

    from core.data.registry import load_dataset
    from core.models.training import default_config, estimate_training_seconds, train_model

    data = load_dataset("digits")
    config = default_config("small_cnn", "digits", epochs=6)
    estimate = estimate_training_seconds("small_cnn", data, config, importance_passes=0)
    started = time.perf_counter()
    train_model("small_cnn", data, config)
    real = time.perf_counter() - started
    assert real / 3 < estimate < real * 3, (estimate, real)  # measured: 4.1 s against 4.2 s at 30 epochs


def test_random_target_scores_d_f_on_train(app):
    app.run()
    app.radio(key="t_kind").set_value("random").run()
    assert not app.exception
    assert "random training images" in app.subheader[0].value
    assert metric(app, "D_f accuracy").label == "D_f accuracy (train)"


def test_unlabelled_test_images_forget_their_class(app):
    app.run()
    app.radio(key="t_kind").set_value("images").run()
    assert not app.exception and not app.error
    assert "unlabelled" in app.subheader[0].value
    assert metric(app, "D_f accuracy").value == "—"
    assert "no labels" in metric(app, "D_f accuracy").label


def _png(array) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_uploaded_pngs_are_forgotten_without_labels_and_bad_files_are_skipped(app):
    from core.data.registry import load_dataset

    digits = load_dataset("digits")
    threes = digits.test_x[digits.test_y == 3][:20, 0].numpy()
    app.run()
    app.radio(key="t_kind").set_value("images").run()
    app.radio(key="t_source").set_value("upload").run()
    # nothing uploaded yet: a prompt, not an error (and no crash)
    assert not app.error and "Upload one or more images" in app.info[0].value
    files = [(f"three_{i}.png", _png(a), "image/png") for i, a in enumerate(threes)]
    files.append(("notes.png", b"this is text, not an image", "image/png"))
    app.file_uploader(key="uploads").set_value(files).run()
    assert not app.exception and not app.error
    assert "20 unlabelled image(s)" in app.subheader[0].value
    assert any("notes.png" in w.value for w in app.warning)
    assert app.get("plotly_chart")  # figures drawn
    # the sidebar shows each upload beside what the model is given (made like the set's own digits)
    assert any(e.label.startswith("What the model sees (20 image(s), cropped to the ink") for e in app.expander)
    # the numbers shown are core's numbers for the same 20 unlabelled images, decoded the same way
    from core.experiment import ExperimentConfig, forget, prepare
    from core.data.images import decode_images

    images, _, _ = decode_images([(name, data) for name, data, _ in files], digits.image_shape, True,
                                 digit_box=digits.digit_box)
    prep = prepare(ExperimentConfig(), forget_images=images)
    expected = forget(prep, 3.5, 1.0).result
    assert metric(app, "test accuracy").value == f"{expected.test:.1f} %"
    assert metric(app, "MIA").value == ("—" if expected.mia is None else f"{expected.mia:.1f}")
    assert expected.per_class_test[3] < 50 < min(expected.per_class_test[c] for c in range(10) if c != 3)


def test_cifar20_files_in_the_data_folder_offer_sub_class_targets(tmp_path, cache_dir, monkeypatch, one_torch_thread):
    from tests.cifar_files import write_cifar100

    fine = list(range(100))  # one image of each fine class (small: CIFAR-sized models train here); superclass = fine % 20
    write_cifar100(tmp_path, fine_train=fine, fine_test=fine)
    monkeypatch.setenv("LFSSD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    at = AppTest.from_file(APP, default_timeout=300).switch_page(FORGET)
    at.query_params.update({"dataset": "cifar20", "target": "subclass:27"})
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="dataset").value == "cifar20"
    assert "CIFAR-100" in at.selectbox(key="dataset").options  # both sets from those files
    assert "a sub-class" in at.radio(key="t_kind").options
    assert at.selectbox(key="t_subclass").value == 27
    assert "sub-class 'fine27' of 'coarse7'" in at.subheader[0].value
    assert at.select_slider(key="alpha_slider").value == 10.0  # the paper's α for CIFAR-20 sub-classes
    assert "fine41 (in coarse1)" in at.selectbox(key="t_subclass").options  # named with their superclass
    at.selectbox(key="dataset").set_value("digits").run()  # no sub-classes there: the choice disappears
    assert "a sub-class" not in at.radio(key="t_kind").options
    assert not at.exception and not at.error


@pytest.mark.parametrize("page", ["views/forget.py", "views/sensitivity.py", "views/importance.py",
                                  "views/model_data.py"])  # the lesson: tests/test_lesson.py
def test_inputs_at_their_limits_give_messages_not_tracebacks(app, page):
    """SSD on unlabelled images, the largest random target, λ = 0, α at both ends: each page copes."""
    app.switch_page(page).run()
    app.radio(key="t_kind").set_value("images").run()
    app.radio(key="method").set_value("ssd").run()
    assert not app.exception
    assert any("SSD needs labels" in e.value for e in app.error)
    app.radio(key="method").set_value("lfssd").run()
    app.radio(key="t_kind").set_value("random").run()
    app.number_input(key="t_n").set_value(1000).run()
    assert not app.exception and not app.error
    for alpha, lambda_ in ((0.5, 0.0), (100.0, 5.0)):
        app.session_state["alpha"], app.session_state["lambda"] = alpha, lambda_
        app.run()
        assert not app.exception and not app.error
        if page == "views/forget.py":
            assert app.select_slider(key="alpha_slider").value == alpha
            assert app.slider(key="lambda_slider").value == lambda_


def test_the_recipe_choice_trains_its_own_baseline_and_reference(app):
    """The sidebar's recipe is part of the URL (only when not the default: older links stay valid)
    and of the experiment; the cards' reference is trained with the same recipe, and says so."""
    app.run()
    default_test = metric(app, "test accuracy").value
    assert "recipe" not in app.query_params
    app.sidebar.radio(key="recipe_radio").set_value("plain").run()
    assert not app.exception and not app.error
    assert app.query_params["recipe"] in ("plain", ["plain"])
    legend = next(c.value for c in app.caption if c.value.startswith("**D_r**"))
    assert "the plain recipe, as the baseline" in legend
    from core.experiment import ExperimentConfig, run_forget

    _, cli = run_forget(ExperimentConfig(recipe="plain", alpha=3.5))  # `python -m core forget --recipe plain`
    assert metric(app, "D_r accuracy").value == f"{cli.result.d_r:.1f} %"
    assert metric(app, "D_f accuracy").value == f"{cli.result.d_f:.1f} %"
    assert metric(app, "parameters dampened").value == f"{cli.report.fraction * 100:.2f} %"
    app.sidebar.radio(key="recipe_radio").set_value("default").run()
    assert metric(app, "test accuracy").value == default_test  # the default's own model again


def test_a_recipe_in_the_url_is_case_insensitive_and_a_bad_one_warns(app):
    app.query_params["recipe"] = "PLAIN"
    app.run()
    assert app.sidebar.radio(key="recipe_radio").value == "plain"
    fresh = AppTest.from_file(APP, default_timeout=180).switch_page(FORGET)
    fresh.query_params["recipe"] = "zzz"
    fresh.run()
    assert any("URL parameter recipe='zzz': not one of default, plain; using default" in w.value for w in fresh.warning)
    assert fresh.sidebar.radio(key="recipe_radio").value == "default"
