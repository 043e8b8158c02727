"""The user's selection: constant session-state keys, mirrored in the URL so a link reopens a view."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.experiment import default_alpha
from core.splits import ForgetSpec

DATASET, MODEL, TARGET, ALPHA, LAMBDA, METHOD, MODE = "dataset", "model", "target", "alpha", "lambda", "method", "mode"
DEFAULTS = {DATASET: "digits", MODEL: "small_cnn", TARGET: "class:3", ALPHA: 3.5, LAMBDA: 1.0, METHOD: "lfssd", MODE: "batch"}
FLOATS = (ALPHA, LAMBDA)


@dataclass(frozen=True)
class Selection:
    dataset: str
    model: str
    target: str
    alpha: float
    lambda_: float
    method: str
    mode: str


def init_from_url() -> None:
    """Fill every missing key: from the URL on a session's first run, else from the defaults."""
    first_run = not st.session_state.get("_initialised")
    params = st.query_params
    for key, default in DEFAULTS.items():
        if key in st.session_state:
            continue
        value, raw = default, params.get(key) if first_run else None
        if raw is not None:
            try:
                value = float(raw) if key in FLOATS else str(raw)
            except ValueError:
                st.session_state["_url_warning"] = f"ignored URL parameter {key}={raw!r}: not a number"
        st.session_state[key] = value
    st.session_state["_initialised"] = True


def current() -> Selection:
    init_from_url()
    s = st.session_state
    return Selection(s[DATASET], s[MODEL], s[TARGET], float(s[ALPHA]), float(s[LAMBDA]), s[METHOD], s[MODE])


def write_to_url(selection: Selection) -> None:
    st.query_params.from_dict({DATASET: selection.dataset, MODEL: selection.model, TARGET: selection.target,
                               ALPHA: f"{selection.alpha:g}", LAMBDA: f"{selection.lambda_:g}",
                               METHOD: selection.method, MODE: selection.mode})


def suggested_alpha(dataset: str, target: str) -> float:
    try:
        return default_alpha(dataset, ForgetSpec.parse(target).kind)
    except ValueError:
        return DEFAULTS[ALPHA]
