"""The Sensitivity page's pure parts: default grids, grid parsing, the plateau, paper Table 2, figures.

Everything here takes plain values and DataFrames from ``core.experiment.sweep`` (columns alpha,
lambda, selected, selected_fraction, d_r, d_f, test, mia, retain_train, forget_train) and returns
values, DataFrames or plotly figures; nothing imports streamlit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.errors import UserError

# The paper's points, always in the α grid; finer points are added where the data set can use them.
PAPER_ALPHAS = (1.0, 5.0, 10.0, 25.0, 50.0)
_EXTRA_ALPHAS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 7.0, 15.0, 20.0, 35.0, 75.0, 100.0, 150.0, 250.0)
DEFAULT_LAMBDAS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
HEATMAP_LAMBDAS = (0.0, 0.5, 1.0, 2.0, 5.0)
HEATMAP_SIZE = 6
MAX_GRID_POINTS = 40
_LOG_TICKS = (0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
D_F_MARGIN, D_F_LIMIT_NO_RETRAIN, D_R_MARGIN = 5.0, 10.0, 2.0

# Paper Table 2: LFSSD, CIFAR-100 class "rocket", ResNet18, λ = 1; α → (D_r, D_f, MIA).
TABLE2_LAMBDA = 1.0
PAPER_TABLE2 = {1.0: (16.87, 0.00, 26.6), 5.0: (74.72, 0.00, 0.0), 10.0: (75.67, 0.00, 0.0),
                25.0: (76.10, 0.00, 0.0), 50.0: (76.32, 71.88, 29.4)}

METRICS = {"d_f": "D_f accuracy (%)", "d_r": "D_r accuracy (%)", "mia": "MIA (entropy attack)",
           "test": "test accuracy (%)"}
BASELINE, RETRAINED, PLATEAU = "#7f7f7f", "#2ca02c", "#2ca02c"
LINE_COLORS = {"d_r": "#1f77b4", "d_f": "#d62728", "mia": "#9467bd", "selected_fraction": "#ff7f0e"}


# --- grids ----------------------------------------------------------------------------------------

def default_alphas(ceiling: float) -> tuple[float, ...]:
    """The paper's 1, 5, 10, 25, 50 plus finer points up to the ratio ceiling (``Prepared.alpha_ceiling``).

    On 10-class data in batch mode (ceiling ≈ 7.3) that adds 1.5 … 4 and 7: forgetting happens
    around 2–5 and selection vanishes by ~7.
    """
    extras = [a for a in _EXTRA_ALPHAS if a <= ceiling]
    return tuple(sorted(set(PAPER_ALPHAS) | set(extras)))


def _nice(x: float) -> float:
    step = 0.5 if x < 10 else 5.0 if x < 100 else 50.0
    return max(step, round(x / step) * step)


def heatmap_alphas(ceiling: float, size: int = HEATMAP_SIZE) -> tuple[float, ...]:
    """About ``size`` log-spaced, rounded α from 1 up to the ratio ceiling."""
    top = max(ceiling, 2.0)
    return tuple(sorted({1.0} | {_nice(float(x)) for x in np.geomspace(1.0, top, size)}))


def format_grid(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def parse_grid(text: str, name: str = "α", allow_zero: bool = False) -> tuple[float, ...]:
    """Comma-separated numbers → sorted unique tuple; a UserError that names the bad entry."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise UserError(f"the {name} grid is empty: enter comma-separated numbers, e.g. 1, 3.5, 10")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise UserError(f"'{part}' in the {name} grid is not a number; enter comma-separated numbers, "
                            "e.g. 1, 3.5, 10") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            rule = ">= 0" if allow_zero else "> 0"
            raise UserError(f"every {name} must be a finite number {rule}, got {part}")
        values.append(value)
    values = sorted(set(values))
    if len(values) > MAX_GRID_POINTS:
        raise UserError(f"the {name} grid has {len(values)} points; at most {MAX_GRID_POINTS} at a time")
    return tuple(values)


# --- the plateau ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plateau:
    """The widest run of consecutive α where forgetting works without harming D_r (and something is dampened)."""

    low: float
    high: float
    points: int
    d_f_limit: float
    d_r_limit: float

    def contains(self, alpha: float) -> bool:
        return self.low <= alpha <= self.high


