"""Compare methods: the paper's table for the sidebar's target — LFSSD beside SSD, retraining,
finetuning, bad teacher and amnesiac — mean ± std over seeds, wall time, what each method needs.

A comparison takes tens of seconds, so it runs only when Run is pressed; it is cached by plain
values (experiment, methods, repeats, parameters, protocol) and shown again whenever the same
controls come back, in any session.
"""
import streamlit as st

from core.plots import compare as cp
from core.compare.run import Comparison, available_methods, compare, torch_threads, with_forget_scores
from core.errors import UserError
from core.compare.methods import DEFAULT_COMPARISON
from ui import compute, state, widgets

METHODS_KEY, REPEATS, PAPER, RUN, DONE = "cmp_methods", "cmp_repeats", "cmp_paper", "cmp_run", "cmp_done"
MODELS, SCORE = "cmp_models", "cmp_score"
DAMPENING = ("ssd", "lfssd")  # their α and λ are the sidebar selection's


@st.cache_data(show_spinner=False, max_entries=32)
def comparison(_prep, key: tuple, methods: tuple, repeats: int, params: tuple, protocol: str) -> Comparison:
    bar = st.progress(0.0, text=f"comparing {len(methods)} method(s) × {repeats} run(s)…")
    try:
        # one torch thread for the small CNN, as the CLI does: two ran ~9× slower on a busy 2-core machine
        with torch_threads(1 if _prep.config.model == "small_cnn" else None):
            return compare(_prep, list(methods), repeats, {m: dict(p) for m, p in params}, protocol,
                           progress=lambda f, message: bar.progress(min(f, 1.0), text=message), skip_unavailable=True)
    finally:
        bar.empty()


def controls_ui(offered: list[str]) -> tuple[list[str], int, bool, bool]:
    s = st.session_state
    s[METHODS_KEY] = [m for m in s.get(METHODS_KEY, [m for m in DEFAULT_COMPARISON if m in offered]) if m in offered]
    s.setdefault(REPEATS, 2)
    st.multiselect("Methods", offered, key=METHODS_KEY, format_func=cp.short_label, wrap=True,
                   help="the paper's columns; retrain (a fresh model trained without D_f) is the target to match")
    reps, proto, _, run = st.columns([1.4, 2, 3.3, 1], vertical_alignment="bottom")
    reps.number_input("Repeats (seeds)", 1, 5, key=REPEATS, help="runs per method, with seeds 0 … n−1")
    proto.toggle("Paper protocol", key=PAPER, help="the reference code's choices: batch-mode importance, accuracy "
                 "as the mean of per-batch accuracies (app protocol: sample-weighted)")
    clicked = run.button("Run", type="primary", key=RUN, width="stretch")
    chosen = [m for m in offered if m in s[METHODS_KEY]]  # the paper's column order, whatever the click order
    return chosen, int(s[REPEATS]), bool(s.get(PAPER)), clicked


def forget_scores_ui(prep, request: tuple, result: Comparison) -> Comparison:
    """The unlearning challenge's F over N models for every method compared: on a button, with a
    progress bar per method, cached per method and settings (the Evidence page shares the cache)."""
    key, methods = request[0], list(result.summary["method"])
    st.markdown("**The unlearning challenge's score, every method over N models** (NeurIPS 2023: N originals "
                "trained with different seeds, each unlearned by the method, against N retrained models)")
    if not prep.split.labelled:
        st.info("Needs D_f's labels and retrained models: unlabelled images have neither.")
        return result
    n_col, button_col, cancel_col = st.columns([1, 2, 1], vertical_alignment="bottom")
    models = int(n_col.number_input("N models", 3, 64, 32, key=MODELS,
                                    help="32 as in the challenge; on the small CNN about 2–3 minutes for the first "
                                         "method on 2 cores (it trains the originals and the retrained models every "
                                         "method then shares), less for each further one; cached"))
    settings = {m: tuple(sorted((k, v) for k, v in result.params.get(m, {}).items())) for m in methods}

    def lookup(method: str, compute_now: bool):
        own = dict(settings[method])
        args = (prep, key, method, own.get("alpha", 1.0), own.get("lambda", 1.0), models,
                () if method in DAMPENING else settings[method])
        return compute.score_over_models(*args) if compute_now else compute.stored_score(*args[1:])

    pressed = button_col.button(f"Score {len(methods)} method(s)", key=SCORE, type="primary")
    if pressed:
        cancel_col.button("Cancel", key="cmp_cancel", help="stops between two models; what was trained stays cached")
        try:
            fresh = [m for m in methods if not lookup(m, True)[1]]
            st.caption(f"Computed now: {', '.join(cp.short_label(m) for m in fresh)}" if fresh
                       else "Every method served from the cache")
        except UserError as exc:
            widgets.show_user_error(exc)
    stored = {m: found[0] for m in methods if (found := lookup(m, False)) is not None}
    if not stored:
        st.caption("Not scored yet at these settings: the table's F rows appear once every method is.")
        return result
    if len(stored) < len(methods):
        st.caption(f"Scored so far: {', '.join(cp.short_label(m) for m in stored)} — press again for the rest "
                   "(what was trained is cached).")
    st.caption(f"F and the final score (N = {models}) are in the table's last rows. The best any method can do at "
               "this N is Retrain's F: a second set of retrained models against the first.")
    return with_forget_scores(result, stored)


