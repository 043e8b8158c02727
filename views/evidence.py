"""Evidence: is it really forgotten? Every membership attack of core.evaluation.attacks, each named.

Live with α and λ: the forget examples' confidence under the dampened, retrained and baseline
models, the threshold that best tells the dampened model from the retrained one (its ε), and which
forget images stay recognisable. On request: the unlearning challenge's score over N models, and
relearning.
"""
import math

import numpy as np
import streamlit as st

from core.compare.evidence import pair_evidence
from core.errors import UserError
from core.evaluation.attacks import ATTACKS
from core.plots.forget import confidence_figure, relearning_figure
from ui import compute, state, widgets

STRIP = 12  # forget images shown in the per-example strip


def _number(value, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


@st.fragment
def live(prep, key, retrained_model, retrain) -> None:
    choice = compute.apply_alpha_rule(prep)
    widgets.alpha_lambda_controls(prep, choice)
    sel = state.current()  # as the sliders now show
    try:
        outcome = compute.outcome(prep, sel.alpha, sel.lambda_)
    except UserError as exc:
        widgets.show_user_error(exc)
        return
    pair = pair_evidence(prep, outcome, retrained_model)
    cards = st.columns(4)
    cards[0].metric(f"{ATTACKS.get('entropy').label}", _number(outcome.result.mia, 1),
                    None if retrain is None or retrain.mia is None else f"retrain {retrain.mia:.1f}",
                    delta_color="off", delta_arrow="off", help=ATTACKS.get("entropy").measures)
    if pair.separation is not None:
        cards[1].metric("ε, dampened vs retrained (one pair)", _number(pair.separation.epsilon),
                        f"baseline vs retrained {_number(pair.baseline_separation.epsilon)}", delta_color="off",
                        delta_arrow="off", help=ATTACKS.get("confidence").measures)
    else:
        cards[1].metric("ε, dampened vs retrained (one pair)", "—",
                        help="no retrained model: unlabelled images name nothing to leave out of the training set")
    cards[2].metric("forget images still recognised", f"{pair.recognised.mean():.0%}",
                    help="the dampened model's top class is still the image's label (unlabelled: the baseline's)")
    cards[3].metric("median confidence, dampened", _number(float(np.median(pair.dampened))),
                    None if pair.retrained is None else f"retrained {np.median(pair.retrained):.2f}",
                    delta_color="off", delta_arrow="off")
    st.caption(f"Confidence: {pair.statistic}, on the forget examples{' (training images of D_f)' if prep.split.labelled else ''}"
               "; ε: the best single threshold between the two samples, "
               "max(ln(1 − δ − FPR) − ln FNR, ln(1 − δ − FNR) − ln FPR), δ = 1e-5, capped at 50 — 0 means the "
               "dampened model's confidences cannot be told from the retrained model's. A dampened model much "
               "*less* confident than the retrained one is a trace too (over-forgetting).")
    st.plotly_chart(confidence_figure(pair), width="stretch", key="ev_hist")
    st.markdown("**Which forget images stay recognisable** (the dampened model's answer; ✓ = still its label)")
    images = (prep.dataset.train_x[prep.split.forget_train] if prep.split.labelled else prep.split.forget_images)[:STRIP]
    answers = outcome.scored.forget_logits().argmax(1)[:STRIP].tolist()
    for col, image, kept, answer, conf in zip(st.columns(STRIP), images, pair.recognised[:STRIP], answers,
                                               pair.dampened[:STRIP]):
        col.image(image.permute(1, 2, 0).numpy().squeeze(-1) if image.shape[0] == 1 else image.permute(1, 2, 0).numpy(),
                  clamp=True, width=48)
        col.caption(f"{'✓' if kept else '✗'} {prep.dataset.classes[answer]} · {conf:.1f}")
    widgets.auto_curve(choice)
    state.write_to_url(state.current())


sel = state.current()
prep, key = widgets.prepared_or_stop(sel)
st.subheader(f"Is it really forgotten? — {prep.split.description}, {sel.method.upper()}, {prep.config.model} on "
             f"{sel.dataset}")
retrained_model = retrain = None
if prep.split.labelled:
    retrained_model = compute.retrained_model_for(prep, key)
    retrain = compute.retrained(prep, key)
live(prep, key, retrained_model, retrain)

st.markdown("**The unlearning challenge's score over N models** "
            "(NeurIPS 2023: N originals trained with different seeds, each unlearned here, against N retrained)")
if not prep.split.labelled:
    st.info("Needs D_f's labels and retrained models: unlabelled images have neither.")
else:
    n_col, button_col, cancel_col = st.columns([1, 2, 1], vertical_alignment="bottom")
    models = n_col.number_input("N models", 3, 64, 32, key="ev_models",
                                help="32 on the small CNN: about 3 minutes on 2 cores the first time, then cached")
    current = state.current()
    pressed = button_col.button(f"Score {sel.method.upper()} at α = {current.alpha:g}, λ = {current.lambda_:g}",
                                key="ev_score", type="primary")
    shown = compute.stored_score(key, sel.method, current.alpha, current.lambda_, int(models))
    if pressed:
        cancel_col.button("Cancel", key="ev_cancel", help="stops between two models; what was trained stays cached")
        try:
            shown = compute.score_over_models(prep, key, sel.method, current.alpha, current.lambda_, int(models))
        except UserError as exc:
            widgets.show_user_error(exc)
    if shown is not None:
        result, cached = shown
        f_col, final_col, eps_col = st.columns(3)
        f_col.metric("forgetting score F", f"{result.forget_score:.3f}", help=ATTACKS.get("forget_score").measures)
        final_col.metric("final score", f"{result.final_score:.3f}",
                         help="F × (D_r accuracy ÷ retrained's) × (test accuracy ÷ retrained's)")
        eps_col.metric("median ε per forget example", _number(float(np.median(result.epsilons))))
        st.caption(("Served from the cache" if cached else f"Computed in {result.seconds:.0f} s")
                   + f" · N = {result.models} · mean D_r {result.d_r:.1f} % (retrained {result.d_r_retrain:.1f} %), "
                     f"test {result.test:.1f} % (retrained {result.test_retrain:.1f} %)")

    st.markdown("**Relearning**: fine-tune on D_f; knowledge that was only hidden comes back faster")
    if st.button("Run the relearning probe", key="ev_relearn"):
        current = state.current()
        relearned, cached = compute.relearning(prep, key, current.alpha, current.lambda_)
        st.plotly_chart(relearning_figure(relearned["curves"]), width="stretch", key="ev_relearn_fig")
        ratio = relearned["ratio"]
        st.caption(f"R = min(Δ_retrain ÷ Δ_dampened, 1) = {_number(ratio)} (Δ: the D_f accuracy gained, averaged "
                   f"over the steps; SGD lr {relearned['lr']:g}, {relearned['steps']} steps)"
                   + (" · served from the cache" if cached else ""))
