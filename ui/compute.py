"""st.cache_* wrappers around core: one shared prepared experiment per plain-valued selection.

``st.cache_resource`` hands the same ``Prepared`` (and its baseline model) to every session;
core's ``dampen`` always works on a copy, so no session can change what another sees.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import streamlit as st
import torch

from core.cache import TensorCache, cache_root
from core.data.registry import load_dataset
from core.data.dataset import Dataset
from core.errors import UserError
from core.data.images import decode_images
from core.models.registry import save_checkpoint, weights_hash
from ui.state import BASELINE_UPLOAD as UPLOAD_BASELINE, EXAMPLES_TARGET, UPLOAD_TARGET, Selection, uploaded_files
from core.method.dampening import RatioHistogram, ratio_histogram
from core.evaluation.accuracy import EvalResult
from core.experiment import (ExperimentConfig, ForgetOutcome, Prepared, baseline_for, forget, prepare,
                             retrain_reference)


@st.cache_resource(show_spinner=False)
def dataset(name: str) -> Dataset:
    return load_dataset(name)


def prepared(selection: Selection, method: str | None = None, mode: str | None = None) -> Prepared:
    """The shared experiment for a selection (``method``/``mode`` override its own). Image targets
    come from the test split (``images:test:<class>``, labels hidden) or from this session's
    uploads (``images:upload``); the baseline is the trained model or the user's checkpoint. Every
    target but the uploads is a spec core resolves itself, as the CLI does."""
    dataset_name, model, target = selection.dataset, selection.model, selection.target
    method, mode, checkpoint = method or selection.method, mode or selection.mode, selection.checkpoint
    recipe = selection.recipe
    training_gate(selection)
    if target not in (UPLOAD_TARGET, EXAMPLES_TARGET):
        prep, warnings = _prepared(dataset_name, model, target, method, mode, checkpoint, recipe, None, None, (),
                                   str(cache_root()))
    else:
        images, names = (uploaded_images if target == UPLOAD_TARGET else example_images)(dataset(dataset_name))
        digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
        prep, warnings = _prepared(dataset_name, model, f"images:{digest}", method, mode, checkpoint, recipe, digest,
                                   images, tuple(names), str(cache_root()))
    for message in warnings:  # e.g. an unwritable cache folder, a damaged entry recomputed
        st.warning(f"cache: {message}")
    return prep


@st.cache_resource(show_spinner=False, max_entries=16)
def _first_look(dataset_name: str, model: str, target: str, recipe: str, checkpoint: str | None, cache_dir: str):
    from core.experiment import first_look as look

    bar = st.progress(0.0, text="loading the model…")
    try:
        config = ExperimentConfig(dataset=dataset_name, model=model, forget=target, checkpoint=checkpoint, recipe=recipe)
        return look(config, TensorCache(cache_dir), progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
    finally:
        bar.empty()


def first_look(selection: Selection):
    """The baseline's accuracies and the forget split, without importances or the attack (the
    lesson's first step: fast on a cold start)."""
    training_gate(selection)
    return _first_look(selection.dataset, selection.model, selection.target, selection.recipe, selection.checkpoint,
                       str(cache_root()))


@st.cache_resource(show_spinner=False)
def warm_up() -> None:
    """Once per server process, in the background: import what the steps after the first need
    (scikit-learn for the attack, plotly's figure machinery), so Next is quick."""
    import threading

    def work() -> None:
        import os
        import time

        try:  # the lowest priority (Linux: per thread), after a pause: the browser is drawing the first step
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        time.sleep(1.0)
        import plotly.graph_objects as go
        import sklearn.linear_model  # noqa: F401

        go.Figure(go.Bar(x=[0], y=[0])).to_json()

    threading.Thread(target=work, name="lfssd-warm-up", daemon=True).start()


HEAVY_SECONDS = 20  # a model that takes longer than this to train waits for the user's go-ahead
APPROVED = "_approved_training"  # session: {(data set, model)} the user chose to train


def estimated_seconds(model: str, dataset_name: str, cache_dir: str, recipe: str = "default") -> float | None:
    """Expected seconds to train ``model`` and compute its importances here; None if it is cached."""
    from core.models.training import default_config, is_trained

    if is_trained(model, dataset(dataset_name), default_config(model, dataset_name, recipe=recipe),
                  TensorCache(cache_dir)):
        return None
    return _probe(model, dataset_name)


