"""LFSSD Explorer — a first page: forget a digit class with LFSSD and see what changed.

The full multi-page app is built on the same ``core`` calls; this page trains the embedded
default model on first run (seconds), caches it, and shows the default experiment.
"""
import streamlit as st

from core.data import DATASETS
from core.errors import UserError
from core.experiment import ExperimentConfig, default_alpha, forget, prepare

st.set_page_config(page_title="LFSSD Explorer", layout="wide")


@st.cache_resource(show_spinner=False)
def prepared_experiment(dataset: str, target: str, kind: str, mode: str):
    bar = st.progress(0.0, text="preparing…")
    try:
        return prepare(ExperimentConfig(dataset=dataset, forget=target, kind=kind, mode=mode),
                       progress=lambda f, msg: bar.progress(min(f, 1.0), text=msg))
    finally:
        bar.empty()


st.title("LFSSD Explorer")
st.caption("Loss-Free Selective Synaptic Dampening: forget data without labels and without retraining.")

with st.sidebar:
    dataset = st.selectbox("Data set", ["digits", "mnist5k"], key="dataset",
                           format_func=lambda name: DATASETS.get(name).description)
    target = st.text_input("Forget target", "class:3", key="target",
                           help="class:<id>, random:<n>[:<seed>] or images:<folder>")
    kind = st.radio("Importance", ["lfssd", "ssd"], key="kind", horizontal=True,
                    help="LFSSD needs no labels; SSD uses the labelled Fisher diagonal")
    mode = st.radio("Mode", ["batch", "sample"], key="mode", horizontal=True,
                    help="batch: the reference code; sample: the paper's equation 3")
    alpha = st.slider("α (selection threshold)", 0.5, 20.0, default_alpha(dataset, target.split(":")[0]), 0.5, key="alpha")
    lambda_ = st.slider("λ (dampening constant)", 0.0, 5.0, 1.0, 0.1, key="lambda")

try:
    prepared = prepared_experiment(dataset, target, kind, mode)
    outcome = forget(prepared, alpha, lambda_)
except UserError as exc:
    st.error(str(exc))
    st.stop()

base, new = prepared.baseline, outcome.result
st.subheader(f"Forgetting {prepared.split.description} from a {prepared.config.model} on {dataset}")
cols = st.columns(5)
cols[0].metric(f"D_r accuracy ({base.d_r_split})", f"{new.d_r:.1f} %", f"{new.d_r - base.d_r:+.1f}")
if new.d_f is not None:
    cols[1].metric(f"D_f accuracy ({base.d_f_split})", f"{new.d_f:.1f} %", f"{new.d_f - base.d_f:+.1f}", delta_color="inverse")
cols[2].metric("test accuracy", f"{new.test:.1f} %", f"{new.test - base.test:+.1f}")
cols[3].metric("MIA (entropy attack)", f"{new.mia:.1f}", f"{new.mia - base.mia:+.1f}", delta_color="inverse")
cols[4].metric("parameters dampened", f"{outcome.report.fraction * 100:.2f} %", f"{outcome.report.selected:,} elements",
               delta_color="off")
st.bar_chart({"baseline": list(base.per_class_test), "after forgetting": list(new.per_class_test)}, stack=False,
             x_label="class", y_label="test accuracy (%)")
st.caption("D_r and D_f are scored on the test split for class targets; MIA is the entropy-based "
           "membership inference attack (share of forget samples called 'member').")
