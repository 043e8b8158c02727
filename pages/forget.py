"""Forget: move α and λ and see what was dampened and what it did."""
import streamlit as st

from core.errors import UserError
from core.plots import layer_bars_figure, per_class_figure, ratio_histogram_figure
from ui import compute, state, widgets

selection = state.current()
try:
    prep = compute.prepared(selection.dataset, selection.model, selection.target, selection.method, selection.mode)
    result = compute.outcome(prep, selection.alpha, selection.lambda_)
except UserError as exc:
    st.error(str(exc))
    st.stop()

st.subheader(f"Forgetting {prep.split.description} — {selection.method.upper()}, {prep.config.model} on {selection.dataset}")
widgets.metric_cards(prep.baseline, result.result, result.report.fraction, result.report.selected)

left, right = st.columns([3, 2])
with left:
    st.markdown("**Which elements α selects** — right of the line are dampened")
    hist = compute.histogram(prep, (selection.dataset, selection.model, selection.target, selection.method, selection.mode))
    st.plotly_chart(ratio_histogram_figure(hist, selection.alpha), width="stretch")
    st.caption(f"{hist.only_forget:,} elements matter only to D_f (I_D = 0; dampened to 0 at any α); "
               f"{hist.no_signal:,} have no gradient at all.")
with right:
    st.markdown("**Where: share of each tensor dampened** (input at the top)")
    st.plotly_chart(layer_bars_figure(result.report), width="stretch")

st.markdown("**Test accuracy per class**")
st.plotly_chart(per_class_figure(prep.baseline.per_class_test, result.result.per_class_test, prep.dataset.classes),
                width="stretch")
with st.expander("What these numbers mean"):
    st.markdown(
        "- **D_r / D_f accuracy**: class targets are scored on the *test* split (retained classes / the forgotten "
        "class); random targets score D_r on the whole test split and D_f on the forgotten *train* samples.\n"
        "- **MIA**: the entropy membership-inference attack (Chundawat et al., as in the SSD and LFSSD papers). "
        "The goal is a retrained model's value, not 0.\n"
        "- **Importance**: batch mode follows the reference code; sample mode is the paper's equation 3.")
