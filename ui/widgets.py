"""Shared widgets: the sidebar selection, metric cards, and user-error display."""
from __future__ import annotations

import math

import streamlit as st

from core.data import DATASETS, available_datasets
from core.evaluate import EvalResult
from core.importance import KINDS, MODES
from core.models import MODELS
from ui import state

MODEL_CHOICES = ["small_cnn", "resnet18", "vit"]  # trained here; vit_b16 needs the model hub (CLI only)
# α on a log scale: roughly even steps in log α from 0.5 to 100 (the paper uses 1 … 50).
ALPHA_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0,
              7.0, 8.0, 9.0, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 35.0, 40.0, 50.0, 60.0, 70.0, 80.0, 100.0)
LAMBDA_MAX = 5.0


def sidebar() -> state.Selection:
    """Draw the shared sidebar; returns the selection (also written to the URL)."""
    state.init_from_url()
    with st.sidebar:
        choices = available_datasets()
        if st.session_state[state.DATASET] not in choices:
            st.session_state["_url_warning"] = (f"data set '{st.session_state[state.DATASET]}' is not available here; "
                                                f"showing digits (CIFAR needs its files in $LFSSD_DATA_DIR)")
            st.session_state[state.DATASET] = "digits"
        st.selectbox("Data set", choices, key=state.DATASET, format_func=lambda n: DATASETS.get(n).description)
        if st.session_state[state.MODEL] not in MODEL_CHOICES:
            st.session_state["_url_warning"] = f"model '{st.session_state[state.MODEL]}' is not offered here; showing small_cnn"
            st.session_state[state.MODEL] = "small_cnn"
        st.selectbox("Model", MODEL_CHOICES, key=state.MODEL, format_func=lambda n: MODELS.get(n).description)
        target_picker()
        st.radio("Method", KINDS, key=state.METHOD, horizontal=True, format_func=str.upper,
                 help="LFSSD: label-free (‖f(x)‖² sensitivity). SSD: labelled (Fisher diagonal).")
        st.radio("Importance mode", MODES, key=state.MODE, horizontal=True,
                 help="batch: the reference code (|batch-mean gradient|); sample: the paper's equation 3")
        baseline_source()
        st.caption("α and λ: sliders on the Forget, Sensitivity and Importance pages. The address bar always "
                   "holds a link to this exact view.")
        if "_url_warning" in st.session_state:
            st.warning(st.session_state.pop("_url_warning"))
    selection = state.current()
    state.write_to_url(selection)
    return selection


def baseline_source() -> None:
    """Which model is forgotten from: the trained default, or a checkpoint uploaded on Model & data."""
    upload = st.session_state.get(state.BASELINE_UPLOAD)
    if upload is None:
        return
    s = st.session_state
    if (upload["dataset"], upload["model"]) != (s[state.DATASET], s[state.MODEL]):
        st.caption(f"Your checkpoint {upload['name']} is for {upload['model']} on {upload['dataset']}: "
                   "using the trained baseline here.")
        return
    st.info(f"Baseline: your checkpoint **{upload['name']}**")
    st.button("Use the trained baseline instead", key="use_trained_baseline",
              on_click=lambda: s.pop(state.BASELINE_UPLOAD, None))


def _copy(source: str, target: str) -> None:
    st.session_state[target] = st.session_state[source]


def _sync_widget(key: str, value: float) -> None:
    """Give a slider the shared value only when it differs: every assignment makes Streamlit send
    the value to the browser again, which there races with a key press under load."""
    if st.session_state.get(key) != value:
        st.session_state[key] = value


def alpha_slider(ceiling: float | None = None) -> float:
    """α on a log scale; values past the ratio ceiling (≈ |D|/|D_f|) are marked.

    The widget has its own key and copies into the shared ALPHA on change, so the value survives
    pages that draw no slider (Streamlit drops an undrawn widget's state).
    """
    s = st.session_state
    alpha = float(s[state.ALPHA])
    _sync_widget(state.W_ALPHA, alpha)

    def label(a: float) -> str:
        return f"{a:g}" + (" (past the ceiling)" if ceiling is not None and a > ceiling else "")

    st.select_slider("α — selection threshold (log scale)", sorted({*ALPHA_GRID, alpha}), key=state.W_ALPHA,
                     format_func=label, on_change=_copy, args=(state.W_ALPHA, state.ALPHA),
                     help="an element is dampened when I_Df > α·I_D: lower α dampens more")
    if ceiling is not None:
        st.caption(f"Ceiling ≈ {ceiling:.3g} (|D|/|D_f|, counted in batches in batch mode): I_Df/I_D rarely "
                   "exceeds it, so α above it dampens next to nothing.")
    return float(s[state.ALPHA])


