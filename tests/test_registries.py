"""Families are registries of declarations, and nothing else lists their members.

A toy model, data set, recipe and method, registered here at test time (no other file touched),
show up in the CLI's --help, in the sidebar's select boxes and on the Compare page, and run end to
end; then every real member of every family runs on a tiny case.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from core.cache import TensorCache
from core.compare.methods import METHODS, Method, UnlearnTask, run_method
from core.compare.protocol import PROTOCOLS, protocol_config
from core.data.dataset import Dataset
from core.data.registry import DATASETS, DatasetInfo, load_dataset
from core.errors import UserError
from core.experiment import ExperimentConfig, prepare
from core.models.recipes import RECIPES, Recipe, TrainConfig
from core.models.registry import MODELS, ModelInfo, create_model
from core.models.training import default_config, train_model

APP = str(Path(__file__).resolve().parents[1] / "app.py")


# --- the toys ------------------------------------------------------------------------------------

def toy_dataset() -> Dataset:
    """Four classes of 8×8 images: a bright 3×3 square in a class's own corner, on noise."""
    gen = torch.Generator().manual_seed(0)

    def images(n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, 60, (4 * n_per_class, 1, 8, 8), generator=gen, dtype=torch.uint8)
        y = torch.arange(4).repeat_interleave(n_per_class)
        for i, label in enumerate(y.tolist()):
            r, c = divmod(label, 2)
            x[i, 0, r * 5:r * 5 + 3, c * 5:c * 5 + 3] = 230
        return x, y

    (train_x, train_y), (test_x, test_y) = images(12), images(5)
    return Dataset("toyset", train_x, train_y, test_x, test_y, ("a", "b", "c", "d"), (0.2,), (0.3,),
                   description="four squares")


def _toy_mlp(shape: tuple[int, int, int], n: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 16), nn.ReLU(), nn.Linear(16, n))


def _halve_head(task: UnlearnTask, params, seed: int, progress) -> nn.Module:
    import copy

    model = copy.deepcopy(task.model)
    with torch.no_grad():
        for p in list(model.parameters())[-2:]:
            p.mul_(params["factor"])
    return model


@pytest.fixture
def toys():
    with contextlib.ExitStack() as stack:
        stack.enter_context(DATASETS.registered("toyset", DatasetInfo(
            "toyset", "four squares, 8×8 (a test's own data set)", lambda root, progress: toy_dataset(),
            default_model="toy_mlp", label="toy squares", offered=lambda root: True)))
        stack.enter_context(MODELS.registered("toy_mlp", ModelInfo(
            "toy_mlp", "a two-layer perceptron (a test's own model)", _toy_mlp, label="toy MLP",
            train=TrainConfig(epochs=4, batch_size=16, lr=1e-2, logit_penalty=1e-3))))
        stack.enter_context(RECIPES.registered("toy_short", Recipe(
            "toy_short", "toy short", "two epochs, no penalty (a test's own recipe)",
            lambda config: replace(config, epochs=2, logit_penalty=0.0))))
        stack.enter_context(METHODS.registered("toy_halve", Method(
            "toy_halve", "halve the head (a test's own method)", "multiplies the last layer by a factor",
            frozenset(), _halve_head, {"factor": 0.5}, short="Toy halve", color="#123456", symbol="hexagon")))
        yield


