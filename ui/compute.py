"""st.cache_* wrappers around core: one shared prepared experiment per plain-valued selection.

``st.cache_resource`` hands the same ``Prepared`` (and its baseline model) to every session;
core's ``dampen`` always works on a copy, so no session can change what another sees.
"""
from __future__ import annotations

import hashlib

import streamlit as st
import torch

from core.cache import TensorCache, cache_root
from core.data import load_dataset
from core.dataset import Dataset
from core.errors import UserError
from core.images import MAX_IMAGE_BYTES, decode_image
from ui.state import UPLOAD_TARGET, UPLOADS
from core.dampening import RatioHistogram, ratio_histogram
from core.evaluate import EvalResult
from core.experiment import ExperimentConfig, ForgetOutcome, Prepared, forget, prepare, retrain_reference


@st.cache_resource(show_spinner=False)
def dataset(name: str) -> Dataset:
    return load_dataset(name)


def prepared(dataset_name: str, model: str, target: str, method: str, mode: str) -> Prepared:
    """The shared experiment for a selection. Image targets come from the test split
    (``images:test:<class>``, labels hidden) or from this session's uploads (``images:upload``)."""
    if target == UPLOAD_TARGET:
        images, names = uploaded_images(dataset(dataset_name))
    elif target.startswith("images:test:"):
        data = dataset(dataset_name)
        mask = data.test_y == int(target.removeprefix("images:test:"))
        images, names = data.test_x[mask], [f"test #{int(i)}" for i in torch.nonzero(mask).flatten()]
    else:
        return _prepared(dataset_name, model, target, method, mode, None, None, (), str(cache_root()))
    if len(images) == 0:
        raise UserError("the forget set is empty: add at least one image")
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
    return _prepared(dataset_name, model, f"images:{digest}", method, mode, digest, images, tuple(names),
                     str(cache_root()))


@st.cache_resource(show_spinner=False, max_entries=8)
def _prepared(dataset_name: str, model: str, target: str, method: str, mode: str, images_digest: str | None,
              _images: torch.Tensor | None, _names: tuple[str, ...], cache_dir: str) -> Prepared:
    """Keyed by plain values, the cache folder included: a different cache is a different model store."""
    bar = st.progress(0.0, text="preparing the experiment…")
    try:
        config = ExperimentConfig(dataset=dataset_name, model=model, forget=target, kind=method, mode=mode)
        return prepare(config, TensorCache(cache_dir),
                       progress=lambda fraction, message: bar.progress(min(fraction, 1.0), text=message),
                       forget_images=_images, forget_names=_names)
    finally:
        bar.empty()


MAX_UPLOADS = 200


def uploaded_images(data: Dataset) -> tuple[torch.Tensor, list[str]]:
    """Decode this session's uploads into the data set's format; each bad file gets a warning."""
    files = st.session_state.get(UPLOADS) or []
    if len(files) > MAX_UPLOADS:
        raise UserError(f"{len(files)} files uploaded; at most {MAX_UPLOADS} at a time")
    images, names = [], []
    for file in files:
        try:
            if file.size > MAX_IMAGE_BYTES:
                raise UserError(f"{file.name} is {file.size / 1e6:.1f} MB, over the {MAX_IMAGE_BYTES / 1e6:.0f} MB limit")
            images.append(decode_image(file.getvalue(), file.name, data.image_shape, data.dark_background))
            names.append(file.name)
        except UserError as exc:
            st.warning(f"skipped: {exc}")
    if not images:
        raise UserError("no usable images: upload at least one image to forget (PNG, JPEG, …)")
    return torch.stack(images), names


@st.cache_resource(show_spinner=False, max_entries=32)
def histogram(_prepared: Prepared, key: tuple) -> RatioHistogram:
    """log10(I_Df/I_D) counts: independent of α and λ, so computed once per experiment."""
    return ratio_histogram(_prepared.imp_full, _prepared.imp_forget)


def outcome(prep: Prepared, alpha: float, lambda_: float) -> ForgetOutcome:
    return forget(prep, alpha, lambda_)


@st.cache_resource(show_spinner=False, max_entries=16)
def retrained(_prepared: Prepared, key: tuple) -> EvalResult:
    """Scores of the model retrained without D_f (trained once, cached on disk)."""
    bar = st.progress(0.0, text="training the retrained-without-D_f reference…")
    try:
        return retrain_reference(_prepared, progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
    finally:
        bar.empty()


def experiment_key(prep: Prepared) -> tuple:
    """Plain values naming a prepared experiment, for caching what derives from it. An upload's
    content digest is inside ``config.forget``; the cache folder names the model store."""
    cfg = prep.config
    return (cfg.dataset, cfg.model, cfg.forget, cfg.kind, cfg.mode, str(cache_root()))
