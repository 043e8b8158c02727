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
        st.text_input("Forget target", key=state.TARGET,
                      help="class:<id or name> · random:<n>[:<seed>] · images:<file, folder or glob>")
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


def _delta(new: float | None, old: float | None) -> str | None:
    if new is None or old is None or math.isnan(new) or math.isnan(old):
        return None
    return f"{new - old:+.1f}"


def metric_cards(base: EvalResult, new: EvalResult, dampened_fraction: float, dampened: int) -> None:
    cols = st.columns(5)
    cols[0].metric(f"D_r accuracy ({base.d_r_split})", f"{new.d_r:.1f} %", _delta(new.d_r, base.d_r))
    if new.d_f is not None:
        cols[1].metric(f"D_f accuracy ({base.d_f_split})", f"{new.d_f:.1f} %", _delta(new.d_f, base.d_f), delta_color="inverse")
    else:
        cols[1].metric("D_f accuracy", "— (no labels)")
    cols[2].metric("test accuracy", f"{new.test:.1f} %", _delta(new.test, base.test))
    cols[3].metric("MIA (entropy attack)", f"{new.mia:.1f}", _delta(new.mia, base.mia), delta_color="inverse",
                   help="share of forget samples an entropy-based logistic regression calls 'member' (×100)")
    cols[4].metric("parameters dampened", f"{dampened_fraction * 100:.2f} %", f"{dampened:,} elements", delta_color="off")
