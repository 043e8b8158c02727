"""st.cache_* wrappers around core: one shared prepared experiment per plain-valued selection.

``st.cache_resource`` hands the same ``Prepared`` (and its baseline model) to every session;
core's ``dampen`` always works on a copy, so no session can change what another sees.
"""
from __future__ import annotations

import streamlit as st

from core.dampening import RatioHistogram, ratio_histogram
from core.experiment import ExperimentConfig, ForgetOutcome, Prepared, forget, prepare


@st.cache_resource(show_spinner=False, max_entries=8)
def prepared(dataset: str, model: str, target: str, method: str, mode: str) -> Prepared:
    bar = st.progress(0.0, text="preparing the experiment…")
    try:
        config = ExperimentConfig(dataset=dataset, model=model, forget=target, kind=method, mode=mode)
        return prepare(config, progress=lambda fraction, message: bar.progress(min(fraction, 1.0), text=message))
    finally:
        bar.empty()


@st.cache_resource(show_spinner=False, max_entries=32)
def histogram(_prepared: Prepared, key: tuple) -> RatioHistogram:
    """log10(I_Df/I_D) counts: independent of α and λ, so computed once per experiment."""
    return ratio_histogram(_prepared.imp_full, _prepared.imp_forget)


def outcome(prep: Prepared, alpha: float, lambda_: float) -> ForgetOutcome:
    return forget(prep, alpha, lambda_)
