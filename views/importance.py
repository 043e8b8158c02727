"""Importance maps: where I_D and I_Df sit, what α selects, and what labels and per-sample gradients change."""
import math

import streamlit as st

from core.plots import importance as ia
from core.errors import UserError
from ui import compute, state, widgets


def key(prep) -> tuple:
    """Plain values naming a prepared experiment (an upload's digest is in config.forget)."""
    c = prep.config
    return (c.dataset, c.model, c.forget, c.kind, c.mode, c.checkpoint, prep.batch_size)


@st.cache_data(show_spinner=False, max_entries=16)
def distributions(_prep, key: tuple):
    return ia.distribution_table(*ia.in_model_order(_prep))


@st.cache_data(show_spinner=False, max_entries=16)
def scatter(_prep, key: tuple) -> ia.ScatterSample:
    return ia.scatter_sample(*ia.in_model_order(_prep))


@st.cache_data(show_spinner=False, max_entries=64)
def overlap(_a, _b, key_a: tuple, key_b: tuple, alpha: float):
    return ia.overlap_table(ia.selection_masks(*ia.in_model_order(_a), alpha),
                            ia.selection_masks(*ia.in_model_order(_b), alpha))


@st.cache_data(show_spinner=False, max_entries=16)
def ranks(_a, _b, key_a: tuple, key_b: tuple):
    (full_a, forget_a), (full_b, forget_b) = ia.in_model_order(_a), ia.in_model_order(_b)
    return ia.rank_table(full_a, full_b, forget_a, forget_b)


def comparison_ui(table, label_a: str, label_b: str, chart_key: str) -> None:
    j = ia.jaccard(table)
    st.metric(f"Jaccard index, {label_a} vs {label_b}", "—" if math.isnan(j) else f"{j:.3f}",
              help="elements selected by both ÷ elements selected by either, over all tensors")
    st.markdown(ia.overlap_summary(table, label_a, label_b))
    st.plotly_chart(ia.overlap_figure(table, label_a, label_b), width="stretch", key=chart_key)


sel = state.current()
try:
    prep = compute.prepared(sel)
    if compute.apply_alpha_rule(prep) is not None:  # Auto on: its α here too
        sel = state.current()
    st.subheader(f"Importance maps — {sel.method.upper()}, {sel.mode} mode, forgetting {prep.split.description}")
    st.caption("I_D: how much each parameter element matters over all training data D; I_Df: over the forget "
               f"set alone. Equation 1 dampens an element when I_Df > α·I_D (α = {sel.alpha:g}).")
    with st.columns([2, 3])[0]:
        widgets.alpha_slider(prep.alpha_ceiling, prep.ceiling_note)

    left, right = st.columns(2)
    with left:
        st.markdown("**Per-layer distributions of log10 I_D and log10 I_Df** (input at the top)")
        dist = distributions(prep, key(prep))
        st.plotly_chart(ia.distribution_figure(dist), width="stretch", key="imp_dist")
        zeros = dist.groupby("importance")["zeros"].sum()
        st.caption(f"Boxes: quartiles; whiskers: 1st–99th percentile, of a seeded sample of up to 4,000 elements "
                   f"per tensor. Exact zeros (no log) are left out: "
                   f"I_D = 0 for {zeros[ia.FULL]:,} and I_Df = 0 for {zeros[ia.FORGET]:,} of "
                   f"{int(dist[dist.importance == ia.FULL].numel.sum()):,} elements.")
    with right:
        st.markdown(f"**I_D vs I_Df per element** — shaded: selected at α = {sel.alpha:g}")
        sample = scatter(prep, key(prep))
        st.plotly_chart(ia.scatter_figure(sample, sel.alpha), width="stretch", key="imp_scatter")
        st.caption(f"{sample.sampled:,} elements sampled per tensor in proportion to its size (seeded). "
                   f"Left off the log axes: {sample.left_off:,} — {sample.only_forget:,} with I_D = 0 < I_Df "
                   f"(selected at any α, dampened to 0), {sample.only_full:,} with I_Df = 0 < I_D and "
                   f"{sample.no_signal:,} with both 0 (never selected).")

    left, right = st.columns(2)
    with left:
        st.markdown(f"**LFSSD vs SSD at α = {sel.alpha:g}: what labels change** ({sel.mode} mode)")
        if not prep.split.labelled:
            st.info("SSD needs labels: its importance is the gradient of the cross-entropy with the true labels, "
                    "and these forget images have none. Only LFSSD (label-free) can run, so there is nothing to "
                    "compare it with. Pick a class or random target to see the comparison.")
        else:
            lf, ssd = (compute.prepared(sel, method=m) for m in ("lfssd", "ssd"))
            methods = overlap(lf, ssd, key(lf), key(ssd), sel.alpha)
            comparison_ui(methods, "LFSSD", "SSD", "imp_methods")
            st.caption("Same model, data and α. SSD scores elements with the labelled loss (cross-entropy, squared "
                       "gradients: the Fisher diagonal), LFSSD with the label-free ‖f(x)‖² (absolute gradients). "
                       "The elements only one of them selects are exactly what using labels changes. The ratios "
                       "are of squared vs absolute gradients, so one α is not equally strict for both.")
    with right:
        st.markdown(f"**Batch vs sample mode at α = {sel.alpha:g}** ({sel.method.upper()})")
        batch, per_sample = (compute.prepared(sel, mode=m) for m in ("batch", "sample"))
        modes = overlap(batch, per_sample, key(batch), key(per_sample), sel.alpha)
        comparison_ui(modes, "batch", "sample", "imp_modes")
        rho = ranks(batch, per_sample, key(batch), key(per_sample))
        st.caption("Batch mode (the reference code) takes |·| or (·)² of each batch's mean gradient; sample mode "
                   "(the paper's equation 3) of each sample's own. Spearman ρ (table below): do the two modes rank "
                   f"a tensor's elements alike? ρ of I_D per tensor: {rho.rho_I_D.min():.2f} to {rho.rho_I_D.max():.2f}.")

    st.markdown(f"**Per tensor: batch vs sample mode** ({sel.method.upper()}, α = {sel.alpha:g})")
    rho_format = {c: st.column_config.NumberColumn(format="%.3f") for c in ("Spearman ρ of I_D", "Spearman ρ of I_Df")}
    st.dataframe(ia.display_table(modes, "batch", "sample", rho), hide_index=True, column_config=rho_format)
    if prep.split.labelled:
        with st.expander(f"Per tensor: LFSSD vs SSD ({sel.mode} mode, α = {sel.alpha:g})"):
            st.dataframe(ia.display_table(methods, "LFSSD", "SSD"), hide_index=True)
except UserError as exc:
    widgets.show_user_error(exc)