def plateau_limits(baseline_d_r: float, retrain_d_f: float | None) -> tuple[float, float]:
    """(D_f ceiling, D_r floor): D_f ≤ retrained D_f + 5 (≤ 10 % without one); D_r ≥ baseline − 2."""
    d_f_limit = D_F_LIMIT_NO_RETRAIN if retrain_d_f is None else retrain_d_f + D_F_MARGIN
    return d_f_limit, baseline_d_r - D_R_MARGIN


def plateau(table: pd.DataFrame, baseline_d_r: float, retrain_d_f: float | None) -> Plateau | None:
    """Plateau of an α sweep (one λ); None when no α qualifies or D_f has no labels to score."""
    rows = table.sort_values("alpha").reset_index(drop=True)
    d_f = pd.to_numeric(rows["d_f"], errors="coerce")
    if d_f.isna().all():
        return None
    d_f_limit, d_r_limit = plateau_limits(baseline_d_r, retrain_d_f)
    # something must be dampened: with λ ≥ 1 and α past the ratio ceiling nothing changes, which is no plateau
    ok = ((d_f <= d_f_limit) & (rows["d_r"] >= d_r_limit) & (rows["selected"] > 0)).tolist()
    best, start = None, None
    for i, good in enumerate(ok + [False]):
        if good and start is None:
            start = i
        elif not good and start is not None:
            if best is None or i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    if best is None:
        return None
    alphas = rows["alpha"].iloc[best[0]:best[1]]
    return Plateau(float(alphas.min()), float(alphas.max()), len(alphas), d_f_limit, d_r_limit)


def plateau_sentence(found: Plateau | None, retrain_d_f: float | None, baseline_d_r: float,
                     labelled: bool = True) -> str:
    if not labelled:
        return ("No plateau: the forget images have no labels, so D_f accuracy cannot be scored; "
                "judge α by the MIA and D_r curves.")
    d_f_rule = (f"D_f ≤ {retrain_d_f + D_F_MARGIN:.1f} % (retrained {retrain_d_f:.1f} % + {D_F_MARGIN:g})"
                if retrain_d_f is not None else f"D_f ≤ {D_F_LIMIT_NO_RETRAIN:g} % (no retrained reference)")
    d_r_rule = f"D_r ≥ {baseline_d_r - D_R_MARGIN:.1f} % (baseline {baseline_d_r:.1f} % − {D_R_MARGIN:g})"
    if found is None:
        return (f"No plateau on this grid: no α gives both {d_f_rule} and {d_r_rule}. "
                "A finer grid (the default one) may find α between these points that does.")
    where = f"α = {found.low:g}" if found.low == found.high else f"α from {found.low:g} to {found.high:g}"
    return (f"Plateau: {where} ({found.points} grid point{'s' * (found.points > 1)}) — there {d_f_rule} "
            f"and {d_r_rule}. Lower α harms D_r; higher α stops forgetting.")


# --- paper Table 2 ------------------------------------------------------------------------------------