@st.cache_data(show_spinner="timing one training batch…", max_entries=16)
def _probe(model: str, dataset_name: str) -> float:
    from core.models.training import default_config, estimate_training_seconds

    return estimate_training_seconds(model, dataset(dataset_name), default_config(model, dataset_name))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def training_gate(selection: Selection) -> None:
    """A model that is not trained yet and takes long starts only on a click, with the time it will
    take said first (from a one-batch probe), and a Cancel button while it trains."""
    from core.models.registry import MODELS
    from ui.state import MODEL

    if selection.checkpoint:
        return
    seconds = estimated_seconds(selection.model, selection.dataset, str(cache_root()), selection.recipe)
    if seconds is None or seconds < HEAVY_SECONDS:
        return
    key, approved = (selection.dataset, selection.model), st.session_state.setdefault(APPROVED, set())
    label = MODELS.get(selection.model).label or selection.model
    if key in approved:
        st.button("Cancel training", key="cancel_training", on_click=approved.discard, args=(key,),
                  help="stops at the end of the current epoch; nothing is kept")
        st.caption(f"Training {label} on {selection.dataset}: about {_duration(seconds)} in all, as estimated "
                   "from one batch on this machine.")
        return
    left, right = st.columns(2)
    left.button(f"Train it (≈ {_duration(seconds)})", key="train_heavy", on_click=approved.add, args=(key,),
                type="primary")
    right.button("Use the small CNN instead", key="use_small_cnn",
                 on_click=lambda: st.session_state.update({MODEL: "small_cnn"}))
    raise AwaitingInput(f"{label} is not trained on {selection.dataset} yet. Training it here takes about "
                        f"{_duration(seconds)} (estimated from one timed training batch on this machine, with the two "
                        "importance passes after it); it is then cached. Start it above, or use the small CNN, which "
                        "trains in seconds.")


@st.cache_resource(show_spinner=False, max_entries=8)
def _prepared(dataset_name: str, model: str, target: str, method: str, mode: str, checkpoint: str | None,
              recipe: str, images_digest: str | None, _images: torch.Tensor | None, _names: tuple[str, ...],
              cache_dir: str) -> tuple[Prepared, tuple[str, ...]]:
    """Keyed by plain values, the cache folder included: a different cache is a different model store.
    An uploaded checkpoint's path is named by its content hash, so the path names the weights."""
    bar = st.progress(0.0, text="preparing the experiment…")
    try:
        config = ExperimentConfig(dataset=dataset_name, model=model, forget=target, kind=method, mode=mode,
                                  checkpoint=checkpoint, recipe=recipe)
        cache = TensorCache(cache_dir)
        prep = prepare(config, cache, progress=lambda fraction, message: bar.progress(min(fraction, 1.0), text=message),
                       forget_images=_images, forget_names=_names)
        return prep, tuple(cache.warnings)
    finally:
        bar.empty()


def use_uploaded_baseline(model: torch.nn.Module, name: str, dataset_name: str, model_name: str) -> None:
    """Make an uploaded (already validated) model this session's baseline. It is re-saved as
    safetensors under its weights' hash, so the experiment cache keys on the weights, not the file."""
    digest = weights_hash(model)
    folder = Path(cache_root()) / "uploads"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only cache: a private temp folder still works for this session
        folder = Path(tempfile.mkdtemp(prefix="lfssd-uploads-"))
    path = folder / f"{model_name}-{digest}.safetensors"
    if not path.is_file():
        save_checkpoint(model, path)
    st.session_state[UPLOAD_BASELINE] = {"path": str(path), "name": name, "dataset": dataset_name,
                                         "model": model_name, "hash": digest}


MAX_UPLOADS = 200


class AwaitingInput(UserError):
    """Nothing is wrong yet: the page waits for the user's input (e.g. an empty uploader)."""


def uploaded_images(data: Dataset) -> tuple[torch.Tensor, list[str]]:
    """Decode this session's uploads into the data set's format (a digit set's way of making its
    images: ``core.data.images.fit_digit``); each bad file gets a warning, each image that may mean
    little a note, a load over the count, byte or pixel limits an error (core.data.images enforces them)."""
    if not uploaded_files():
        raise AwaitingInput("Upload one or more images to forget (PNG, JPEG, …) in the sidebar: LFSSD needs no "
                            "labels, so any images of this data set's kind will do.")
    images, names, skipped, notes = decoded_uploads(data)
    for message in skipped:
        st.warning(f"skipped: {message}")
    for message in notes:
        st.warning(message)
    return images, names


EXAMPLES_FOR = ("digits",)  # MNIST 3s: in no training set of these (mnist5k's holds MNIST images itself)


def examples_folder() -> Path:
    """assets/examples/threes (``$LFSSD_ASSETS_DIR`` stands for assets/ when set)."""
    from core.assets import assets_dir

    return assets_dir() / "examples" / "threes"


def example_files() -> tuple:
    """((name, bytes), …) of the example images shipped in assets/examples/threes."""
    folder = examples_folder()
    return tuple((path.name, path.read_bytes()) for path in sorted(folder.glob("*.png")))


