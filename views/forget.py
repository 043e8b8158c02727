"""Forget: move α and λ and see what was dampened, where, and what it did."""
import streamlit as st

from core.dampening import selected_betas
from core.errors import UserError
from core.gallery import gallery, prediction_shares
from core.plots import (beta_histogram_figure, layer_bars_figure, per_class_figure, prediction_shift_figure,
                        ratio_histogram_figure)
from ui import compute, downloads, state, widgets

sel = state.current()
try:
    prep = compute.prepared(sel.dataset, sel.model, sel.target, sel.method, sel.mode)
    result = compute.outcome(prep, sel.alpha, sel.lambda_)
except UserError as exc:
    st.error(str(exc))
    st.stop()
try:
    retrain = compute.retrained(prep, compute.experiment_key(prep)) if prep.split.labelled else None
except UserError:
    retrain = None

st.subheader(f"Forgetting {prep.split.description} — {sel.method.upper()}, {prep.config.model} on {sel.dataset}")
widgets.metric_cards(prep.baseline, result.result, result.report.fraction, result.report.selected, retrain)

left, right = st.columns([3, 2])
with left:
    st.markdown("**Which elements α selects** — right of the line are dampened")
    hist = compute.histogram(prep, compute.experiment_key(prep))
    st.plotly_chart(ratio_histogram_figure(hist, sel.alpha), width="stretch")
    st.caption(f"{hist.only_forget:,} elements matter only to D_f (I_D = 0: zeroed at any α); "
               f"{hist.no_signal:,} get no gradient at all and are never touched.")
with right:
    st.markdown("**Where: share of each tensor dampened** (input at the top)")
    st.plotly_chart(layer_bars_figure(result.report), width="stretch")
    st.markdown("**How hard: β of the dampened elements**")
    st.plotly_chart(beta_histogram_figure(selected_betas(prep.imp_full, prep.imp_forget, sel.alpha, sel.lambda_)),
                    width="stretch")

st.markdown("**The forget images, before → after** (top-3 predictions)")
items = gallery(prep.dataset, prep.split, prep.baseline.forget_probs, result.result.forget_probs)
for col, item in zip(st.columns(len(items) or 1), items):
    col.image(item.image, caption=item.name, clamp=True)
    col.caption("before: " + ", ".join(f"{c} {p:.0%}" for c, p in item.before))
    col.caption("after: " + ", ".join(f"{c} {p:.0%}" for c, p in item.after))

shift, per_class = st.columns(2)
with shift:
    st.markdown("**Where the forget set's predictions went**")
    classes = prep.dataset.classes
    st.plotly_chart(prediction_shift_figure(prediction_shares(prep.baseline.forget_probs, len(classes)),
                                            prediction_shares(result.result.forget_probs, len(classes)), classes),
                    width="stretch")
with per_class:
    st.markdown("**Test accuracy per class**")
    st.plotly_chart(per_class_figure(prep.baseline.per_class_test, result.result.per_class_test, classes), width="stretch")

downloads.report_and_model(prep, result, retrain)
with st.expander("What these numbers mean"):
    st.markdown(
        "- **D_r / D_f accuracy**: class targets are scored on the *test* split (retained classes / the forgotten "
        "class); random targets score D_r on the whole test split and D_f on the forgotten *train* samples. "
        "Unlabelled images have no D_f accuracy: the gallery and the prediction shift show what changed.\n"
        "- **MIA**: the entropy membership-inference attack (Chundawat et al., as in the SSD and LFSSD papers). "
        "The goal is the *retrained* model's value (a model trained from scratch without D_f), not 0: "
        "over-forgetting is itself detectable.\n"
        "- **Importance**: batch mode follows the reference code (|batch-mean gradient|, D sorted by class with D_f "
        "last); sample mode is the paper's equation 3.")
