"""The lesson's compact figures: one live chart a step, each short enough to share a 1280×800 screen
with its text (the full pages have the detailed versions)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import plotly.graph_objects as go

from core.plots.forget import KEPT, SELECTED

if TYPE_CHECKING:
    import pandas as pd

D_F, D_R, RETRAINED, GUESS = "#d62728", "#1f77b4", "#2ca02c", "#7f7f7f"
HEIGHT = 330
CLASS_ACCURACY_ALT = "test accuracy per digit"
SHORT = {"d_f": "D_f", "d_r": "D_r"}


def class_accuracy_svg(per_class: Sequence[float | None], classes: Sequence[str], chosen: int,
                      width: int = 560, height: int = 250) -> str:
    """The baseline's test accuracy per class as a plain SVG bar chart, the digit to forget in red.
    SVG rather than plotly: the lesson's first screen opens before plotly has loaded (building a
    first plotly figure took ~1.5 s of the cold start)."""
    left, bottom, top = 44, 34, 22
    plot_h, step = height - bottom - top, (width - left - 8) / max(len(classes), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="test accuracy per digit" style="font-family:sans-serif;font-size:12px">']
    for tick in (0, 50, 100):
        y = top + plot_h * (1 - tick / 100)
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e9ef"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{tick}</text>')
    for i, (value, name) in enumerate(zip(per_class, classes)):
        x = left + i * step + step * 0.15
        value = 0.0 if value is None or math.isnan(value) else float(value)
        h = plot_h * value / 100
        color = SELECTED if i == chosen else KEPT
        parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                     f'fill="{color}"><title>digit {name}: {value:.1f} % of its test images right</title></rect>'
                     f'<text x="{x + step * 0.35:.1f}" y="{top + plot_h - h - 4:.1f}" text-anchor="middle" '
                     f'fill="#333">{value:.0f}</text>'
                     f'<text x="{x + step * 0.35:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                     f'fill="#333">{name}</text>')
    parts.append(f'<text x="{left + (width - left) / 2:.1f}" y="{height - 4}" text-anchor="middle" fill="#555">'
                 f'digit (test accuracy, %)</text></svg>')
    return "".join(parts)


def alpha_curve_figure(table: pd.DataFrame, guesses: dict | None = None, marks: Sequence[tuple[str, float]] = (),
                       retrain=None) -> go.Figure:
    """D_f and D_r against α (log scale); ``guesses``: {α: (D_f, D_r)} drawn hollow; ``marks``:
    (label, α) vertical lines; ``retrain``: the retrained model's D_f and D_r, dashed."""
    rows = table.sort_values("alpha")
    fig = go.Figure()
    for metric, name, color in (("d_f", "D_f: the digit to forget", D_F), ("d_r", "D_r: the other digits", D_R)):
        fig.add_scatter(x=rows["alpha"], y=rows[metric], mode="lines+markers", name=name, line_color=color,
                        hovertemplate="α = %{x:g}: %{y:.1f} %<extra>" + SHORT[metric] + "</extra>")
        if guesses:
            index = 0 if metric == "d_f" else 1
            fig.add_scatter(x=list(guesses), y=[g[index] for g in guesses.values()], mode="markers",
                            marker=dict(symbol="circle-open", size=13, color=color, line_width=2),
                            name=f"your guess, {SHORT[metric]}", hovertemplate="you guessed %{y:.0f} %<extra></extra>")
        if retrain is not None and getattr(retrain, metric) is not None:
            fig.add_hline(y=getattr(retrain, metric), line_dash="dash", line_color=RETRAINED, line_width=1,
                          annotation_text=f"retrained {SHORT[metric]}", annotation_font_color=RETRAINED,
                          annotation_position="bottom right" if metric == "d_f" else "top right")
    for label, alpha in marks:
        fig.add_vline(x=alpha, line_dash="dot", line_color="#333")
        fig.add_annotation(x=math.log10(alpha), y=1.0, yref="paper", yanchor="bottom", text=label, showarrow=False)
    ticks = [t for t in (0.5, 1, 2, 3.5, 5, 10, 20, 50, 100) if rows["alpha"].min() / 1.5 <= t <= rows["alpha"].max() * 1.5]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], title_text="α (log scale)")
    fig.update_layout(height=HEIGHT, margin=dict(l=10, r=10, t=30, b=10), yaxis_range=[-3, 105],
                      yaxis_title="accuracy (%)", legend=dict(orientation="h", y=-0.25, x=0))
    return fig


def lambda_curve_figure(table: pd.DataFrame, current: float, retrain=None) -> go.Figure:
    """D_f and D_r against λ at one α, the slider's λ marked."""
    rows = table.sort_values("lambda")
    fig = go.Figure()
    for metric, name, color in (("d_f", "D_f: the digit to forget", D_F), ("d_r", "D_r: the other digits", D_R)):
        fig.add_scatter(x=rows["lambda"], y=rows[metric], mode="lines+markers", name=name, line_color=color,
                        hovertemplate="λ = %{x:g}: %{y:.1f} %<extra></extra>")
        if retrain is not None and getattr(retrain, metric) is not None:
            fig.add_hline(y=getattr(retrain, metric), line_dash="dash", line_color=RETRAINED, line_width=1)
    fig.add_vline(x=current, line_dash="dot", line_color="#333")
    fig.add_annotation(x=current, y=1.0, yref="paper", yanchor="bottom", text=f"λ = {current:g}", showarrow=False)
    fig.update_xaxes(title_text="λ (dampening constant)")
    fig.update_layout(height=HEIGHT, margin=dict(l=10, r=10, t=30, b=10), yaxis_range=[-3, 105],
                      yaxis_title="accuracy (%)", legend=dict(orientation="h", y=-0.25, x=0))
    return fig


def answers_figure(before: Sequence[int], after: Sequence[int], classes: Sequence[str]) -> go.Figure:
    """How many of the forget images the model calls each class, before and after dampening."""
    count = lambda answers: [sum(1 for a in answers if a == i) for i in range(len(classes))]  # noqa: E731
    fig = go.Figure()
    fig.add_bar(x=[str(c) for c in classes], y=count(before), name="before", marker_color=KEPT)
    fig.add_bar(x=[str(c) for c in classes], y=count(after), name="after dampening", marker_color=SELECTED)
    fig.update_layout(height=HEIGHT - 70, margin=dict(l=10, r=10, t=30, b=10), barmode="group",
                      xaxis_type="category", xaxis_title="the model's answer", yaxis_title="images",
                      legend=dict(orientation="h", y=1.12, x=0))
    return fig
