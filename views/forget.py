"""Forget: move α and λ and see what was dampened, where, and what it did.

Everything that depends on α and λ lives in one fragment: a slider move re-runs only that part,
not the sidebar, the preparation lookup or the retrained reference.
"""
import streamlit as st

from core.method.dampening import selected_betas
from core.errors import UserError
from core.experiment import Prepared
from core.evaluation.accuracy import EvalResult
from core.data.gallery import gallery, prediction_shares
from core.plots.forget import (beta_histogram_figure, layer_bars_figure, per_class_figure, prediction_shift_figure,
                        ratio_histogram_figure)
from ui import compute, downloads, state, widgets


def nothing_selected(hist, alpha: float, kind: str) -> str:
    """Why α selects nothing, and what to try: a default that does nothing must say so."""
    filled = hist.counts.nonzero()[0]
    top = 10 ** float(hist.edges[filled[-1] + 1]) if len(filled) else None
    why = (f"no element's I_Df/I_D exceeds α = {alpha:g}" + (f" (the largest is below ≈ {top:.3g})" if top else ""))
    if kind == "random":
        return (f"Nothing is dampened: {why}. For random training images that is the expected outcome: they look "
                "like the rest of D, so no parameter matters more to them, and a model retrained without them "
                "behaves much like the baseline on them (compare the MIA with the retrained value). "
                + (f"Lower α below {top:.3g} to see what dampening them costs." if top else ""))
    return f"Nothing is dampened: {why}." + (f" Lower α below {top:.3g} to forget." if top else "")


@st.fragment
def live(prep: Prepared, retrain: EvalResult | None) -> None:
    choice = compute.apply_alpha_rule(prep)  # Auto on: the rule sets α and λ before the sliders are drawn
    sel = state.current()
    try:
        result = compute.outcome(prep, sel.alpha, sel.lambda_)
    except UserError as exc:
        widgets.show_user_error(exc)
        return
    scores = compute.full_evaluation(prep, sel.alpha, sel.lambda_) or result.result
    cards = st.container()
    if result.result.sample is not None:  # a large data set: slider moves score a fixed subset
        note, button = st.columns([6, 1], vertical_alignment="center")
        if scores.sample is None:
            note.caption(f"**Full evaluation**: every image scored at α = {sel.alpha:g}, λ = {sel.lambda_:g} "
                         "(exact). Moving a slider goes back to the subset.")
        elif button.button("Full evaluation", key="fg_full_eval", help="score every image at these α and λ"):
            scores = compute.run_full_evaluation(prep, sel.alpha, sel.lambda_)
            note.caption("**Full evaluation**: every image scored (exact).")
        else:
            with note:
                widgets.subset_caption(scores)
    with cards:
        widgets.metric_cards(compute.baseline_like(prep, scores), scores, result.report.fraction,
                             result.report.selected, retrain, prep.split.spec.kind, compute.reference_note(prep),
                             compute.reference_about(prep))

    left, right = st.columns([3, 2])
    with left:
        widgets.alpha_lambda_controls(prep, choice)
        hist = compute.histogram(prep, compute.experiment_key(prep))
        st.markdown("**Which elements α selects** — right of the dashed line are dampened")
        st.plotly_chart(ratio_histogram_figure(hist, sel.alpha, prep.alpha_ceiling, sel.alpha_rule), width="stretch",
                        key="fg_hist")
        st.caption(f"At α = {sel.alpha:g}: {result.report.selected:,} of {result.report.numel:,} elements "
                   f"({result.report.fraction:.2%}) dampened · {hist.only_forget:,} matter only to D_f "
                   f"(I_D = 0: zeroed at any α) · {hist.no_signal:,} get no gradient, never touched.",
                   help=f"Dotted line: the ceiling ≈ {prep.alpha_ceiling:.3g} ({prep.ceiling_note})."
                   if prep.alpha_ceiling is not None else None)
    with right:
        if result.report.selected == 0:  # empty bars would say nothing: say why, and what to try, instead
            st.info(nothing_selected(hist, sel.alpha, prep.split.spec.kind))
        else:
            st.markdown("**Where: % of each tensor dampened**", help="input layers on top, output at the bottom")
            st.plotly_chart(layer_bars_figure(result.report), width="stretch", key="fg_layers")
            st.markdown("**How hard: β of the dampened elements**")
            st.plotly_chart(beta_histogram_figure(selected_betas(prep.imp_full, prep.imp_forget, sel.alpha,
                                                                 sel.lambda_)), width="stretch", key="fg_betas")

    widgets.auto_curve(choice)
    st.markdown("**The forget images, before → after** (top predictions, class:probability)")
    items = gallery(prep.dataset, prep.split, prep.baseline.forget_probs, result.result.forget_probs)
    for col, item in zip(st.columns(len(items) or 1), items):
        col.image(item.image, caption=item.name, clamp=True)
        col.caption("before " + " ".join(f"**{c}**:{p:.0%}" for c, p in item.before[:1]))
        col.caption("after " + " ".join(f"**{c}**:{p:.0%}" for c, p in item.after[:2]))

    shift, per_class = st.columns(2)
    classes = prep.dataset.classes
    with shift:
        st.markdown("**Where the forget set's predictions went**")
        st.plotly_chart(prediction_shift_figure(prediction_shares(prep.baseline.forget_probs, len(classes)),
                                                prediction_shares(result.result.forget_probs, len(classes)), classes),
                        width="stretch", key="fg_shift")
    with per_class:
        st.markdown("**Test accuracy per class**")
        st.plotly_chart(per_class_figure(compute.baseline_like(prep, scores).per_class_test, scores.per_class_test, classes),
                        width="stretch", key="fg_per_class")
    downloads.report_and_model(prep, result, retrain, choice)
    state.write_to_url(state.current())  # a fragment run does not pass through the sidebar


sel = state.current()
prep, key = widgets.prepared_or_stop(sel)
retrain = compute.retrained_if_ready(prep, key) if prep.split.labelled else None
train_reference_after = prep.split.labelled and retrain is None  # results first, the reference after them

baseline = "your checkpoint" if sel.checkpoint else prep.config.model
st.subheader(f"Forgetting {prep.split.description} — {sel.method.upper()}, {baseline} on {sel.dataset}")
live(prep, retrain)
with st.expander("What these numbers mean"):
    st.markdown(
        "- **D_r / D_f accuracy**: class targets are scored on the *test* split (retained classes / the forgotten "
        "class); random targets score D_r on the whole test split and D_f on the forgotten *train* samples. "
        "Unlabelled images have no D_f accuracy: the gallery and the prediction shift show what changed.\n"
        "- **MIA**: the entropy membership-inference attack (Chundawat et al., as in the SSD and LFSSD papers). "
        "The goal is the *retrained* model's value (a model trained from scratch without D_f), not 0: "
        "over-forgetting is itself detectable.\n"
        "- **Importance**: batch mode follows the reference code (|batch-mean gradient|, D sorted by class with D_f "
        "last); sample mode is the paper's equation 3.\n"
        "- **α and λ**: the α slider is on a log scale; the dotted line on the histogram is the ratio ceiling "
        "(≈ |D|/|D_f| for LFSSD's ratios; SSD's own for its squared ones), beyond which α selects next to nothing.")
if train_reference_after:
    try:
        compute.retrained(prep, key)  # with its progress bar, below the results already shown
    except UserError as exc:
        st.warning(f"no retrained reference: {exc}")
    else:
        st.rerun()