def _cli(*argv: str) -> tuple[int, str, str]:
    from core.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # --help
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def test_toys_appear_in_the_cli_help(toys):
    code, out, _ = _cli("forget", "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps lines
    for name in ("toyset", "toy_mlp", "toy_short", "two epochs, no penalty"):
        assert name in text, name
    code, out, _ = _cli("compare", "--help")
    assert code == 0 and "toy_halve" in " ".join(out.split())


def test_toys_run_end_to_end_in_the_cli(toys, tmp_path):
    code, out, err = _cli("forget", "--dataset", "toyset", "--recipe", "toy_short", "--forget", "class:1",
                          "--alpha", "2", "--cache-dir", str(tmp_path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["dataset"], result["model"], result["recipe"], result["forget_size"]) == \
        ("toyset", "toy_mlp", "toy_short", 12)
    assert result["forgotten"]["d_f"] is not None and result["selected"] > 0
    code, out, err = _cli("compare", "--dataset", "toyset", "--forget", "class:1", "--methods", "baseline,toy_halve",
                          "--set", "toy_halve.factor=0.25", "--cache-dir", str(tmp_path), "--json")
    assert code == 0, err
    comparison = json.loads(out)
    assert [r["method"] for r in comparison["runs"]] == ["baseline", "toy_halve"]
    assert comparison["params"]["toy_halve"] == {"factor": 0.25} and comparison["recipe"] == "default"
    code, _, err = _cli("forget", "--dataset", "toyset", "--recipe", "nope", "--cache-dir", str(tmp_path))
    assert code == 2 and "unknown recipe 'nope'; choose one of: default, plain, toy_short" in err


def test_toys_appear_in_the_sidebar_and_run(toys, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LFSSD_CACHE_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180).switch_page("views/forget.py")
    at.run()
    assert "toyset" in at.sidebar.selectbox(key="dataset").options or \
        "toy squares" in at.sidebar.selectbox(key="dataset").options
    assert "toy MLP" in at.sidebar.selectbox(key="model").options
    at.sidebar.selectbox(key="dataset").set_value("toyset").run()
    at.sidebar.selectbox(key="model").set_value("toy_mlp").run()
    assert "toy short" in at.sidebar.radio(key="recipe_radio").options
    at.sidebar.radio(key="recipe_radio").set_value("toy_short").run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert "toy_mlp on toyset" in at.subheader[0].value
    assert at.query_params["recipe"] in ("toy_short", ["toy_short"])
    assert [m for m in at.metric if m.label.startswith("D_f accuracy")]


def test_the_compare_page_offers_a_registered_method(toys, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LFSSD_CACHE_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180).switch_page("views/compare.py")
    at.run()
    assert "Toy halve" in at.multiselect[0].options


# --- every real member, on a tiny case ------------------------------------------------------------

TINY_SHAPE = {"small_cnn": (1, 8, 8), "resnet18": (3, 16, 16), "vit": (3, 16, 16)}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_and_runs(name):
    info = MODELS.get(name)
    assert info.label and info.description and info.train.epochs >= 1
    if name == "vit_b16":  # needs the model hub, which is off here: one clear message, no traceback
        assert not info.in_app
        with pytest.raises(UserError, match="vit_b16 needs pretrained weights"):
            create_model(name, (3, 32, 32), 10)
        return
    model = create_model(name, TINY_SHAPE[name], 5)
    assert model(torch.zeros(2, *TINY_SHAPE[name])).shape == (2, 5)
    assert default_config(name, "digits").epochs >= 1


def test_a_model_refuses_images_it_cannot_take():
    with pytest.raises(UserError, match="small_cnn cannot take 1×2×2 images"):
        create_model("small_cnn", (1, 2, 2), 10)


def _write_folder(root: Path) -> Path:
    from PIL import Image

    for label, colour in {"cat": (200, 30, 30), "dog": (30, 200, 30)}.items():
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 12), tuple(min(255, c + 5 * i) for c in colour)).save(root / label / f"{i}.png")
    return root


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_data_set_loads(name, tmp_path):
    from tests.cifar_files import write_cifar10, write_cifar100

    root = None
    if name == "cifar10":
        write_cifar10(tmp_path)
        root = tmp_path
    elif name in ("cifar100", "cifar20"):
        write_cifar100(tmp_path)
        root = tmp_path
    elif name == "folder":
        root = _write_folder(tmp_path / "images")
    info = DATASETS.get(name)
    assert info.label and info.description and info.default_model in MODELS
    data = load_dataset(name, root)
    assert data.num_classes >= 2 and len(data.train_y) and len(data.test_y)
    assert data.train_x.dtype == torch.uint8 and tuple(data.train_x.shape[1:]) == data.image_shape
    assert info.default_alpha("class") > 0
    assert info.is_offered(tmp_path) == (name in ("digits", "mnist5k", "cifar10", "cifar100", "cifar20"))


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_trains(name):
    config = default_config("small_cnn", "digits", recipe=name, epochs=1)
    model = train_model("small_cnn", toy_dataset(), config)
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 4)


def test_the_recipes_differ_where_they_should():
    default, plain = (default_config("small_cnn", "digits", recipe=r) for r in ("default", "plain"))
    assert default.logit_penalty == 1e-3 and plain.logit_penalty == 0.0
    assert replace(plain, logit_penalty=default.logit_penalty) == default
    assert default_config("resnet18", "cifar10", recipe="plain") == default_config("resnet18", "cifar10")


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    with DATASETS.registered("toyset", DatasetInfo("toyset", "four squares", lambda root, p: toy_dataset())):
        with MODELS.registered("toy_mlp", ModelInfo("toy_mlp", "toy", _toy_mlp,
                                                    train=TrainConfig(epochs=4, batch_size=16, lr=1e-2))):
            prepared = prepare(ExperimentConfig(dataset="toyset", model="toy_mlp", forget="class:1"),
                               TensorCache(tmp_path_factory.mktemp("cache")))
            yield UnlearnTask.from_prepared(prepared), prepared


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_runs(name, tiny_task):
    task, _ = tiny_task
    method = METHODS.get(name)
    assert method.label and method.summary and method.column and method.color.startswith("#")
    run = run_method(name, task, seed=0)  # the fixture keeps the toy model and data set registered
    assert run.model(torch.zeros(1, 1, 8, 8)).shape == (1, 4)
    assert set(run.params) == set(method.defaults)


@pytest.mark.parametrize("name", PROTOCOLS.names())
def test_every_protocol_configures_an_experiment(name, tiny_task):
    _, prepared = tiny_task
    config = protocol_config(prepared.config, name)
    assert (config.mode == "batch" and config.d_order == "reference") if PROTOCOLS.get(name).batch_mean \
        else config == prepared.config


# --- the plain recipe on the embedded data sets ------------------------------------------------------

@pytest.mark.parametrize("dataset", ["digits", "mnist5k"])
def test_the_plain_recipe_trains_its_own_model_and_reference(dataset, cache_dir, one_torch_thread):
    """Both recipes are cached apart (the key holds the recipe's configuration), and the retrained
    reference is trained with the recipe of the model it is compared with."""
    from core.experiment import retrain_reference
    from core.models.training import _model_key

    cache = TensorCache(cache_dir)
    runs = {recipe: prepare(ExperimentConfig(dataset=dataset, recipe=recipe), cache) for recipe in ("default", "plain")}
    default, plain = runs["default"], runs["plain"]
    assert plain.config.train_config(dataset).logit_penalty == 0.0 < default.config.train_config(dataset).logit_penalty
    assert not torch.equal(next(plain.model.parameters()), next(default.model.parameters()))
    assert plain.baseline.test > 90  # a working classifier either way
    assert prepare(ExperimentConfig(dataset=dataset, recipe="plain"), cache).cache_hits["model"]
    retrain_reference(plain, cache)
    data = plain.dataset
    key = _model_key("small_cnn", data, plain.config.train_config(dataset), plain.split.retain_train)
    assert cache.path("models", key).is_file()  # the reference under the plain recipe's configuration