def lambda_slider() -> float:
    """λ, with the same own-key-and-copy arrangement as α."""
    s = st.session_state
    lambda_ = float(s[state.LAMBDA])
    _sync_widget(state.W_LAMBDA, lambda_)
    st.slider("λ — dampening constant", 0.0, max(LAMBDA_MAX, lambda_), step=0.1, key=state.W_LAMBDA,
              on_change=_copy, args=(state.W_LAMBDA, state.LAMBDA),
              help="a dampened element is multiplied by β = min(λ·I_D/I_Df, 1): lower λ dampens harder")
    return float(s[state.LAMBDA])


def _class_label(index: int, classes: tuple[str, ...]) -> str:
    return classes[index] if classes[index] == str(index) else f"{index}: {classes[index]}"


def target_picker() -> None:
    """What to forget: a class, random training images, or unlabelled images (test split or upload)."""
    from ui.compute import dataset

    data = dataset(st.session_state[state.DATASET])
    classes, subclasses = data.classes, data.fine_classes or ()
    state.init_picker(len(classes), len(subclasses))
    kinds = [k for k in state.TARGET_KINDS if k != "subclass" or subclasses]  # sub-classes: CIFAR-20 only
    st.radio("What to forget", kinds, key=state.T_KIND, format_func=state.TARGET_KINDS.get)
    kind = st.session_state[state.T_KIND]
    if kind == "class":
        st.selectbox("Class", range(len(classes)), key=state.T_CLASS, format_func=lambda i: _class_label(i, classes))
    elif kind == "subclass":
        superclass = _superclass_names(data)
        st.selectbox("Sub-class", range(len(subclasses)), key=state.T_SUBCLASS,
                     format_func=lambda i: f"{subclasses[i]} (in {superclass[i]})")
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


def _superclass_names(data) -> list[str]:
    """Each fine class's superclass name, read off the training labels."""
    names = ["?"] * len(data.fine_classes)
    for fine, coarse in zip(data.fine_train_y.tolist(), data.train_y.tolist()):
        names[fine] = data.classes[coarse]
    return names


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
        cols[1].metric("D_f accuracy (no labels)", "—",
                       help="unlabelled forget images have no accuracy: the gallery and the prediction shift below "
                            "show what changed")
    cols[2].metric("test accuracy", f"{new.test:.1f} %", _delta(new.test, base.test))
    mia_help = ("share of forget samples an entropy-based logistic regression calls 'member' (×100); "
                f"the goal is the retrained model's value. Fitted on {new.mia_sets}.")
    if new.mia is not None:
        cols[3].metric("MIA (entropy attack)", f"{new.mia:.1f}", _delta(new.mia, base.mia), delta_color="inverse",
                       delta_description=_vs_retrain(new.mia, retrain, "mia"), help=mia_help)
    else:
        cols[3].metric("MIA (entropy attack)", "—", help=f"{mia_help} No number: {new.mia_note}.")
    cols[4].metric("parameters dampened", f"{dampened_fraction * 100:.2f} %", f"{dampened:,} elements",
                   delta_color="off", delta_arrow="off")
    if new.mia is None:
        st.caption(f"MIA: no number after forgetting, because {new.mia_note}. Attack fitted on {new.mia_sets}.")
    elif not new.mia_sets.endswith("(the papers' sets)"):
        st.caption(f"MIA attack fitted on {new.mia_sets}.")


def interval_text(interval: tuple[float, float] | None) -> str:
    """A 95 % interval in %, "exact" where the whole set was scored, "—" where there is none."""
    if interval is None:
        return "—"
    low, high = interval
    return "exact" if low == high else f"{low:.1f}–{high:.1f} %"


def subset_caption(result: EvalResult) -> None:
    """What a subset evaluation scored, and how far its accuracies could be from the full ones."""
    s = result.sample
    if s is None:
        return
    ci = s.intervals
    st.caption(
        f"**Estimated on a fixed stratified subset** (seed {s.seed}): {s.test_scored:,} of {s.test_total:,} test "
        f"images and {s.train_scored:,} of {s.train_total:,} training images, every forget sample included. "
        f"{s.confidence:.0%} intervals — D_r {interval_text(ci.get('d_r'))}, D_f {interval_text(ci.get('d_f'))}, "
        f"test {interval_text(ci.get('test'))}. MIA: attack refit on the subset; no interval. "
        "Deltas are against the baseline on the same subset; **Full evaluation** scores every image.")
