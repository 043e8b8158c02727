"""The methods registry, the comparison table and the paper protocol, on real digits models.

One baseline (the default small CNN on scikit-learn's digits, class 3 to forget) is trained once
into a module-scoped cache; every method runs on it for real. The contract test uses short
training settings; the forgetting test runs the default recipes.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from core.cache import TensorCache
from core.compare.run import available_methods, compare, parse_methods, summarize
from core.errors import UserError
from core.evaluation.accuracy import accuracy, batch_mean_accuracy, predict_logits
from core.experiment import ExperimentConfig, prepare
from core.compare.methods import METHODS, REQUIREMENTS, UnlearnTask, final_layer, run_method
from core.compare.methods import default_method_alpha
from core.compare.paper import PRESETS, paper_results, paper_tables
from core.compare.protocol import PROTOCOLS, protocol_config

# Short training for the contract test: the contract does not depend on how long a method trains.
SHORT = {"retrain": {"epochs": 2}, "retrain_head": {"epochs": 2}, "finetune": {"epochs": 1}, "amnesiac": {"epochs": 1}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # one folder for this run's digits models, shared with test_compare_cli.py: trained once
    folder = tmp_path_factory.getbasetemp() / "digits-cache"
    folder.mkdir(exist_ok=True)
    return TensorCache(folder)


@pytest.fixture(scope="module")
def prepared(cache, one_torch_thread):
    return prepare(ExperimentConfig(dataset="digits", forget="class:3"), cache)


@pytest.fixture(scope="module")
def task(prepared):
    return UnlearnTask.from_prepared(prepared)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(task, name):
    """New model, input untouched, deterministic under a seed (and seed-dependent if stochastic)."""
    method = METHODS.get(name)
    before = _state(task.model)
    first = run_method(name, task, seed=0, params=SHORT.get(name))
    again = run_method(name, task, seed=0, params=SHORT.get(name))

    assert first.model is not task.model
    original_storage = {p.data_ptr() for p in task.model.parameters()}
    assert not original_storage & {p.data_ptr() for p in first.model.parameters()}
    assert _same(_state(task.model), before), f"{name} modified the model it was given"
    assert not task.model.training
    assert _same(_state(first.model), _state(again.model)), f"{name} is not deterministic under seed 0"
    out = _state(first.model)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in before.items()}
    assert all(v.device.type == "cpu" and torch.isfinite(v).all() for v in out.values())
    assert not first.model.training
    assert (name == "baseline") == _same(out, before)  # every method but the baseline changes the weights
    if method.stochastic:
        other = run_method(name, task, seed=1, params=SHORT.get(name))
        assert not _same(_state(other.model), out), f"{name} ignores its seed"
    assert first.seconds >= 0 and set(first.params) == set(method.defaults)
    assert all(value is not None for value in first.params.values())  # "None = the task's default" resolved


def test_registry_declares_needs():
    assert parse_methods("all") == METHODS.names()
    assert {"baseline", "retrain", "retrain_head", "finetune", "teacher", "amnesiac", "ssd", "lfssd"} <= set(METHODS)
    for name in METHODS:
        method = METHODS.get(name)
        assert method.needs <= set(REQUIREMENTS) and method.label and method.summary
    assert not METHODS.get("lfssd").needs_labels and not METHODS.get("lfssd").needs_retain_set
    assert not METHODS.get("lfssd").trains
    assert METHODS.get("ssd").needs_labels and not METHODS.get("ssd").trains
    assert METHODS.get("amnesiac").needs_labels and METHODS.get("amnesiac").trains
    assert "retrain" in METHODS.get("retrain_head").label and "head" in METHODS.get("retrain_head").label
    can_run = [name for name, reason in available_methods(labelled=False).items() if reason is None]
    assert can_run == ["baseline", "lfssd"]
    with pytest.raises(UserError, match="unknown method 'sdd'; choose one of: baseline"):
        parse_methods("lfssd,sdd")


def test_params_are_checked(task):
    lfssd = METHODS.get("lfssd")
    assert lfssd.resolve_params(task) == {"alpha": 3.5, "lambda": 1.0}  # 10-class data: 3.5
    assert lfssd.resolve_params(task, {"alpha": "5"})["alpha"] == 5.0
    assert METHODS.get("retrain").resolve_params(task)["epochs"] == task.train_config.epochs
    assert METHODS.get("finetune").resolve_params(task)["batch_size"] == 64
    with pytest.raises(UserError, match="lfssd has no parameter 'beta'; its parameters: alpha, lambda"):
        lfssd.resolve_params(task, {"beta": 1})
    with pytest.raises(UserError, match=r"lfssd.alpha must be a finite number > 0, got -1"):
        lfssd.resolve_params(task, {"alpha": -1})
    with pytest.raises(UserError, match=r"finetune.epochs must be a whole number >= 1, got '1.5'"):
        METHODS.get("finetune").resolve_params(task, {"epochs": "1.5"})


def test_retrain_head_starts_from_the_model(task):
    """The reference's retrain keeps every layer but the head, so its body stays near the model's."""
    assert final_layer(task.model) is task.model.fc2
    head = run_method("retrain_head", task, seed=3, params={"epochs": 1}).model
    scratch = run_method("retrain", task, seed=3, params={"epochs": 1}).model
    moved = lambda m: float((m.conv1.weight - task.model.conv1.weight).detach().norm())  # noqa: E731
    assert moved(head) < 0.5 * moved(scratch)


def test_default_recipes_forget_digit_3(prepared):
    """The issue's acceptance on real training: retrain, SSD and LFSSD bring D_f (test) to <= 10 %."""
    comparison = compare(prepared, ["baseline", "retrain", "finetune", "teacher", "amnesiac", "ssd", "lfssd"])
    summary = comparison.summary.set_index("method")
    print("\n" + comparison.runs[["method", "d_r", "d_f", "test", "mia", "wall_s", "wall_incl_id_s"]].to_string())
    assert summary.loc["baseline", "d_f_mean"] > 80
    for name in ("retrain", "ssd", "lfssd"):
        assert summary.loc[name, "d_f_mean"] <= 10, name
    # the bad teacher with its paper's optimiser steps (20 epochs here, not 1: it stayed at 97.8 %)
    assert summary.loc["teacher", "d_f_mean"] <= 30
    for name in summary.index:
        assert summary.loc[name, "d_r_mean"] > 80, name  # nothing destroys the retained classes
    # LFSSD reuses the cached I_D: its own time, and even with the I_D pass, is a small share of retraining's.
    assert summary.loc["lfssd", "wall_vs_retrain"] < 0.1
    assert summary.loc["lfssd", "wall_incl_id_s_mean"] > summary.loc["lfssd", "wall_s_mean"]
    assert summary.loc["retrain", "wall_incl_id_s_mean"] == summary.loc["retrain", "wall_s_mean"]
    assert set(comparison.importance_seconds) == {"ssd", "lfssd"}


