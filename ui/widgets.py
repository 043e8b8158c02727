"""Shared widgets: the sidebar selection, metric cards, and user-error display."""
from __future__ import annotations

import math

import streamlit as st

from core.data import DATASETS
from core.evaluate import EvalResult
from core.importance import KINDS, MODES
from core.models import MODELS
from ui import state

EMBEDDED = ["digits", "mnist5k"]  # offline data sets the sidebar offers; CIFAR needs files (CLI)
ALPHA_MIN, ALPHA_MAX = 0.5, 50.0


def sidebar() -> state.Selection:
    """Draw the shared sidebar; returns the selection (also written to the URL)."""
    state.init_from_url()
    with st.sidebar:
        st.selectbox("Data set", EMBEDDED, key=state.DATASET, format_func=lambda n: DATASETS.get(n).description)
        st.selectbox("Model", ["small_cnn", "vit"], key=state.MODEL, format_func=lambda n: MODELS.get(n).description)
        target_picker()
        st.radio("Method", KINDS, key=state.METHOD, horizontal=True, format_func=str.upper,
                 help="LFSSD: label-free (‖f(x)‖² sensitivity). SSD: labelled (Fisher diagonal).")
        st.radio("Importance mode", MODES, key=state.MODE, horizontal=True,
                 help="batch: the reference code (|batch-mean gradient|); sample: the paper's equation 3")
        st.session_state[state.ALPHA] = min(max(float(st.session_state[state.ALPHA]), ALPHA_MIN), ALPHA_MAX)
        st.slider("α (selection threshold)", ALPHA_MIN, ALPHA_MAX, step=0.5, key=state.ALPHA,
                  help="an element is dampened when I_Df > α·I_D: lower α dampens more")
        st.slider("λ (dampening constant)", 0.0, 5.0, step=0.1, key=state.LAMBDA,
                  help="a dampened element is multiplied by β = min(λ·I_D/I_Df, 1)")
        if "_url_warning" in st.session_state:
            st.warning(st.session_state.pop("_url_warning"))
    selection = state.current()
    state.write_to_url(selection)
    return selection


def _class_label(index: int, classes: tuple[str, ...]) -> str:
    return classes[index] if classes[index] == str(index) else f"{index}: {classes[index]}"


def target_picker() -> None:
    """What to forget: a class, random training images, or unlabelled images (test split or upload)."""
    from ui.compute import dataset

    classes = dataset(st.session_state[state.DATASET]).classes
    state.init_picker(len(classes))
    st.radio("What to forget", list(state.TARGET_KINDS), key=state.T_KIND, format_func=state.TARGET_KINDS.get)
    kind = st.session_state[state.T_KIND]
    if kind == "class":
        st.selectbox("Class", range(len(classes)), key=state.T_CLASS, format_func=lambda i: _class_label(i, classes))
    elif kind == "random":
        left, right = st.columns(2)
        left.number_input("How many", 1, 1000, step=10, key=state.T_N)
        right.number_input("Seed", 0, 10_000, key=state.T_SEED)
    else:
        st.radio("Images", list(state.IMAGE_SOURCES), key=state.T_SOURCE, format_func=state.IMAGE_SOURCES.get,
                 help="LFSSD needs no labels: the images' classes are never used")
        if st.session_state[state.T_SOURCE] == "test":
            st.selectbox("Test images of class", range(len(classes)), key=state.T_IMAGE_CLASS,
                         format_func=lambda i: _class_label(i, classes))
        else:
            st.file_uploader("Images to forget (PNG, JPEG, GIF, BMP, WebP, TIFF)", accept_multiple_files=True,
                             type=["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"], key=state.UPLOADS)
    st.session_state[state.TARGET] = state.target_from_picker()


def _delta(new: float | None, old: float | None) -> str | None:
    if new is None or old is None or math.isnan(new) or math.isnan(old) or abs(new - old) < 0.05:
        return None
    return f"{new - old:+.1f}"


def _vs_retrain(value: float | None, retrain: EvalResult | None, field: str) -> str | None:
    reference = getattr(retrain, field, None) if retrain is not None else None
    if reference is None or value is None:
        return None
    return f"retrain {reference:.1f}"


def metric_cards(base: EvalResult, new: EvalResult, dampened_fraction: float, dampened: int,
                 retrain: EvalResult | None = None) -> None:
    """Scores after forgetting; deltas against the baseline, and the retrained model's value."""
    cols = st.columns(5)
    cols[0].metric(f"D_r accuracy ({base.d_r_split})", f"{new.d_r:.1f} %", _delta(new.d_r, base.d_r),
                   delta_description=_vs_retrain(new.d_r, retrain, "d_r"))
    if new.d_f is not None:
        cols[1].metric(f"D_f accuracy ({base.d_f_split})", f"{new.d_f:.1f} %", _delta(new.d_f, base.d_f),
                       delta_color="inverse", delta_description=_vs_retrain(new.d_f, retrain, "d_f"))
    else:
        cols[1].metric("D_f accuracy", "— (no labels)", help="unlabelled forget images have no accuracy; see the gallery")
    cols[2].metric("test accuracy", f"{new.test:.1f} %", _delta(new.test, base.test))
    cols[3].metric("MIA (entropy attack)", f"{new.mia:.1f}", _delta(new.mia, base.mia), delta_color="inverse",
                   delta_description=_vs_retrain(new.mia, retrain, "mia"),
                   help="share of forget samples an entropy-based logistic regression calls 'member' (×100); "
                        "the goal is the retrained model's value")
    cols[4].metric("parameters dampened", f"{dampened_fraction * 100:.2f} %", f"{dampened:,} elements",
                   delta_color="off", delta_arrow="off")
