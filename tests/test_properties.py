"""Property-based: random sequences of core operations never touch the shared baseline, and equal
inputs give equal results.

A hypothesis state machine drives real computations on the digits data set and the small CNN
(trained for two epochs, once per session, into a temporary cache): preparing a target (LFSSD or
SSD, batch or sample mode), forgetting at random α/λ (invalid ones included), sweeps, training
other models, recomputing importance, saving and loading checkpoints (also through the app's
upload loader and the CLI's ``--checkpoint`` route). After every step, every baseline model
handed out so far still has the weights hash it was born with, its importance maps are
unchanged, no gradient was left on it, and the cached baseline file on disk is byte-identical.
Every result is remembered by its inputs; meeting the same inputs again must give the same result.
"""
from __future__ import annotations

import hashlib
import math
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from core.cache import TensorCache, tensors_digest
from core.method.dampening import dampen
from core.errors import UserError
from core.experiment import ExperimentConfig, forget, prepare, sweep
from core.method.importance import compute_importance
from core.evaluation.report import load_uploaded_checkpoint
from core.models.registry import create_model, load_checkpoint, save_checkpoint, weights_hash
from core.models.recipes import TrainConfig
from core.models.training import train_model

TARGETS = (("class:3", "lfssd", "batch"), ("class:7", "lfssd", "batch"), ("random:40:1", "lfssd", "batch"),
           ("class:3", "ssd", "batch"), ("class:5", "lfssd", "sample"))
ALPHAS = st.one_of(st.sampled_from([0.5, 1.0, 2.0, 3.5, 5.0, 10.0, 50.0]),
                   st.floats(0.1, 100.0, allow_nan=False), st.sampled_from([0.0, -1.0, math.nan, math.inf]))
LAMBDAS = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.floats(0.0, 5.0, allow_nan=False),
                    st.sampled_from([-0.5, math.nan]))


