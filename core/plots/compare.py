"""The Compare page's pure parts: the paper-style table, the method legend, figures, the JSON export.

Everything here takes a ``core.compare.run.Comparison`` (or its ``summary`` / ``runs`` DataFrames) and
returns DataFrames, strings, dicts or plotly figures; nothing imports streamlit, so the page stays a
thin story and these are tested on their own.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.compare.run import SHORT_NEEDS, Comparison
from core.compare.methods import METHODS

NEEDS_WORDS = {"labels": "labels", "retain_set": "D_r", "training": "training", "importance_d": "I_D"}
DASH = "—"

# The table's rows, in the paper's order (D_r, D_f, MIA), then what the issue adds.
SCORE_ROWS = {"d_r": "D_r accuracy (%)", "d_f": "D_f accuracy (%)", "mia": "MIA (entropy attack)",
              "test": "test accuracy (%)"}
# The field's attacks beside the papers' (core.evaluation.attacks), each measured against the retrained reference.
EVIDENCE_ROWS = {"epsilon": "ε vs retrained (one pair)", "relearn_r": "relearning R"}
SCORE_OVER_MODELS_ROWS = {"forget_score": "challenge F (N models)", "final_score": "challenge final score"}
DISTANCE_ROWS = {"d_f_to_retrain": "|D_f − D_f(retrain)|", "mia_to_retrain": "|MIA − MIA(retrain)|"}
TIME_ROWS = {"wall_s_mean": "wall time (s)", "wall_incl_id_s_mean": "wall time incl. I_D (s)"}
NEEDS_ROW = "needs"

# What the rows mean, for the legend beside the table (the two distances share a line).
ROW_MEANINGS = (
    ("D_r accuracy (%)", "accuracy on the retained data (class targets: the other classes' *test* images); should "
                         "stay at the baseline's."),
    ("D_f accuracy (%)", "accuracy on the forget set (class targets: the forgotten class's *test* images; random "
                         "samples: the forgotten *train* images); the goal is the retrained model's value."),
    ("MIA (entropy attack)", "the **entropy membership-inference attack** of Chundawat et al., as in the SSD and LFSSD "
                             "papers: a logistic regression on the softmax entropy, fit on retain-train (member) vs "
                             "test (non-member), asked about D_f; the share it calls *member*, × 100. The goal is the "
                             "retrained model's value, not 0: over-forgetting shows too."),
    ("test accuracy (%)", "accuracy on the whole test split."),
    ("ε vs retrained (one pair)", "how well one threshold on the forget examples' logit-scaled confidence "
                                  "(log p_y − log Σ_{k≠y} p_k) tells this model from the retrained reference (the "
                                  "seed-0 retrained model of the Forget page): 0 = indistinguishable, 50 = always "
                                  "told apart. Retrain's seed 0 *is* the reference (0 by construction); its other "
                                  "seeds show how far two retrained models lie apart."),
    ("relearning R", "fine-tune on D_f (SGD, lr 1e-4, 30 steps): R = min(Δ_retrain ÷ Δ_model, 1); 1 = comes back no "
                     "faster than in a model that never saw D_f, below 1 = only hidden. — when the model never "
                     "forgot D_f (nothing to relearn)."),
    ("challenge F, final score", "the NeurIPS 2023 unlearning challenge's score over N originals trained with "
                                 "different seeds, each unlearned by the method, against N retrained models (on "
                                 "request, below the table); the goal is a second set of retrained models' F."),
    ("|D_f − D_f(retrain)|, |MIA − MIA(retrain)|", "distance to the model retrained from scratch without D_f: "
                                                   "0 = indistinguishable from retraining (needs Retrain in the run)."),
    ("wall time (s)", "the method's own work at forget time, mean over runs (evaluation not counted); *incl. I_D* "
                      "adds the one importance pass over D that SSD and LFSSD compute once, cache and reuse."),
    (NEEDS_ROW, "labels (of D_f), D_r (the retain set at forget time), training (epochs of gradient descent), "
                "I_D (the cached importance over D)."),
)


def short_label(method: str) -> str:
    """The method's column name (its declaration's ``short``)."""
    return METHODS.get(method).column if method in METHODS else method


def color(method: str) -> str:
    return METHODS.get(method).color if method in METHODS else "#333"


def symbol(method: str) -> str:
    return METHODS.get(method).symbol if method in METHODS else "circle"


def needs_words(method: str) -> str:
    """'labels, D_r, training' — what ``method`` needs, in the table's words ('nothing' for none)."""
    needs = METHODS.get(method).needs
    words = [word for key, word in NEEDS_WORDS.items() if key in needs]
    return ", ".join(words) or "nothing"


def _number(value: Any, decimals: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:.{decimals}f}"


def mean_std(mean: Any, std: Any, show_std: bool, decimals: int = 2) -> str:
    """'99.50 ± 0.12' (or '99.50' without the spread, '—' for a missing value)."""
    text = _number(mean, decimals)
    if text == DASH or not show_std:
        return text
    return f"{text} ± {_number(std, decimals)}"


