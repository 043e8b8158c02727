"""Overview: LFSSD in a few sentences and equations, with the default result live."""
import streamlit as st

from core.errors import UserError
from ui import compute, state, widgets

selection = state.current()
st.title("LFSSD Explorer")
st.markdown(
    "**Loss-Free Selective Synaptic Dampening** forgets a set of training data D_f *without labels and without "
    "retraining*. It scores each parameter by how sensitive the model's output is to it, over the whole training "
    "set D and over D_f, and shrinks the parameters that matter disproportionately to D_f.")
st.markdown("Importance (paper, equation 3), on the raw outputs — no loss, no labels:")
st.latex(r"\Omega_i = \frac{1}{N}\sum_{k=1}^{N}\left|\frac{\partial\, \lVert f(x_k;\theta)\rVert_2^2}{\partial \theta_i}\right|")
st.markdown("Dampening (equation 1), for every parameter element i:")
st.latex(r"\theta_i \leftarrow \begin{cases}\beta\,\theta_i & \text{if } \Omega_{D_f,i} > \alpha\,\Omega_{D,i}\\ "
         r"\theta_i & \text{otherwise}\end{cases}\qquad \beta=\min\!\left(\frac{\lambda\,\Omega_{D,i}}{\Omega_{D_f,i}},1\right)")
st.markdown("- **α** picks *which* parameters: lower α selects more (too low harms the retained data; too high "
            "selects nothing).\n- **λ** sets *how much* they shrink: lower λ dampens harder.")
train_reference_after = None
try:
    prep = compute.prepared(selection)
    if compute.apply_alpha_rule(prep) is not None:  # a link with alpha=auto: the rule's α here too
        selection = state.current()
    result = compute.outcome(prep, selection.alpha, selection.lambda_)
    key = compute.experiment_key(prep)
    retrain = compute.retrained_if_ready(prep, key) if prep.split.labelled else None
    train_reference_after = (prep, key) if prep.split.labelled and retrain is None else None
    st.markdown(f"**Live:** forgetting {prep.split.description} at α = {selection.alpha:g}"
                f"{f' ({selection.alpha_rule})' if selection.alpha_rule else ''}, λ = {selection.lambda_:g}")
    widgets.metric_cards(prep.baseline, result.result, result.report.fraction, result.report.selected, retrain,
                         prep.split.spec.kind, compute.reference_note(prep), compute.reference_about(prep))
except UserError as exc:
    widgets.show_user_error(exc)
st.markdown("**Explore**")
links = (("views/forget.py", "Forget: move α and λ, watch it forget"),
         ("views/sensitivity.py", "Sensitivity: sweep α and λ, find the plateau"),
         ("views/importance.py", "Importance maps: what α selects, what labels change"),
         ("views/compare.py", "Compare methods: LFSSD beside SSD, retraining and others"),
         ("views/model_data.py", "Model & data: the baseline, or your own checkpoint"))
for page, label in links:  # one per line: five side by side cut every label short at 1280 px
    st.page_link(page, label=label + " →")
if train_reference_after is not None:  # the retrained model the colours compare with, after the results
    try:
        compute.retrained(*train_reference_after)
    except UserError as exc:
        st.warning(f"no retrained reference: {exc}")
    else:
        st.rerun()
