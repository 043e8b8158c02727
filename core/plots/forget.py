"""Plotly figures built from reports and tables; the app shows them, tests inspect them."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from core.method.dampening import DampeningReport, RatioHistogram

SELECTED, KEPT = "#d62728", "#9aa5b1"


def ratio_histogram_figure(hist: RatioHistogram, alpha: float, ceiling: float | None = None,
                           rule: str | None = None) -> go.Figure:
    """log10(I_Df / I_D) over every parameter element; bars right of log10 α are dampened.
    ``ceiling`` (≈ |D|/|D_f|) marks where the ratio runs out: α beyond it selects next to nothing."""
    centers = (hist.edges[:-1] + hist.edges[1:]) / 2
    threshold = math.log10(alpha)
    selected = centers > threshold
    fig = go.Figure()
    for mask, color, name in ((~selected, KEPT, "kept"), (selected, SELECTED, "dampened")):
        fig.add_bar(x=centers[mask], y=np.where(hist.counts[mask] > 0, hist.counts[mask], np.nan),
                    marker_color=color, name=name, width=float(hist.edges[1] - hist.edges[0]))
    fig.add_vrect(x0=threshold, x1=float(hist.edges[-1]), fillcolor=SELECTED, opacity=0.08, line_width=0)
    # labels above the plot, each on its outer side of the pair, so the two never overlap
    alpha_left = ceiling is None or alpha <= ceiling
    fig.add_vline(x=threshold, line_color=SELECTED, line_dash="dash")
    _label_line(fig, threshold, f"α = {alpha:g}" + (f" ({rule})" if rule else ""), SELECTED,
                "right" if alpha_left else "left")
    if ceiling is not None:
        fig.add_vline(x=math.log10(ceiling), line_color="#555", line_dash="dot")
        _label_line(fig, math.log10(ceiling), f"ceiling ≈ {ceiling:.3g}", "#555", "left" if alpha_left else "right")
    # short enough that the Forget page shows it whole above the fold at 1280×800; the legend sits
    # inside, top left, where the log-count bars are low
    fig.update_layout(barmode="overlay", bargap=0, height=250, margin=dict(l=10, r=10, t=24, b=6),
                      xaxis_title="log10(I_Df / I_D)", yaxis_title="parameter elements", yaxis_type="log",
                      yaxis_dtick=1, yaxis_exponentformat="power",
                      legend=dict(orientation="h", y=0.99, x=0.01, yanchor="top", bgcolor="rgba(255,255,255,0.7)"))
    return fig


def _label_line(fig: go.Figure, x: float, text: str, color: str, xanchor: str) -> None:
    fig.add_annotation(x=x, y=1.0, yref="paper", yanchor="bottom", xanchor=xanchor, text=text, showarrow=False,
                       font=dict(color=color), xshift=-3 if xanchor == "right" else 3)


def layer_bars_figure(report: DampeningReport) -> go.Figure:
    """Share of each parameter tensor dampened (input → output, top to bottom) and its mean β."""
    names = [layer.name for layer in report.layers][::-1]
    shares = [layer.fraction * 100 for layer in report.layers][::-1]
    betas = ["—" if layer.beta_mean is None or math.isnan(layer.beta_mean) else f"{layer.beta_mean:.2f}"
             for layer in report.layers][::-1]
    # notes beside the bars at a fixed, readable size (inside a bar plotly shrinks them to fit, ~9 px);
    # the axis leaves room for the longest note right of the longest bar
    fig = go.Figure(go.Bar(x=shares, y=names, orientation="h", marker_color=SELECTED,
                           text=[f"{s:.2f} % · β̄ {b}" if report.selected else "" for s, b in zip(shares, betas)],
                           textposition="outside",
                           textfont=dict(size=12), cliponaxis=False,
                           hovertemplate="%{y}: %{x:.3f} % dampened<extra></extra>"))
    fig.update_layout(height=max(170, 19 * len(names) + 40), margin=dict(l=10, r=10, t=6, b=6),
                      xaxis_title="% of the tensor's elements dampened", uniformtext=dict(minsize=12, mode="show"))
    if report.selected:
        fig.update_xaxes(range=[0, max(shares) * 1.9])
    if report.selected == 0:
        fig.update_xaxes(range=[0, 1])
        fig.add_annotation(text="nothing dampened at this α", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def per_class_figure(baseline: tuple, after: tuple, classes: tuple[str, ...]) -> go.Figure:
    """Test accuracy per class, before and after forgetting."""
    fig = go.Figure()
    fig.add_bar(x=list(classes), y=list(baseline), name="baseline", marker_color=KEPT)
    fig.add_bar(x=list(classes), y=list(after), name="after forgetting", marker_color=SELECTED)
    fig.update_layout(barmode="group", height=300, margin=dict(l=10, r=10, t=30, b=10),
                      yaxis_title="test accuracy (%)", yaxis_range=[0, 100], xaxis_type="category", legend=dict(orientation="h", y=1.15))
    return fig


def beta_histogram_figure(betas: np.ndarray) -> go.Figure:
    """β = min(λ·I_D/I_Df, 1) of the dampened elements: 0 erases, 1 leaves alone."""
    fig = go.Figure(go.Histogram(x=betas, xbins=dict(start=0, end=1.0001, size=0.025), marker_color=SELECTED))
    fig.update_layout(height=150, margin=dict(l=10, r=10, t=6, b=6), xaxis_title="β (multiplier of a dampened element)",
                      yaxis_title="elements", xaxis_range=[0, 1.02])
    return fig


def prediction_shift_figure(before: np.ndarray, after: np.ndarray, classes: tuple[str, ...]) -> go.Figure:
    """Where the forget set's top predictions go: % per predicted class, before and after."""
    fig = go.Figure()
    fig.add_bar(x=list(classes), y=before, name="baseline", marker_color=KEPT)
    fig.add_bar(x=list(classes), y=after, name="after forgetting", marker_color=SELECTED)
    fig.update_layout(barmode="group", height=260, margin=dict(l=10, r=10, t=30, b=10), xaxis_type="category",
                      yaxis_title="% of forget samples predicted", legend=dict(orientation="h", y=1.18))
    return fig


