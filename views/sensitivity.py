"""Sensitivity: how D_r, D_f and the MIA move with α and λ, where the plateau lies, and paper Table 2."""
import streamlit as st

from core.plots import sensitivity as sp
from core.errors import UserError
from core.evaluation.accuracy import needs_subset
from ui import compute, state, widgets

ALPHAS, LAMBDAS, HEAT_METRIC, TABLE2 = "sens_alphas", "sens_lambdas", "sens_heat_metric", "sens_table2"


def table2_preset() -> None:  # a callback: runs before the λ slider is drawn
    st.session_state[ALPHAS] = sp.format_grid(sp.PAPER_ALPHAS)
    st.session_state[state.LAMBDA] = sp.TABLE2_LAMBDA
    st.session_state[TABLE2] = True


selection, key, choice = state.current(), None, None
try:
    prep = compute.prepared(selection)
    key = compute.experiment_key(prep)
    choice = compute.apply_alpha_rule(prep)
    ceiling = prep.alpha_ceiling
    default = sp.format_grid(sp.default_alphas(ceiling))  # follows the data set unless the user edited it
    if st.session_state.get(ALPHAS) in (None, st.session_state.get("sens_alphas_default")):
        st.session_state[ALPHAS] = default
    st.session_state["sens_alphas_default"] = default
    st.session_state.setdefault(LAMBDAS, sp.format_grid(sp.DEFAULT_LAMBDAS))
    retrain, no_retrain = compute.retrained(prep, key), None
except UserError as exc:
    if key is None:
        widgets.show_user_error(exc)
        st.stop()
    retrain, no_retrain = None, str(exc)
retrain_d_f = retrain.d_f if retrain is not None else None

st.subheader(f"Sensitivity to α and λ — forgetting {prep.split.description} ({selection.method.upper()}, "
             f"{prep.config.model} on {selection.dataset})")
st.caption("Dashed lines: the model before forgetting (grey) and one retrained without D_f (green)."
           + (f" No retrained reference: {no_retrain}" if no_retrain else ""))
if needs_subset(prep.dataset, prep.split):
    st.caption("**Estimated on the subset**: on a data set this large every point is scored on a fixed stratified "
               "subset of the evaluation images (every forget sample included), as slider moves are; the Forget "
               "page's **Full evaluation** gives exact figures, with 95 % intervals for the subset's.")
alpha_col, lambda_col = st.columns(2)
with alpha_col:
    widgets.alpha_slider(ceiling, prep.ceiling_note)
with lambda_col:
    widgets.lambda_slider()
widgets.auto_control(choice)
selection = state.current()  # the sliders' values, as just drawn

grid_col, preset_col, reset_col = st.columns([3, 1.2, 1], vertical_alignment="bottom")
grid_col.text_input("α grid (comma-separated)", key=ALPHAS, on_change=lambda: st.session_state.update({TABLE2: False}))
preset_col.button("Paper Table 2 preset", key="sens_table2_button", on_click=table2_preset, width="stretch",
                  help="α = 1, 5, 10, 25, 50 at λ = 1, as in the paper's Table 2")
reset_col.button("Default grid", key="sens_reset", width="stretch",
                 on_click=lambda: st.session_state.update({ALPHAS: default, TABLE2: False}))

try:
    alphas = sp.parse_grid(st.session_state[ALPHAS], "α")
    table = compute.sweep_table(prep, key, alphas, (selection.lambda_,))
except UserError as exc:
    widgets.show_user_error(exc)
    table = None
if table is not None:
    found = sp.plateau(table, prep.baseline.d_r, retrain_d_f)
    st.markdown(f"**α sweep at λ = {selection.lambda_:g}** (λ from the slider above)")
    (st.success if found else st.warning)(sp.plateau_sentence(found, retrain_d_f, prep.baseline.d_r,
                                                              prep.split.labelled))
    chosen = (selection.alpha_rule, selection.alpha) if selection.alpha_rule else None
    st.plotly_chart(sp.alpha_sweep_figure(table, prep.baseline, retrain, found, chosen), width="stretch",
                    key="sens_alpha_fig")
    widgets.auto_curve(choice)
    st.dataframe(table, hide_index=True, width="stretch", key="sens_table", column_config={
        "alpha": st.column_config.NumberColumn("α", format="%g"),
        "lambda": st.column_config.NumberColumn("λ", format="%g"),
        "selected_fraction": st.column_config.NumberColumn("selected (share)", format="%.5f"),
        **{c: st.column_config.NumberColumn(c, format="%.2f")
           for c in ("d_r", "d_f", "test", "mia", "retain_train", "forget_train")}})
    st.download_button("Download the α sweep (CSV)", table.to_csv(index=False),
                       file_name=f"alpha_sweep_{selection.dataset}_{selection.target.replace(':', '-')}.csv",
                       mime="text/csv", key="sens_csv")
    if st.session_state.get(TABLE2):
        st.markdown("**Paper Table 2 beside ours**")
        paper = sp.table2_comparison(table)
        st.dataframe(paper, hide_index=True, key="sens_table2_df", column_config={
            c: st.column_config.NumberColumn(format="%g" if c == "α" else "%.2f") for c in paper.columns})
        st.caption(f"Paper: CIFAR-100, forgetting the class 'rocket' from a ResNet18 (LFSSD, λ = 1). Ours: "
                   f"{prep.split.description} on {selection.dataset} with {prep.config.model} — another data set, so "
                   f"compare the shape, not the numbers: |D|/|D_f| ≈ {ceiling:.0f} here (≈ 100 on CIFAR-100), and "
                   f"α much above {ceiling:.0f} selects nothing and forgets nothing.")

lam_col, heat_col = st.columns(2)
with lam_col:
    st.markdown(f"**λ sweep at α = {selection.alpha:g}** (α from the slider above; dotted: retrained)")
    st.text_input("λ grid (comma-separated)", key=LAMBDAS)
    try:
        lambdas = sp.parse_grid(st.session_state[LAMBDAS], "λ", allow_zero=True)
        st.plotly_chart(sp.lambda_sweep_figure(compute.sweep_table(prep, key, (selection.alpha,), lambdas), prep.baseline,
                                               retrain), width="stretch", key="sens_lambda_fig")
    except UserError as exc:
        widgets.show_user_error(exc)
with heat_col:
    heat_alphas = sp.heatmap_alphas(ceiling)
    st.markdown(f"**α × λ heatmap** ({len(heat_alphas)} × {len(sp.HEATMAP_LAMBDAS)} runs)")
    options = [m for m in ("d_f", "d_r", "mia") if m != "d_f" or prep.split.labelled]
    metric = st.selectbox("Show", options, key=HEAT_METRIC, format_func=sp.METRICS.get)
    heat = compute.sweep_table(prep, key, heat_alphas, sp.HEATMAP_LAMBDAS)
    st.plotly_chart(sp.heatmap_figure(heat, metric), width="stretch", key="sens_heatmap")