def _valid(alpha: float, lambda_: float) -> bool:
    return math.isfinite(alpha) and alpha > 0 and math.isfinite(lambda_) and lambda_ >= 0


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class World:
    """What persists across hypothesis examples: the cache, every Prepared handed out, and the
    results seen so far by their inputs (so determinism is checked across examples too)."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="lfssd-properties-"))
        self.cache = TensorCache(self.folder / "cache")
        self.base = ExperimentConfig(dataset="digits", epochs=2)
        self.prepared: dict[tuple, object] = {}
        self.born: dict[int, tuple[str, str, str]] = {}  # id(Prepared) → (weights, I_D, I_Df) digests
        self.seen: dict[tuple, object] = {}
        self.baseline_hash: str | None = None
        self.baseline_files: dict[Path, str] = {}
        self.steps = 0
        self.repeats = 0  # results met again with equal inputs (and found equal)

    def get(self, target: tuple) -> object:
        if target not in self.prepared:
            spec, kind, mode = target
            prepared = prepare(replace(self.base, forget=spec, kind=kind, mode=mode), self.cache)
            self.prepared[target] = prepared
            self.born[id(prepared)] = self.digests(prepared)
            if self.baseline_hash is None:
                self.baseline_hash = weights_hash(prepared.model)
                self.baseline_files = {p: _file_hash(p) for p in (self.folder / "cache" / "models").glob("*.safetensors")}
        return self.prepared[target]

    @staticmethod
    def digests(prepared) -> tuple[str, str, str]:
        return weights_hash(prepared.model), tensors_digest(prepared.imp_full), tensors_digest(prepared.imp_forget)

    def same_as_before(self, key: tuple, value) -> None:
        """Remember ``value`` for ``key``; if ``key`` was seen, the values must be equal."""
        if key in self.seen:
            assert self.seen[key] == value, f"different results for equal inputs {key}"
            self.repeats += 1
        else:
            self.seen[key] = value


_WORLD: World | None = None


def world() -> World:
    global _WORLD
    if _WORLD is None:
        _WORLD = World()
    return _WORLD


def _signature(outcome) -> tuple:
    """Everything a forget returns, as comparable plain values."""
    headline = outcome.result.headline()
    return (outcome.report.selected, tuple(l.selected for l in outcome.report.layers), weights_hash(outcome.model),
            tuple(sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in headline.items())))


class CoreOperations(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.world = world()
        self.last_model: torch.nn.Module | None = None

    @rule(goal=st.sampled_from(TARGETS))
    def prepare_again(self, goal):
        """A second prepare of the same target comes from the cache and equals the first."""
        w = self.world
        first = w.get(goal)
        spec, kind, mode = goal
        again = prepare(replace(w.base, forget=spec, kind=kind, mode=mode), w.cache)
        assert again.cache_hits == {"model": True, "importance_full": True, "importance_forget": True}
        assert w.digests(again) == w.born[id(first)]
        assert again.model is not first.model

    @rule(goal=st.sampled_from(TARGETS), alpha=ALPHAS, lambda_=LAMBDAS)
    def forget_once(self, goal, alpha, lambda_):
        prepared = self.world.get(goal)
        if not _valid(alpha, lambda_):
            with pytest.raises(UserError):
                forget(prepared, alpha, lambda_)
            return
        outcome = forget(prepared, alpha, lambda_)
        assert outcome.model is not prepared.model
        for (name, before), after in zip(prepared.model.named_parameters(), outcome.model.parameters()):
            assert (after.detach().abs() <= before.detach().abs()).all(), f"dampening grew {name}"
        self.world.same_as_before(("forget", goal, alpha, lambda_), _signature(outcome))
        self.last_model = outcome.model

    @rule(goal=st.sampled_from(TARGETS),
          alphas=st.lists(st.sampled_from([1.0, 3.5, 10.0]), min_size=1, max_size=3, unique=True),
          lambdas=st.lists(st.sampled_from([0.5, 1.0]), min_size=1, max_size=2, unique=True))
    def sweep_grid(self, goal, alphas, lambdas):
        """A sweep row is what a single forget at that (α, λ) gives (checked on the first row)."""
        prepared = self.world.get(goal)
        table = sweep(prepared, alphas, lambdas)
        assert [(r["alpha"], r["lambda"]) for r in table.to_dict(orient="records")] == [(a, l) for a in alphas for l in lambdas]
        row = table.iloc[0]
        single = forget(prepared, row["alpha"], row["lambda"])
        assert row["selected"] == single.report.selected
        assert row["d_r"] == single.result.d_r and row["mia"] == single.result.mia
        self.world.same_as_before(("forget", goal, row["alpha"], row["lambda"]), _signature(single))

    @rule(seed=st.integers(0, 2))
    def train_another(self, seed):
        """Training other models (different seeds) is deterministic and leaves the baseline alone."""
        dataset = self.world.get(TARGETS[0]).dataset
        model = train_model("small_cnn", dataset, TrainConfig(epochs=1, seed=seed, logit_penalty=1e-3))
        self.world.same_as_before(("train", seed), weights_hash(model))
        self.last_model = model

    @rule(goal=st.sampled_from(TARGETS))
    def recompute_importance(self, goal):
        """Importance computed again from scratch equals the cached maps, bit for bit."""
        prepared = self.world.get(goal)
        fresh = compute_importance(prepared.model, prepared.split.forget_loader(prepared.dataset, prepared.batch_size),
                                   prepared.config.kind, prepared.config.mode)
        assert tensors_digest(fresh) == tensors_digest(prepared.imp_forget)

    @rule(use_last=st.booleans())
    def save_and_load(self, use_last):
        """A checkpoint round trip (file and upload bytes) keeps every weight."""
        w = self.world
        prepared = w.get(TARGETS[0])
        model = self.last_model if use_last and self.last_model is not None else prepared.model
        w.steps += 1
        path = w.folder / f"checkpoint-{w.steps}.safetensors"
        save_checkpoint(model, path)
        loaded = load_checkpoint(path, create_model("small_cnn", prepared.dataset.image_shape, 10, seed=1))
        uploaded = load_uploaded_checkpoint(path.read_bytes(), path.name, "small_cnn", prepared.dataset)
        assert weights_hash(loaded) == weights_hash(uploaded) == weights_hash(model)

    @rule()
    def forget_from_a_saved_checkpoint(self):
        """The CLI's --checkpoint route: a dampened model saved and prepared again as a baseline."""
        w = self.world
        prepared = w.get(TARGETS[0])
        damped, _ = dampen(prepared.model, prepared.imp_full, prepared.imp_forget, 3.5, 1.0)
        w.steps += 1
        path = w.folder / f"damped-{w.steps}.safetensors"
        save_checkpoint(damped, path)
        other = prepare(replace(w.base, checkpoint=str(path)), w.cache)
        assert weights_hash(other.model) == weights_hash(damped) != w.baseline_hash
        assert other.cache_hits["model"] is False

    @invariant()
    def baselines_untouched(self):
        w = self.world
        for prepared in w.prepared.values():
            assert w.digests(prepared) == w.born[id(prepared)], "a baseline model or its importance changed"
            assert w.digests(prepared)[0] == w.baseline_hash
            assert not prepared.model.training
            assert all(p.grad is None for p in prepared.model.parameters()), "a gradient was left on the baseline"
        for path, digest in w.baseline_files.items():
            assert _file_hash(path) == digest, f"the cached baseline {path.name} changed on disk"


CoreOperations.TestCase.settings = settings(max_examples=10, stateful_step_count=6, deadline=None, derandomize=True,
                                            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_clean_up(one_torch_thread):
    """One torch thread (faster on two cores, bit-for-bit repeatable importances); the world's
    temporary folder is removed afterwards."""
    yield
    if _WORLD is not None:
        import shutil

        shutil.rmtree(_WORLD.folder, ignore_errors=True)


TestCoreOperations = CoreOperations.TestCase


def test_the_machine_ran_and_checked_something():
    """Runs after the state machine (file order): it really prepared targets and met repeats."""
    w = world()
    assert len(w.prepared) >= 2 and w.baseline_hash is not None and w.baseline_files
    assert any(key[0] == "forget" for key in w.seen) and any(key[0] == "train" for key in w.seen)
    assert w.repeats > 0, "no inputs met twice: determinism was never compared"
    print(f"{len(w.prepared)} baselines prepared, {len(w.seen)} distinct results, {w.repeats} repeats compared")