def example_images(data: Dataset) -> tuple[torch.Tensor, list[str]]:
    """The shipped example 3s, prepared like an upload (so they look like the set's own digits)."""
    if data.name not in EXAMPLES_FOR:
        raise UserError(f"the example images are MNIST 3s, offered on {', '.join(EXAMPLES_FOR)} only: on {data.name} "
                        "they could be training images")
    files = example_files()
    if not files:
        raise UserError("no example images: assets/examples/threes is empty or missing (python -m core assets "
                        "--rebuild makes them)")
    images, names, skipped, _ = _decoded(files, data, _digest(files, data))
    return images, names


@st.cache_resource(show_spinner=False, max_entries=8)
def _decoded(_files: tuple, _data: Dataset, key: str):
    """Keyed by ``key``, the digest of the files and the data set (the arguments themselves are not hashed)."""
    notes: list[str] = []
    images, names, skipped = decode_images(list(_files), _data.image_shape, _data.dark_background,
                                           max_files=MAX_UPLOADS, digit_box=_data.digit_box, notes=notes)
    return images, names, skipped, notes


def decoded_uploads(data: Dataset):
    """(images, names, skipped, notes) of this session's uploads, decoded once per content."""
    files = uploaded_files()
    return _decoded(files, data, _digest(files, data))


def _digest(files: tuple, data: Dataset) -> str:
    h = hashlib.sha256(data.name.encode())
    for name, payload in files:
        h.update(name.encode() + b"\0" + hashlib.sha256(payload).digest())
    return h.hexdigest()


@st.cache_data(show_spinner=False, max_entries=64)
def sweep_table(_prep, key: tuple, alphas: tuple, lambdas: tuple):
    """One sweep, cached by the selection key and the grid; the bar follows its progress."""
    from core.experiment import sweep

    bar = st.progress(0.0, text=f"sweeping {len(alphas) * len(lambdas)} (α, λ) points…")
    try:
        return sweep(_prep, alphas, lambdas, progress=lambda f, message: bar.progress(min(f, 1.0), text=message))
    finally:
        bar.empty()


@st.cache_resource(show_spinner=False, max_entries=32)
def histogram(_prepared: Prepared, key: tuple) -> RatioHistogram:
    """log10(I_Df/I_D) counts: independent of α and λ, so computed once per experiment."""
    return ratio_histogram(_prepared.imp_full, _prepared.imp_forget)


@st.cache_resource(show_spinner="Auto: reading the model's outputs as α varies…", max_entries=64)
def alpha_choice(_prepared: Prepared, key: tuple, rule: str):
    """The α rule's choice for an experiment (cached: a rule reads a dozen dampened outputs)."""
    from core.experiment import choose_alpha

    return choose_alpha(_prepared, rule)


def apply_alpha_rule(prep: Prepared):
    """When a rule is in charge, put its α and λ into the selection (before any slider is drawn);
    returns its ``AlphaChoice`` or None."""
    from ui.state import ALPHA, ALPHA_RULE, LAMBDA

    s = st.session_state
    rule = s.get(ALPHA_RULE)
    if not rule:
        return None
    choice = alpha_choice(prep, experiment_key(prep), rule)
    s[ALPHA], s[LAMBDA] = choice.alpha, choice.lambda_
    return choice


def outcome(prep: Prepared, alpha: float, lambda_: float) -> ForgetOutcome:
    return forget(prep, alpha, lambda_)


FULL_EVALUATIONS = "fg_full_evaluations"  # session state: {(experiment key, α, λ): EvalResult scored on every image}


def full_evaluation(prep: Prepared, alpha: float, lambda_: float) -> EvalResult | None:
    """The every-image scores this session asked for at exactly these settings, if any."""
    return st.session_state.get(FULL_EVALUATIONS, {}).get((experiment_key(prep), alpha, lambda_))


def run_full_evaluation(prep: Prepared, alpha: float, lambda_: float) -> EvalResult:
    """Score every image at (α, λ) (the "Full evaluation" button on large data sets), with a bar."""
    bar = st.progress(0.0, text="scoring every image…")
    try:
        result = forget(prep, alpha, lambda_, progress=lambda f, m: bar.progress(min(f, 1.0), text=m),
                        evaluation="full").result
    finally:
        bar.empty()
    saved = dict(list(st.session_state.get(FULL_EVALUATIONS, {}).items())[-7:])  # the last few settings
    saved[(experiment_key(prep), alpha, lambda_)] = result
    st.session_state[FULL_EVALUATIONS] = saved
    return result


def baseline_like(prep: Prepared, scores: EvalResult) -> EvalResult:
    """The baseline scored on the same images as ``scores`` (the same fixed subset after a subset
    evaluation), so the deltas compare like with like."""
    return prep.baseline if scores.sample is None else _subset_baseline(prep, experiment_key(prep), scores)