def alpha_rule_figure(choice) -> go.Figure:
    """What an α rule read as α fell (``AlphaChoice.curve`` at λ = 1): the share of the forget
    images and of the rest of D that keep the baseline's answer; the chosen α dashed."""
    rows = [r for r in choice.curve if r.get("lambda", 1.0) == 1.0]
    fig = go.Figure()
    fig.add_scatter(x=[r["alpha"] for r in rows], y=[100 * r["forget_kept"] for r in rows], mode="lines+markers",
                    name="forget images keeping their answer", line_color=SELECTED)
    fig.add_scatter(x=[r["alpha"] for r in rows], y=[100 * r["rest_kept"] for r in rows], mode="lines+markers",
                    name="rest of D keeping theirs", line_color="#1f77b4")
    if not choice.nothing:
        fig.add_vline(x=choice.alpha, line_dash="dash", line_color="#333")
        fig.add_annotation(x=math.log10(choice.alpha), y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                           text=f"chosen α = {choice.alpha:g}")
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), xaxis_type="log", xaxis_title="α",
                      yaxis_title="% keeping the baseline's answer", yaxis_range=[-3, 103],
                      legend=dict(orientation="h", y=-0.35))
    return fig


RETRAINED_COLOR, BASELINE_COLOR, TEST_COLOR = "#2ca02c", "#7f7f7f", "#9ecae1"


def confidence_figure(pair) -> go.Figure:
    """The forget examples' confidence under the dampened, retrained and baseline models, test images
    (non-members) for scale, and the threshold that best tells the dampened model from the retrained."""
    fig = go.Figure()
    samples = [("test images (non-members), dampened model", pair.test, TEST_COLOR),
               ("forget examples, baseline", pair.baseline, BASELINE_COLOR),
               ("forget examples, retrained without D_f", pair.retrained, RETRAINED_COLOR),
               ("forget examples, dampened", pair.dampened, SELECTED)]
    values = np.concatenate([v for _, v, _ in samples if v is not None and len(v)])
    lo, hi = float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5))
    for name, sample, color in samples:
        if sample is None or not len(sample):
            continue
        fig.add_histogram(x=np.clip(sample, lo, hi), name=name, marker_color=color, opacity=0.55,
                          histnorm="percent", xbins=dict(start=lo, end=hi, size=(hi - lo) / 50 or 1))
    if pair.separation is not None and np.isfinite(pair.separation.threshold):
        fig.add_vline(x=float(np.clip(pair.separation.threshold, lo, hi)), line_dash="dash", line_color="#333")
        fig.add_annotation(x=float(np.clip(pair.separation.threshold, lo, hi)), y=1.0, yref="paper", yanchor="bottom",
                           showarrow=False, text=f"best threshold: ε = {pair.separation.epsilon:.2f}")
    fig.update_layout(barmode="overlay", height=320, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title=pair.statistic.split(" (")[0], yaxis_title="% of each set",
                      legend=dict(orientation="h", y=-0.3))
    return fig


def relearning_figure(curves: dict) -> go.Figure:
    """D_f accuracy against fine-tuning steps on D_f, per model."""
    colors = {"dampened": SELECTED, "retrained": RETRAINED_COLOR, "baseline": BASELINE_COLOR}
    fig = go.Figure()
    for name, curve in curves.items():
        fig.add_scatter(x=list(curve.steps), y=list(curve.accuracy), mode="lines+markers", name=name,
                        line_color=colors.get(name, "#333"))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=20, b=10), xaxis_title="fine-tuning steps on D_f",
                      yaxis_title="D_f accuracy (%)", yaxis_range=[-3, 103], legend=dict(orientation="h", y=-0.3))
    return fig