def test_compare_table_and_summary(prepared):
    calls = []
    comparison = compare(prepared, ["baseline", "retrain", "lfssd"], repeats=2, params={"retrain": {"epochs": 2}},
                         progress=lambda f, m: calls.append((f, m)))
    runs = comparison.runs
    assert list(runs["method"]) == ["baseline"] * 2 + ["retrain"] * 2 + ["lfssd"] * 2
    assert list(runs["seed"]) == [0, 1] * 3 and comparison.seeds == (0, 1)
    assert (runs["accuracy"] == "sample-weighted").all() and (runs["d_f_split"] == "test").all()
    summary = comparison.summary.set_index("method")
    for metric in ("d_r", "d_f", "test", "mia", "wall_s"):
        means = runs.groupby("method")[metric].mean()
        assert summary[f"{metric}_mean"].to_dict() == pytest.approx(means.to_dict())
    lfssd = runs[runs["method"] == "lfssd"]
    assert lfssd["d_f"].nunique() == 1 and summary.loc["lfssd", "d_f_std"] == 0  # deterministic
    retrain_df, retrain_mia = summary.loc["retrain", "d_f_mean"], summary.loc["retrain", "mia_mean"]
    assert summary.loc["baseline", "d_f_to_retrain"] == pytest.approx(abs(summary.loc["baseline", "d_f_mean"] - retrain_df))
    assert summary.loc["lfssd", "mia_to_retrain"] == pytest.approx(abs(summary.loc["lfssd", "mia_mean"] - retrain_mia))
    assert summary.loc["retrain", "wall_vs_retrain"] == pytest.approx(1.0)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("I_D (lfssd)" in m for _, m in calls)
    without_retrain = summarize(runs[runs["method"] != "retrain"])
    assert without_retrain["d_f_to_retrain"].isna().all()


def test_compare_refuses_bad_input(prepared):
    with pytest.raises(UserError, match="repeats must be a whole number >= 1, got 0"):
        compare(prepared, ["lfssd"], repeats=0)
    with pytest.raises(UserError, match="parameters given for 'ssd', which is not among the methods compared"):
        compare(prepared, ["lfssd"], params={"ssd": {"alpha": 2}})
    with pytest.raises(UserError, match="unknown protocol 'papr'; choose one of: app, paper"):
        compare(prepared, ["lfssd"], protocol="papr")


def test_unlabelled_images_only_label_free_methods(prepared, cache):
    dataset = prepared.dataset
    images = dataset.test_x[dataset.test_y == 3][:20]  # digit-3 test images, labels withheld
    unlabelled = prepare(ExperimentConfig(dataset="digits", forget="images:upload"), cache,
                         forget_images=images, forget_names=[f"{i}.png" for i in range(20)])
    assert not unlabelled.split.labelled
    task = UnlearnTask.from_prepared(unlabelled)
    for name in ("ssd", "amnesiac"):
        with pytest.raises(UserError, match="needs the forget set's labels") as info:
            run_method(name, task)
        assert "LFSSD" in str(info.value)
    for name in ("retrain", "finetune", "teacher"):
        with pytest.raises(UserError, match="needs .*the retain set D_r"):
            run_method(name, task, params=SHORT.get(name))
    with pytest.raises(UserError, match="ssd needs the forget set's labels; lfssd needs neither"):
        compare(unlabelled, ["baseline", "ssd", "lfssd"])
    comparison = compare(unlabelled, ["baseline", "ssd", "lfssd"], skip_unavailable=True)
    assert list(comparison.summary["method"]) == ["baseline", "lfssd"] and set(comparison.skipped) == {"ssd"}
    assert comparison.runs["d_f"].isna().all() and comparison.summary["d_f_to_retrain"].isna().all()
    # LFSSD forgot digit 3 from 20 of its test images: the whole test split scores lower
    summary = comparison.summary.set_index("method")
    print(summary[["test_mean", "mia_mean"]])
    assert summary.loc["lfssd", "test_mean"] < summary.loc["baseline", "test_mean"] - 3