def table2_comparison(ours: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 2 beside our sweep's rows at the same α (λ = 1); NaN where we lack a row."""
    mine = ours[np.isclose(ours["lambda"], TABLE2_LAMBDA)].set_index("alpha")
    rows = []
    for alpha, (d_r, d_f, mia) in PAPER_TABLE2.items():
        row = mine.loc[alpha] if alpha in mine.index else None
        value = (lambda col: np.nan if row is None or row[col] is None else float(row[col]))
        rows.append({"α": alpha, "paper D_r": d_r, "paper D_f": d_f, "paper MIA": mia,
                     "ours D_r": value("d_r"), "ours D_f": value("d_f"), "ours MIA": value("mia")})
    return pd.DataFrame(rows)


# --- figures ------------------------------------------------------------------------------------------

def _value(result, field: str) -> float | None:
    value = getattr(result, field, None) if result is not None else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def alpha_sweep_figure(table: pd.DataFrame, baseline, retrain=None, found: Plateau | None = None,
                       chosen: tuple[str, float] | None = None) -> go.Figure:
    """D_r, D_f, MIA and the share selected against α (log x), with baseline and retrained lines;
    ``chosen``: (rule, α) an α rule picked, drawn dotted in every panel."""
    rows = table.sort_values("alpha")
    panels = (("d_r", 1, 1), ("d_f", 1, 2), ("mia", 2, 1), ("selected_fraction", 2, 2))
    titles = [METRICS["d_r"], METRICS["d_f"], METRICS["mia"], "parameter elements dampened (%)"]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.08, vertical_spacing=0.16)
    x_span = [float(rows["alpha"].min()), float(rows["alpha"].max())]
    for metric, row, col in panels:
        y = pd.to_numeric(rows[metric], errors="coerce") * (100 if metric == "selected_fraction" else 1)
        fig.add_scatter(x=rows["alpha"], y=y, mode="lines+markers", name=titles[panels.index((metric, row, col))],
                        line_color=LINE_COLORS[metric], showlegend=False, row=row, col=col,
                        hovertemplate="α = %{x:g}: %{y:.2f}<extra></extra>")
        for result, name, color in ((baseline, "baseline (before forgetting)", BASELINE),
                                    (retrain, "retrained without D_f", RETRAINED)):
            ref = _value(result, metric) if metric != "selected_fraction" else None
            if ref is not None:
                fig.add_scatter(x=x_span, y=[ref, ref], mode="lines", line=dict(color=color, dash="dash", width=1.5),
                                name=name, legendgroup=name, showlegend=(row, col) == (1, 1), row=row, col=col,
                                hovertemplate=f"{name}: {ref:.2f}<extra></extra>")
    if found is not None:  # shapes take data values on log axes; pad a little so a lone point shows
        fig.add_vrect(x0=found.low / 1.08, x1=found.high * 1.08, fillcolor=PLATEAU, opacity=0.15, line_width=0)
        fig.add_scatter(x=[None], y=[None], mode="markers", marker=dict(symbol="square", size=12, color=PLATEAU,
                        opacity=0.3), name=f"plateau (α {found.low:g}–{found.high:g})", row=1, col=1)
    if chosen is not None:
        rule, alpha = chosen
        for _, row, col in panels:
            fig.add_vline(x=alpha, line_dash="dot", line_color="#333", row=row, col=col)
        fig.add_scatter(x=[None], y=[None], mode="lines", line=dict(color="#333", dash="dot"),
                        name=f"{rule} α = {alpha:g}", row=1, col=1)
    ticks = [t for t in _LOG_TICKS if x_span[0] / 1.5 <= t <= x_span[1] * 1.5]  # plain numbers, no "2, 5" minors
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    fig.update_xaxes(title_text="α (log scale)", row=2)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(height=560, margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", y=1.12, x=0))
    return fig


def lambda_sweep_figure(table: pd.DataFrame, baseline, retrain=None) -> go.Figure:
    """D_r, D_f and MIA against λ at one α; λ on evenly spaced categories (0 has no log)."""
    rows = table.sort_values("lambda")
    x = [f"{v:g}" for v in rows["lambda"]]
    fig = go.Figure()
    for metric in ("d_r", "d_f", "mia"):
        fig.add_scatter(x=x, y=pd.to_numeric(rows[metric], errors="coerce"), mode="lines+markers",
                        name=METRICS[metric], line_color=LINE_COLORS[metric])
        ref = _value(retrain, metric)
        if ref is not None:
            fig.add_scatter(x=[x[0], x[-1]], y=[ref, ref], mode="lines", showlegend=False,
                            line=dict(color=LINE_COLORS[metric], dash="dot", width=1),
                            hovertemplate=f"retrained {METRICS[metric]}: {ref:.2f}<extra></extra>")
    fig.update_xaxes(type="category", title_text="λ (dampening constant)")
    fig.update_yaxes(range=[-3, 103])
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=1.15, x=0))
    return fig


def heatmap_figure(table: pd.DataFrame, metric: str = "d_f") -> go.Figure:
    """One metric over an α × λ grid (α across, λ down), each cell labelled with its value."""
    if metric not in METRICS:
        raise UserError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")
    values = table.assign(value=pd.to_numeric(table[metric], errors="coerce"))
    grid = values.pivot_table(index="lambda", columns="alpha", values="value", aggfunc="first", dropna=False)
    x, y = [f"{a:g}" for a in grid.columns], [f"{lam:g}" for lam in grid.index]
    fig = go.Figure(go.Heatmap(z=grid.values, x=x, y=y, zmin=0, zmax=100, colorscale="Viridis",
                               text=np.vectorize(lambda v: "—" if np.isnan(v) else f"{v:.0f}")(grid.values),
                               texttemplate="%{text}", colorbar=dict(title=dict(text="%"), thickness=12),
                               hovertemplate="α = %{x}, λ = %{y}: %{z:.2f}<extra></extra>"))
    fig.update_xaxes(type="category", title_text="α")
    fig.update_yaxes(type="category", title_text="λ")
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), title=dict(text=METRICS[metric], x=0))
    return fig
