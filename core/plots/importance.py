"""Importance maps, looked at: per-tensor distributions of I_D and I_Df, a sampled scatter of one
against the other with the α line, and how far two selections agree (LFSSD vs SSD, batch vs sample).

Pure: importance dicts in (parameter name → tensor, in ``named_parameters()`` order, i.e. input →
output), DataFrames and plotly figures out. Every sample is seeded, so a view is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from scipy.stats import rankdata

from core.method.dampening import selected_mask, validate_hyperparameters
from core.method.importance import Importance
from core.plots.forget import KEPT, SELECTED

FULL, FORGET = "I_D", "I_Df"
COLORS = {FULL: "#1f77b4", FORGET: "#ff7f0e"}
BOTH, ONLY_A, ONLY_B = "#6a3d9a", SELECTED, "#1f77b4"
QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)  # box: quartiles; whiskers: 1st and 99th percentile


def in_model_order(prepared) -> tuple[Importance, Importance]:
    """(I_D, I_Df) of a ``core.experiment.Prepared``, keyed in the model's ``named_parameters()``
    order, input → output (a map loaded from the disk cache comes back sorted by name)."""
    names = [name for name, _ in prepared.model.named_parameters()]
    return ({name: prepared.imp_full[name] for name in names}, {name: prepared.imp_forget[name] for name in names})


# --- sampling ---------------------------------------------------------------------------------------

def sample_indices(numel: int, k: int, seed: int, stream: int) -> np.ndarray:
    """``k`` distinct flat indices into a tensor of ``numel`` elements, sorted (all when k >= numel).

    ``stream`` (the tensor's position) gives each tensor its own seeded draw, so adding a tensor
    elsewhere does not change which elements of this one are drawn.
    """
    if k >= numel:
        return np.arange(numel)
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(numel, size=k, replace=False))


def stratified_quotas(sizes: list[int], total: int, floor: int = 20) -> list[int]:
    """Elements to draw per tensor: about ``total`` in all, in proportion to each tensor's size, but at
    least ``floor`` (or the whole tensor when smaller) so that a bias vector still shows up."""
    grand = sum(sizes)
    if grand <= total:
        return list(sizes)
    return [min(size, max(floor, round(total * size / grand))) for size in sizes]


def _sampled(imp: Importance, name: str, index: np.ndarray) -> np.ndarray:
    return imp[name].detach().cpu().flatten()[torch.from_numpy(index)].double().numpy()


# --- per-layer distributions --------------------------------------------------------------------------

def distribution_table(imp_full: Importance, imp_forget: Importance, per_tensor: int = 4000,
                       seed: int = 0) -> pd.DataFrame:
    """One row per (tensor, I_D or I_Df): quantiles of log10 importance over a seeded sample of up to
    ``per_tensor`` elements, zeros left out (log10 0 = −∞) and counted over the whole tensor."""
    rows = []
    for i, name in enumerate(imp_full):
        index = sample_indices(imp_full[name].numel(), per_tensor, seed, i)
        for which, imp in ((FULL, imp_full), (FORGET, imp_forget)):
            values = _sampled(imp, name, index)
            positive = np.log10(values[values > 0])
            quantiles = np.quantile(positive, QUANTILES) if len(positive) else [math.nan] * len(QUANTILES)
            rows.append({"layer": name, "importance": which, "numel": imp[name].numel(), "sampled": len(index),
                         "zeros": int((imp[name] == 0).sum()),
                         **{f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, quantiles)}})
    return pd.DataFrame(rows)


def distribution_figure(table: pd.DataFrame) -> go.Figure:
    """Horizontal boxes of log10 I_D and log10 I_Df per tensor, input at the top."""
    fig = go.Figure()
    layers = list(dict.fromkeys(table["layer"]))
    for which in (FULL, FORGET):
        part = table[(table["importance"] == which) & table["q50"].notna()]
        fig.add_trace(go.Box(
            y=part["layer"], q1=part["q25"], median=part["q50"], q3=part["q75"], lowerfence=part["q01"],
            upperfence=part["q99"], orientation="h", name=f"log10 {which}", marker_color=COLORS[which],
            hoverinfo="y+x"))
    fig.update_layout(boxmode="group", height=max(260, 40 * len(layers) + 90), margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title="log10 importance",
                      legend=dict(orientation="h", y=1.08, x=0))
    fig.update_yaxes(categoryorder="array", categoryarray=layers, autorange="reversed")
    return fig


# --- the scatter of I_D vs I_Df ------------------------------------------------------------------------

@dataclass(frozen=True)
class ScatterSample:
    """A seeded, per-tensor stratified sample of elements; ``points`` holds those with both
    importances > 0 (the rest cannot sit on log axes and are counted instead)."""

    points: pd.DataFrame  # columns: layer, log_full, log_forget
    sampled: int
    only_forget: int  # I_D = 0 < I_Df: selected at any α (dampened to 0)
    only_full: int  # I_Df = 0 < I_D: never selected
    no_signal: int  # both 0: never selected

    @property
    def left_off(self) -> int:
        return self.only_forget + self.only_full + self.no_signal


def scatter_sample(imp_full: Importance, imp_forget: Importance, n: int = 5000, seed: int = 0) -> ScatterSample:
    names = list(imp_full)
    quotas = stratified_quotas([imp_full[name].numel() for name in names], n)
    frames, counts = [], np.zeros(3, dtype=np.int64)
    for i, (name, k) in enumerate(zip(names, quotas)):
        index = sample_indices(imp_full[name].numel(), k, seed, i)
        full, forget = _sampled(imp_full, name, index), _sampled(imp_forget, name, index)
        counts += [((full == 0) & (forget > 0)).sum(), ((full > 0) & (forget == 0)).sum(),
                   ((full == 0) & (forget == 0)).sum()]
        keep = (full > 0) & (forget > 0)
        frames.append(pd.DataFrame({"layer": name, "log_full": np.log10(full[keep]),
                                    "log_forget": np.log10(forget[keep])}))
    points = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["layer", "log_full", "log_forget"])
    return ScatterSample(points, int(sum(quotas)), *(int(c) for c in counts))


def alpha_line(alpha: float, x: np.ndarray) -> np.ndarray:
    """I_Df = α·I_D on log10 axes: y = x + log10 α. Elements above it are selected."""
    validate_hyperparameters(alpha, 1.0)
    return np.asarray(x, dtype=float) + math.log10(alpha)


def scatter_figure(sample: ScatterSample, alpha: float) -> go.Figure:
    """log10 I_D (x) vs log10 I_Df (y), one colour per tensor, the α line, the selected side shaded."""
    points = sample.points
    fig = go.Figure()
    for name, part in points.groupby("layer", sort=False):
        fig.add_trace(go.Scatter(x=part["log_full"], y=part["log_forget"], mode="markers", name=name,
                                 marker=dict(size=4, opacity=0.55),
                                 hovertemplate=f"{name}<br>log10 I_D %{{x:.2f}}<br>log10 I_Df %{{y:.2f}}<extra></extra>"))
    values = np.concatenate([points["log_full"], points["log_forget"]]) if len(points) else np.array([-6.0, 0.0])
    lo, hi = math.floor(values.min()) - 0.5, math.ceil(values.max()) + 0.5
    x = np.array([lo, hi])
    y = alpha_line(alpha, x)
    top = max(hi, y[1]) + 1  # the shaded (selected) side: above the line, clipped to the axes
    fig.add_shape(type="path", path=f"M {lo},{y[0]} L {hi},{y[1]} L {hi},{top} L {lo},{top} Z",
                  fillcolor=SELECTED, opacity=0.08, line_width=0, layer="below")
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"I_Df = {alpha:g}·I_D", showlegend=False,
                             line=dict(color=SELECTED, dash="dash"), hoverinfo="skip"))
    fig.add_annotation(x=lo + 0.3, y=hi - 0.3, text=f"selected: I_Df > {alpha:g}·I_D", showarrow=False,
                       xanchor="left", yanchor="top", font=dict(color=SELECTED))
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=10, b=10), legend=dict(font=dict(size=10)),
                      xaxis=dict(title="log10 I_D (over all training data)", range=[lo, hi]),
                      yaxis=dict(title="log10 I_Df (over the forget set)", range=[lo, hi]))
    return fig


# --- agreement between two selections ---------------------------------------------------------------

def selection_masks(imp_full: Importance, imp_forget: Importance, alpha: float) -> dict[str, torch.Tensor]:
    """Which elements equation 1 selects at α (λ does not change the selection)."""
    validate_hyperparameters(alpha, 1.0)
    return {name: selected_mask(imp_full[name], imp_forget[name], alpha) for name in imp_full}


def overlap_table(masks_a: dict[str, torch.Tensor], masks_b: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Per tensor: elements selected by both, by only A, by only B (and the tensor's size)."""
    if list(masks_a) != list(masks_b):
        raise ValueError("the two selections cover different parameters")
    rows = []
    for name, a in masks_a.items():
        b = masks_b[name]
        rows.append({"layer": name, "numel": a.numel(), "both": int((a & b).sum()),
                     "only_a": int((a & ~b).sum()), "only_b": int((~a & b).sum())})
    return pd.DataFrame(rows, columns=["layer", "numel", "both", "only_a", "only_b"])


def jaccard(table: pd.DataFrame) -> float:
    """|A ∩ B| / |A ∪ B| over all tensors; nan when neither selects anything."""
    union = int(table["both"].sum() + table["only_a"].sum() + table["only_b"].sum())
    return int(table["both"].sum()) / union if union else math.nan


def overlap_summary(table: pd.DataFrame, label_a: str, label_b: str) -> str:
    both, only_a, only_b = (int(table[c].sum()) for c in ("both", "only_a", "only_b"))
    if both + only_a + only_b == 0:
        return f"Neither {label_a} nor {label_b} selects any element at this α."
    return (f"{label_a} selects {both + only_a:,} elements and {label_b} {both + only_b:,}: {both:,} by both, "
            f"{only_a:,} by {label_a} only, {only_b:,} by {label_b} only (Jaccard {jaccard(table):.3f}).")


def overlap_figure(table: pd.DataFrame, label_a: str, label_b: str) -> go.Figure:
    """Stacked horizontal bars per tensor (input at the top): % of its elements selected by both,
    by only A, by only B; the counts are on the bars and in the hover."""
    layers = list(table["layer"])
    fig = go.Figure()
    for column, name, color in (("both", "both", BOTH), ("only_a", f"only {label_a}", ONLY_A),
                                ("only_b", f"only {label_b}", ONLY_B)):
        share = table[column] / table["numel"].clip(lower=1) * 100
        fig.add_bar(y=layers, x=share, orientation="h", name=name, marker_color=color, customdata=table[column],
                    text=[f"{c:,}" if c else "" for c in table[column]], textposition="inside",
                    hovertemplate="%{y}: %{customdata:,} elements (%{x:.2f} %)<extra>" + name + "</extra>")
    fig.update_layout(barmode="stack", height=max(240, 30 * len(layers) + 90), margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title="% of the tensor's elements selected", xaxis_rangemode="tozero",
                      uniformtext=dict(minsize=9, mode="hide"),  # no counts squeezed into slivers
                      legend=dict(orientation="h", y=1.1, x=0, traceorder="normal"))
    fig.update_yaxes(categoryorder="array", categoryarray=layers, autorange="reversed")
    if math.isnan(jaccard(table)):
        fig.update_xaxes(range=[0, 1])
        fig.add_annotation(text="nothing selected at this α", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                           font=dict(color=KEPT))
    return fig


def display_table(table: pd.DataFrame, label_a: str, label_b: str, ranks: pd.DataFrame | None = None) -> pd.DataFrame:
    """The overlap table with its columns named for people (and a rank table's ρ columns joined on)."""
    shown = table if ranks is None else table.merge(ranks, on="layer", how="left")
    return shown.rename(columns={"numel": "elements", "only_a": f"only {label_a}", "only_b": f"only {label_b}",
                                 "rho_I_D": "Spearman ρ of I_D", "rho_I_Df": "Spearman ρ of I_Df"})


# --- batch vs sample: do the two modes rank elements alike? ----------------------------------------

def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two same-shaped tensors (ties share their mean rank);
    nan when either is constant (no ranking to compare)."""
    ra = rankdata(a.detach().flatten().double().numpy())
    rb = rankdata(b.detach().flatten().double().numpy())
    if ra.size < 2 or np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_table(full_a: Importance, full_b: Importance, forget_a: Importance, forget_b: Importance) -> pd.DataFrame:
    """Per tensor: Spearman ρ of I_D between two importance computations, and of I_Df."""
    return pd.DataFrame([{"layer": name, "rho_I_D": spearman(full_a[name], full_b[name]),
                          "rho_I_Df": spearman(forget_a[name], forget_b[name])} for name in full_a])