@st.cache_resource(show_spinner=False, max_entries=16)
def _subset_baseline(_prep: Prepared, key: tuple, _scores: EvalResult) -> EvalResult:
    """Cached per experiment: the subset is fixed, so the baseline's subset scores are too."""
    return baseline_for(_prep, _scores)


@st.cache_resource(show_spinner=False, max_entries=16)
def retrained(_prepared: Prepared, key: tuple) -> EvalResult:
    """Scores of the model retrained without D_f (trained once, cached on disk)."""
    bar = st.progress(0.0, text="training the retrained-without-D_f reference…")
    try:
        result = retrain_reference(_prepared, progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
    finally:
        bar.empty()
    _RETRAINED.add(key)
    return result


_RETRAINED: set[tuple] = set()  # experiment keys whose reference this server process has scored


def retrained_if_ready(prep: Prepared, key: tuple) -> EvalResult | None:
    """The reference's scores when this process already has them, else None (without training), so
    a page can show its results first and train the reference after them."""
    return retrained(prep, key) if key in _RETRAINED else None


def reference_note(prep: Prepared) -> str | None:
    """Why a page shows no retrained reference, where that is known before training one."""
    if not prep.split.labelled:
        return "no retrained reference: unlabelled images name nothing to leave out of the training set"
    return None


def reference_about(prep: Prepared) -> str:
    """Which retrained model the cards compare with: one seed, stated, and how Compare relates to it."""
    cfg = prep.config
    epochs = cfg.train_config(prep.dataset.name).epochs
    source = (f"the {cfg.recipe} recipe on your checkpoint's architecture (your checkpoint's own recipe is unknown)"
              if cfg.checkpoint else f"the {cfg.recipe} recipe, as the baseline")
    return (f"reference: one model retrained from scratch on D_r (seed {cfg.seed}, {epochs} epochs of {source}; "
            f"Compare's Retrain averages seeds 0, 1, …, its seed {cfg.seed} is this model)")


def experiment_key(prep: Prepared) -> tuple:
    """Plain values naming a prepared experiment, for caching what derives from it. An upload's
    content digest is inside ``config.forget``; the cache folder names the model store."""
    cfg = prep.config
    return (cfg.dataset, cfg.model, cfg.recipe, cfg.forget, cfg.kind, cfg.mode, cfg.checkpoint, str(cache_root()))


# --- membership evidence (views/evidence.py) -------------------------------------------------------------

@st.cache_resource(show_spinner="loading the retrained model…", max_entries=16)
def retrained_model_for(_prepared: Prepared, key: tuple):
    """The model retrained without D_f (the cards' reference), itself, for its outputs."""
    from core.experiment import retrained_model

    return retrained_model(_prepared)


_SCORES: dict[tuple, tuple] = {}  # (experiment key, method, α, λ, N, params) -> ScoreOverModels


def score_over_models(prep: Prepared, key: tuple, method: str, alpha: float, lambda_: float, models: int,
                      params: tuple = ()):
    """The challenge's score over N models, with a progress bar; (result, from_cache). A rerun (any
    click, "Cancel" included) stops it between two models; every model trained so far stays cached
    on disk, so the next press starts where this one stopped. ``params``: the method's own
    parameters, as (name, value) pairs."""
    from core.compare.evidence import forget_score_over_models

    entry = (key, method, alpha, lambda_, models, params)
    if entry in _SCORES:
        return _SCORES[entry], True
    bar = st.progress(0.0, text=f"{method}: training {models} originals and {models} retrained models…")
    try:
        result = forget_score_over_models(prep.config, method, alpha, lambda_, models, TensorCache(cache_root()),
                                          progress=lambda f, m: bar.progress(min(f, 1.0), text=m),
                                          params=dict(params) or None)
    finally:
        bar.empty()
    _SCORES[entry] = result
    return result, False


def stored_score(key: tuple, method: str, alpha: float, lambda_: float, models: int, params: tuple = ()):
    """(result, True) when this server already scored these settings, else None (nothing computed)."""
    entry = (key, method, alpha, lambda_, models, params)
    return (_SCORES[entry], True) if entry in _SCORES else None


_RELEARNED: dict[tuple, dict] = {}


def relearning(prep: Prepared, key: tuple, alpha: float, lambda_: float):
    """Relearning curves and R for (α, λ); (result, from_cache)."""
    from core.compare.evidence import relearning_evidence

    entry = (key, alpha, lambda_)
    if entry in _RELEARNED:
        return _RELEARNED[entry], True
    with st.spinner("fine-tuning the dampened, retrained and baseline models on D_f…"):
        result = relearning_evidence(prep, alpha, lambda_, TensorCache(cache_root()))
    _RELEARNED[entry] = result
    return result, False