# --- the paper protocol and the paper's numbers ------------------------------------------------

def test_batch_mean_accuracy_by_hand():
    logits = torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0], [0, 1]])
    labels = torch.tensor([0, 0, 0, 0, 0])  # correct: 1 0 | 1 1 | 0
    assert batch_mean_accuracy(logits, labels, 2) == pytest.approx((0.5 + 1.0 + 0.0) / 3 * 100)
    assert accuracy(logits, labels) == pytest.approx(60.0)
    assert batch_mean_accuracy(logits, labels, 5) == pytest.approx(60.0)
    assert batch_mean_accuracy(logits[:0], labels[:0], 2) is None


def test_paper_protocol_scores_like_the_reference(prepared):
    assert protocol_config(replace(prepared.config, mode="sample", batch_size=7), "paper").mode == "batch"
    assert protocol_config(prepared.config, "paper").batch_size is None
    comparison = compare(prepared, ["baseline"], protocol="paper")
    row = comparison.runs.iloc[0]
    assert comparison.accuracy == row["accuracy"] == "batch-mean (64)"
    ds, split = prepared.dataset, prepared.split
    retain = split.retain_test[torch.sort(ds.test_y[split.retain_test], stable=True).indices]  # class by class
    logits = predict_logits(prepared.model, ds, ds.test_x[retain])
    correct = (logits.argmax(1) == ds.test_y[retain]).double()
    by_hand = sum(float(correct[i:i + 64].mean()) for i in range(0, len(retain), 64)) / math.ceil(len(retain) / 64) * 100
    assert row["d_r"] == pytest.approx(by_hand)
    assert row["mia"] == pytest.approx(prepared.baseline.mia)  # same attack in both protocols
    sample_mode = replace(prepared, config=replace(prepared.config, mode="sample"))
    with pytest.raises(UserError, match="the paper protocol needs batch-mode importance"):
        compare(sample_mode, ["baseline"], protocol="paper")
    assert set(PROTOCOLS) == {"app", "paper"}


def test_paper_numbers_file():
    results = paper_results()
    counts = results.groupby("table").size().to_dict()
    assert counts == {"table1": 48, "table2": 15, "table3": 21, "table4": 210, "table5": 210, "table6": 210, "table7": 42}
    assert not results.duplicated(["table", "model", "row", "method", "metric"]).any()
    table2 = paper_results("table2").set_index(["row", "metric"])["mean"]
    spec = {1: (16.87, 0.00, 26.6), 5: (74.72, 0.00, 0.0), 10: (75.67, 0.00, 0.0), 25: (76.10, 0.00, 0.0),
            50: (76.32, 71.88, 29.4)}  # SPEC §6
    for alpha, values in spec.items():
        assert tuple(table2[(f"alpha={alpha}", m)] for m in ("d_r", "d_f", "mia")) == values
    full = results.set_index(["table", "model", "row", "method", "metric"])["mean"]
    for (_, model, row, method, metric), value in full[full.index.get_level_values(0) == "table1"].items():
        source = "table4" if row.startswith("cifar100") else "table6"
        assert full[(source, model, "lamp", method, metric)] == value  # Table 1 repeats the lamp rows
    assert full[("table4", "ResNet18", "lamp", "lfssd", "d_r")] == 76.36
    assert full[("table7", "ViT", "random_83", "lfssd", "mia")] == 90.12
    assert set(paper_tables()) == set(results["table"])
    for name in PRESETS:
        preset = PRESETS.get(name)
        rows = set(paper_results(name)["row"])
        assert {row.name for row in preset.rows} <= rows and (preset.rows or preset.not_runnable)


def test_paper_alphas():
    assert default_method_alpha("lfssd", "cifar100", "class") == 10
    assert default_method_alpha("lfssd", "cifar20", "class") == 5
    assert default_method_alpha("lfssd", "cifar20", "subclass") == 10
    assert default_method_alpha("lfssd", "cifar10", "random") == 3.5
    assert default_method_alpha("ssd", "cifar10", "random") == 10
    assert default_method_alpha("ssd", "cifar20", "subclass", "vit_b16") == 25
    assert default_method_alpha("ssd", "digits", "class") == 10  # squared ratios: SSD's α sits higher
    assert [row.lfssd_alpha for row in PRESETS.get("table5").rows] == [5.0] * 5
    assert PRESETS.get("table6").ssd_alpha == {"ResNet18": 10.0, "ViT": 25.0}