def _seconds(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def paper_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: a row per score (D_r, D_f, MIA, test), then the distances to retrain,
    the wall times and what each method needs; a column per method (its short label).

    Stochastic methods (their result depends on the seed) read 'mean ± std' over the runs when
    there is more than one; deterministic ones read just the value. Every cell is text.
    """
    columns = {}
    for row in summary.to_dict(orient="records"):
        method = row["method"]
        spread = METHODS.get(method).stochastic and row["runs"] > 1
        cells = {label: mean_std(row[f"{stat}_mean"], row[f"{stat}_std"], spread) for stat, label in SCORE_ROWS.items()}
        cells.update({label: mean_std(row.get(f"{stat}_mean"), row.get(f"{stat}_std"), spread)
                      for stat, label in EVIDENCE_ROWS.items() if f"{stat}_mean" in row})
        cells.update({label: _number(row[column], 3) for column, label in SCORE_OVER_MODELS_ROWS.items()
                      if column in row})
        cells.update({label: _number(row[column]) for column, label in DISTANCE_ROWS.items()})
        cells.update({label: _seconds(row[column]) for column, label in TIME_ROWS.items()})
        cells[NEEDS_ROW] = needs_words(method)
        columns[short_label(method)] = cells
    table = pd.DataFrame(columns)
    table.index.name = "metric"
    return table


def method_legend(methods: Sequence[str]) -> list[str]:
    """One markdown line per method: its column name, (±) when its result depends on the seed, what it does."""
    lines = []
    for name in methods:
        method = METHODS.get(name)
        lines.append(f"**{short_label(name)}**{' (±)' if method.stochastic else ''} — {method.summary}")
    return lines


def blocked_message(availability: Mapping[str, str | None]) -> str | None:
    """Markdown naming every method that cannot run here and what it lacks, or None when all can.

    Only unlabelled forget images block methods today: they come without labels, and they are not
    training images, so there is no retain set D_r to train on either.
    """
    blocked = [name for name, reason in availability.items() if reason]
    if not blocked:
        return None
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in blocked:
        groups.setdefault(METHODS.get(name).missing_without_labels(), []).append(f"**{short_label(name)}**")
    parts = [f"{', '.join(names)} need{'s' if len(names) == 1 else ''} "
             + " and ".join(SHORT_NEEDS.get(k, k) for k in missing) if missing else ", ".join(names) + " cannot run"
             for missing, names in groups.items()]
    free = [f"**{short_label(n)}**" for n, reason in availability.items() if reason is None and n != "baseline"]
    return ("Not offered for unlabelled forget images, which come without labels and without a retain set: "
            + "; ".join(parts) + "." + (f" {', '.join(free)} need{'s' if len(free) == 1 else ''} neither." if free else ""))


def needs_table(availability: Mapping[str, str | None]) -> pd.DataFrame:
    """Every registered method: what it needs, and whether it can run on the current target (why not)."""
    rows = []
    for name, reason in availability.items():
        method = METHODS.get(name)
        rows.append({"method": short_label(name), "labels": "labels" in method.needs,
                     "D_r": "retain_set" in method.needs, "training": "training" in method.needs,
                     "I_D": "importance_d" in method.needs, "stochastic": method.stochastic,
                     "here": "runs" if reason is None else f"can't: {reason}"})
    return pd.DataFrame(rows)


def run_summary(comparison: Comparison) -> str:
    """One sentence: how many runs, which seeds, which protocol and accuracy, the I_D pass."""
    seeds = comparison.seeds
    runs = f"1 run per method (seed {seeds[0]})" if len(seeds) == 1 else \
        f"{len(seeds)} runs per method (seeds {seeds[0]}–{seeds[-1]})"
    text = f"{runs}; {comparison.protocol} protocol, {comparison.accuracy} accuracy; MIA = the entropy attack."
    if comparison.importance_seconds:
        passes = ", ".join(f"{kind.upper()} {s:.2f} s" for kind, s in comparison.importance_seconds.items())
        text += f" I_D pass, computed once and reused: {passes}."
    notes = comparison.runs.dropna(subset=["mia_note"]) if "mia_note" in comparison.runs else comparison.runs[:0]
    for note, group in notes.groupby("mia_note", sort=False):
        labels = ", ".join(dict.fromkeys(short_label(m) for m in group["method"]))
        text += f" MIA gives no number for {labels} ({len(group)} run(s)): {note}."
    methods = set(comparison.summary["method"])
    if "retrain" not in methods:
        text += (f" Distances are to {short_label(comparison.reference)} (Retrain was not run)."
                 if comparison.reference in methods else " Add Retrain to measure the distances to it.")
    return text


# --- figures ------------------------------------------------------------------------------------

def bars_figure(summary: pd.DataFrame, reference: str = "retrain") -> go.Figure:
    """D_r, D_f and MIA per method (horizontal bars, mean with ±std error bars) and wall time (log);
    the reference's value (the retrained model, ``Comparison.reference``) dashed in each score panel."""
    titles = ("D_r accuracy (%)", "D_f accuracy (%)", "MIA (entropy attack)", "wall time incl. I_D (s)")
    fig = make_subplots(rows=1, cols=4, shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.03)
    rows = summary.iloc[::-1]  # first method at the top
    labels = [short_label(m) for m in rows["method"]]
    colors = [color(m) for m in rows["method"]]
    target = summary[summary["method"] == reference]
    for col, stat in enumerate(("d_r", "d_f", "mia", "wall_incl_id_s"), start=1):
        means, stds = rows[f"{stat}_mean"], rows[f"{stat}_std"]
        fig.add_bar(x=means, y=labels, orientation="h", marker_color=colors, showlegend=False,
                    error_x=dict(type="data", array=stds.fillna(0).tolist(), visible=True, color="#333"),
                    hovertemplate="%{y}: %{x:.2f}<extra>" + titles[col - 1] + "</extra>", row=1, col=col)
        if means.isna().all():  # D_f of unlabelled images: there are no labels to score
            fig.add_annotation(text="no labels:<br>no accuracy", showarrow=False, x=0.5, y=0.5, font_color="#666",
                               xref=f"x{col} domain" if col > 1 else "x domain", yref="y domain")
        if stat != "wall_incl_id_s" and len(target) and not math.isnan(target[f"{stat}_mean"].iloc[0]):
            fig.add_vline(x=float(target[f"{stat}_mean"].iloc[0]), line_dash="dash", line_color=color("retrain"),
                          row=1, col=col)
    for col in (1, 2, 3):  # accuracies and the MIA are percentages
        fig.update_xaxes(range=[0, 105], row=1, col=col)
    fig.update_xaxes(type="log", dtick=1, row=1, col=4)  # ticks at powers of ten only
    fig.update_annotations(font_size=13)
    fig.update_layout(height=max(240, 34 * len(summary) + 90), margin=dict(l=10, r=10, t=40, b=10), bargap=0.25)
    return fig


def scatter_figure(summary: pd.DataFrame, runs: pd.DataFrame | None = None, reference: str = "retrain") -> go.Figure:
    """D_r accuracy against MIA, one point per method (mean, ±std bars; single runs faint behind),
    the retrained model (``reference``) marked with a star and cross-hairs: the closer to it, the
    more the result looks like retraining."""
    fig = go.Figure()
    if runs is not None and len(runs):
        for name, group in runs.groupby("method", sort=False):
            fig.add_scatter(x=group["mia"], y=group["d_r"], mode="markers", showlegend=False, hoverinfo="skip",
                            marker=dict(color=color(name), size=6, opacity=0.3))
    for row in summary.to_dict(orient="records"):
        name = row["method"]
        is_retrain = name == reference
        fig.add_scatter(
            x=[row["mia_mean"]], y=[row["d_r_mean"]], mode="markers", name=short_label(name),
            marker=dict(color=color(name), size=20 if is_retrain else 12,
                        symbol="star" if is_retrain else symbol(name),
                        line=dict(color="#222", width=1)),
            error_x=dict(type="data", array=[row["mia_std"]], visible=True, thickness=1),
            error_y=dict(type="data", array=[row["d_r_std"]], visible=True, thickness=1),
            hovertemplate=f"{short_label(name)}<br>MIA %{{x:.2f}}<br>D_r %{{y:.2f}} %<extra></extra>")
        if is_retrain:  # cross-hairs through the target
            fig.add_vline(x=row["mia_mean"], line_dash="dot", line_color=color("retrain"))
            fig.add_hline(y=row["d_r_mean"], line_dash="dot", line_color=color("retrain"))
    low = min(summary["d_r_mean"].min(), 100.0)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=10, b=10), legend=dict(itemsizing="constant"),
                      xaxis_title="MIA (entropy attack; lower looks unseen)", yaxis_title="D_r accuracy (%)",
                      xaxis_range=[-5, 105], yaxis_range=[max(0.0, low - max(2.0, 0.15 * (100 - low))), 101.5])
    return fig


# --- export -------------------------------------------------------------------------------------

def _records(table: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]


def comparison_record(comparison: Comparison, **meta: Any) -> dict:
    """The comparison as a plain dict, in the CLI's ``compare --json`` keys (``meta`` first:
    data set, model, target …)."""
    return {**meta, "protocol": comparison.protocol, "accuracy": comparison.accuracy,
            "seeds": list(comparison.seeds), "reference": comparison.reference, "params": comparison.params,
            "importance_seconds": comparison.importance_seconds, "skipped": comparison.skipped,
            "runs": _records(comparison.runs), "summary": _records(comparison.summary),
            "forget_scores": {m: score.as_dict() for m, score in comparison.forget_scores.items()}}


def comparison_json(comparison: Comparison, **meta: Any) -> str:
    return json.dumps(comparison_record(comparison, **meta), indent=2, default=lambda v: None)