def needs_ui(availability: dict) -> None:
    with st.expander("What each method needs, and whether it can run on this target"):
        st.dataframe(cp.needs_table(availability), hide_index=True, width="stretch", key="cmp_needs")


sel = state.current()
paper = bool(st.session_state.get(PAPER))
try:  # LFSSD's I_D is the one prepared and cached, as in the CLI; the paper protocol needs batch mode
    prep = compute.prepared(sel, method="lfssd", mode="batch" if paper else None)
except UserError as exc:
    widgets.show_user_error(exc)
    st.stop()
st.subheader(f"Compare methods — forgetting {prep.split.description}, {prep.config.model} on {sel.dataset}")
alphas = {m: state.alpha_for(m) for m in DAMPENING}
st.caption(f"The sidebar picks the target; its Method switch does not apply here. SSD and LFSSD each use their own "
           f"α (the Forget page's slider for that method; SSD's squared ratios want a higher one): SSD α = "
           f"{alphas['ssd']:g}, LFSSD α = {alphas['lfssd']:g}; λ = {sel.lambda_:g}."
           + (" The paper protocol uses batch-mode importance, whatever the sidebar's mode." if paper else ""))

availability = available_methods(prep.split)
methods, repeats, paper, clicked = controls_ui([m for m, reason in availability.items() if reason is None])
blocked = cp.blocked_message(availability)
if blocked:
    st.info(blocked)
params = tuple((m, (("alpha", alphas[m]), ("lambda", sel.lambda_))) for m in methods if m in DAMPENING)
request = (compute.experiment_key(prep), tuple(methods), repeats, params, "paper" if paper else "app")
done = st.session_state.setdefault(DONE, set())
if clicked:
    try:
        if not methods:
            raise UserError("choose at least one method to compare")
        comparison(prep, *request)
        done.add(request)
    except UserError as exc:
        widgets.show_user_error(exc)
if request not in done:
    if not clicked:
        st.info("Press **Run** to compare. It takes tens of seconds: every stochastic method runs once per seed, and "
                "retrain trains a model from scratch each time. Results are kept for these settings.")
    needs_ui(availability)
    st.stop()

result = comparison(prep, *request)
st.caption(cp.run_summary(result) + f" The entropy attack is fitted on {prep.baseline.mia_sets}."
           + (" Retrain's seed 0 is the retrained reference the Forget and Overview cards show."
              if "retrain" in set(result.summary["method"]) else ""))
if result.skipped:
    st.warning("Left out: " + "; ".join(result.skipped.values()))
table_slot = st.empty()  # filled after the score over N models, which may add two rows
result = forget_scores_ui(prep, request, result)
table_slot.table(cp.paper_table(result.summary))
legend, rows = st.columns(2)
legend.markdown("**The columns** (± : std over seeds, for the methods whose result depends on the seed)\n"
                + "\n".join(f"- {line}" for line in cp.method_legend(result.summary["method"])))
rows.markdown("**The rows**\n" + "\n".join(f"- **{row}**: {meaning}" for row, meaning in cp.ROW_MEANINGS))

st.markdown("**Scores and time per method** — bars: mean, whiskers: ± std over seeds; dashed: retrain")
st.plotly_chart(cp.bars_figure(result.summary, result.reference), width="stretch", key="cmp_bars")
scatter, notes = st.columns([3, 2])
with scatter:
    ran_reference = result.reference in set(result.summary["method"])
    st.markdown("**D_r accuracy against MIA** — " + ("the star is the retrained model, the target to match"
                                                     if ran_reference else "add Retrain to mark the target to match"))
    st.plotly_chart(cp.scatter_figure(result.summary, result.runs, result.reference), width="stretch", key="cmp_scatter")
with notes:
    st.markdown("**Reading it**\n"
                "- up is better: D_r kept; the baseline sits right, still recognised as a member by the attack;\n"
                "- a good method lands on the star: as useful as retraining and just as unseen by the attack, at "
                "a fraction of its time (the wall-time row);\n"
                "- faint dots are single runs; whiskers ± std over seeds.")
    stem = f"compare_{sel.dataset}_{prep.config.forget.replace(':', '-')}_x{repeats}"
    meta = {"dataset": sel.dataset, "model": prep.config.model, "target": prep.split.description,
            "methods": list(methods), "repeats": repeats}
    st.download_button("Download every run (CSV)", result.runs.to_csv(index=False), f"{stem}.csv", mime="text/csv",
                       key="cmp_csv", on_click="ignore", width="stretch")
    st.download_button("Download the comparison (JSON)", cp.comparison_json(result, **meta), f"{stem}.json",
                       mime="application/json", key="cmp_json", on_click="ignore", width="stretch")
with st.expander("Every number: one row per method, then every run"):
    st.dataframe(result.summary.drop(columns=["label"]), hide_index=True, key="cmp_summary")
    st.dataframe(result.runs.drop(columns=["label"]), hide_index=True, key="cmp_runs")
needs_ui(availability)
