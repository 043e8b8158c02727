"""The user's selection: constant session-state keys, mirrored in the URL so a link reopens a view."""
from __future__ import annotations

import math
from dataclasses import dataclass

import streamlit as st

from core.experiment import default_alpha
from core.splits import ForgetSpec

DATASET, MODEL, TARGET, ALPHA, LAMBDA, METHOD, MODE = "dataset", "model", "target", "alpha", "lambda", "method", "mode"
DEFAULTS = {DATASET: "digits", MODEL: "small_cnn", TARGET: "class:3", ALPHA: 3.5, LAMBDA: 1.0, METHOD: "lfssd", MODE: "batch"}
FLOATS = (ALPHA, LAMBDA)
# The target picker's own widgets; TARGET (the URL-able spec string) is composed from them.
T_KIND, T_CLASS, T_SUBCLASS, T_N, T_SEED, T_SOURCE, T_IMAGE_CLASS, UPLOADS = (
    "t_kind", "t_class", "t_subclass", "t_n", "t_seed", "t_source", "t_image_class", "uploads")
TARGET_KINDS = {"class": "a whole class", "subclass": "a sub-class", "random": "random training images",
                "images": "images, without labels"}
# The α and λ sliders' own keys: ALPHA and LAMBDA hold the values on pages that draw no slider.
W_ALPHA, W_LAMBDA = "alpha_slider", "lambda_slider"
# A checkpoint the user uploaded and chose as the baseline: {"path", "name", "dataset", "model"}.
BASELINE_UPLOAD = "baseline_upload"
IMAGE_SOURCES = {"test": "test images of one class (labels hidden)", "upload": "images I upload"}
UPLOAD_TARGET = "images:upload"


@dataclass(frozen=True)
class Selection:
    dataset: str
    model: str
    target: str
    alpha: float
    lambda_: float
    method: str
    mode: str
    checkpoint: str | None = None  # an uploaded baseline (session only: a link cannot carry a file)


def init_from_url() -> None:
    """Fill every missing key: from the URL on a session's first run, else from the defaults."""
    first_run = not st.session_state.get("_initialised")
    params = st.query_params
    for key, default in DEFAULTS.items():
        if key in st.session_state:
            continue
        value, raw = default, params.get(key) if first_run else None
        if key == ALPHA:  # DEFAULTS lists the data set and target first: α suits them
            value = suggested_alpha(st.session_state[DATASET], st.session_state[TARGET])
        if raw is not None:
            try:
                value = _url_value(key, raw)
            except ValueError as exc:
                st.session_state["_url_warning"] = f"ignored URL parameter {key}={raw!r}: {exc}"
        st.session_state[key] = value
    st.session_state["_initialised"] = True


def _url_value(key: str, raw: str) -> float | str:
    if key not in FLOATS:
        return str(raw)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value) or value < 0 or (key == ALPHA and value == 0):
        raise ValueError("α must be > 0" if key == ALPHA else "λ must be ≥ 0")
    return value


def current() -> Selection:
    init_from_url()
    s = st.session_state
    upload = s.get(BASELINE_UPLOAD)
    checkpoint = upload["path"] if upload and (upload["dataset"], upload["model"]) == (s[DATASET], s[MODEL]) else None
    return Selection(s[DATASET], s[MODEL], s[TARGET], float(s[ALPHA]), float(s[LAMBDA]), s[METHOD], s[MODE],
                     checkpoint)


def write_to_url(selection: Selection) -> None:
    st.query_params.from_dict({DATASET: selection.dataset, MODEL: selection.model, TARGET: selection.target,
                               ALPHA: f"{selection.alpha:g}", LAMBDA: f"{selection.lambda_:g}",
                               METHOD: selection.method, MODE: selection.mode})


def suggested_alpha(dataset: str, target: str) -> float:
    try:
        return default_alpha(dataset, ForgetSpec.parse(target).kind)
    except ValueError:
        return DEFAULTS[ALPHA]


def _whole(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} '{text}' is not a whole number") from None


def picker_from_target(target: str, num_classes: int, num_subclasses: int = 0) -> dict:
    """Picker widget values that reproduce a target spec (from a URL); raises ValueError if bad."""
    kind, _, value = target.partition(":")
    if kind == "class":
        cls = _whole(value, "class")
        if not 0 <= cls < num_classes:
            raise ValueError(f"class {cls} does not exist")
        return {T_KIND: "class", T_CLASS: cls}
    if kind == "subclass":
        fine = _whole(value, "sub-class")
        if not 0 <= fine < num_subclasses:
            raise ValueError(f"sub-class {fine} does not exist" if num_subclasses else "this data set has no sub-classes")
        return {T_KIND: "subclass", T_SUBCLASS: fine}
    if kind == "random":
        n, _, seed = value.partition(":")
        return {T_KIND: "random", T_N: _whole(n, "count"), T_SEED: _whole(seed or "0", "seed")}
    if target == UPLOAD_TARGET:
        return {T_KIND: "images", T_SOURCE: "upload"}
    if kind == "images" and value.startswith("test:"):
        cls = _whole(value.removeprefix("test:"), "class")
        if not 0 <= cls < num_classes:
            raise ValueError(f"class {cls} does not exist")
        return {T_KIND: "images", T_SOURCE: "test", T_IMAGE_CLASS: cls}
    raise ValueError(f"'{target}' is not a target the app can show")


def target_from_picker() -> str:
    s = st.session_state
    if s[T_KIND] == "class":
        return f"class:{s[T_CLASS]}"
    if s[T_KIND] == "subclass":
        return f"subclass:{s[T_SUBCLASS]}"
    if s[T_KIND] == "random":
        return f"random:{s[T_N]}:{s[T_SEED]}"
    return UPLOAD_TARGET if s[T_SOURCE] == "upload" else f"images:test:{s[T_IMAGE_CLASS]}"


def init_picker(num_classes: int, num_subclasses: int = 0) -> None:
    """Set the picker from TARGET once per data set; a bad URL target falls back with a warning."""
    if st.session_state.get("_picker_for") == (st.session_state[DATASET], num_classes):
        return
    picker = {T_KIND: "class", T_CLASS: 3 % num_classes, T_SUBCLASS: 0, T_N: 50, T_SEED: 0, T_SOURCE: "test",
              T_IMAGE_CLASS: 3 % num_classes}
    try:
        picker.update(picker_from_target(st.session_state[TARGET], num_classes, num_subclasses))
    except ValueError as exc:
        st.session_state["_url_warning"] = f"ignored forget target '{st.session_state[TARGET]}': {exc}"
    for key, value in picker.items():
        st.session_state[key] = value
    if st.session_state.get("_picker_for") is not None:  # the user switched data sets: α to suit the new one
        st.session_state[ALPHA] = suggested_alpha(st.session_state[DATASET], target_from_picker())
    st.session_state["_picker_for"] = (st.session_state[DATASET], num_classes)
