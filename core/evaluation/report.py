"""What the Model & data page shows: a data set's shape and samples, a model's accuracy per class
and confusion matrix, and the checks an uploaded checkpoint goes through. No Streamlit here."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from core.data.dataset import Dataset
from core.errors import UserError
from core.evaluation.accuracy import accuracy, predict_logits
from core.models.registry import create_model, load_state, state_dict_from_bytes

CHECKPOINT_TYPES = ("safetensors", "pt")
MAX_UPLOAD_MB = 200
BASELINE, UPLOADED = "#9aa5b1", "#1f77b4"


# --- scores ------------------------------------------------------------------------------------

def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(classes, classes) int counts: row = true class, column = predicted class."""
    predicted = logits.argmax(1).numpy()
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels.numpy(), predicted), 1)
    return counts


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Accuracy per true class in % (the diagonal over the row sums); NaN for a class with no samples."""
    totals = matrix.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1) * 100.0, np.nan)


@dataclass(frozen=True, eq=False)
class ModelReport:
    train: float  # whole train split (%)
    test: float  # whole test split (%)
    confusion: np.ndarray  # (classes, classes) counts on the test split
    per_class: np.ndarray  # (classes,) test accuracy (%)


def model_report(model: nn.Module, dataset: Dataset) -> ModelReport:
    """Score ``model`` on both splits; the confusion matrix is on the test split."""
    test_logits = predict_logits(model, dataset, dataset.test_x)  # (M, classes)
    train_logits = predict_logits(model, dataset, dataset.train_x)
    matrix = confusion_matrix(test_logits, dataset.test_y, dataset.num_classes)
    return ModelReport(accuracy(train_logits, dataset.train_y), accuracy(test_logits, dataset.test_y),
                       matrix, per_class_accuracy(matrix))


# --- the data set ------------------------------------------------------------------------------

def class_counts(dataset: Dataset) -> pd.DataFrame:
    """Images per class in each split."""
    return pd.DataFrame({"class": list(dataset.classes),
                         "train": np.bincount(dataset.train_y.numpy(), minlength=dataset.num_classes),
                         "test": np.bincount(dataset.test_y.numpy(), minlength=dataset.num_classes)})


def sample_mosaic(dataset: Dataset, per_class: int = 8, cell: int = 64, gap: int = 4) -> np.ndarray:
    """(H, W, 3) uint8: one row per class of the first ``per_class`` train images of that class,
    each upscaled with nearest-neighbour to ``cell`` pixels (so 8×8 digits stay crisp)."""
    _, height, width = dataset.image_shape
    factor = max(cell // max(height, width), 1)
    ch, cw = height * factor, width * factor
    rows, cols = dataset.num_classes, per_class
    mosaic = np.full((rows * (ch + gap) - gap, cols * (cw + gap) - gap, 3), 255, dtype=np.uint8)
    labels = dataset.train_y.numpy()
    for c in range(rows):
        for j, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            image = dataset.train_x[i].numpy().transpose(1, 2, 0)  # (H, W, C)
            image = np.repeat(np.repeat(image, factor, 0), factor, 1)
            y, x = c * (ch + gap), j * (cw + gap)
            mosaic[y:y + ch, x:x + cw] = image if image.shape[2] == 3 else np.repeat(image, 3, 2)
    return mosaic


def sample_grid_figure(dataset: Dataset, per_class: int = 8) -> go.Figure:
    """The sample mosaic as a plotly image (a PNG, not a pixel array), class names down the side."""
    from PIL import Image

    mosaic = sample_mosaic(dataset, per_class)
    buffer = io.BytesIO()
    Image.fromarray(mosaic).save(buffer, format="PNG")
    source = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    row = mosaic.shape[0] / dataset.num_classes
    fig = go.Figure(go.Image(source=source, hoverinfo="skip"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(tickvals=[(c + 0.5) * row for c in range(dataset.num_classes)],
                     ticktext=list(dataset.classes), showgrid=False, zeroline=False)
    fig.update_layout(height=min(40 + 42 * dataset.num_classes, 900), margin=dict(l=10, r=10, t=10, b=10))
    return fig


# --- figures -----------------------------------------------------------------------------------

def confusion_figure(matrix: np.ndarray, classes: tuple[str, ...], title: str = "") -> go.Figure:
    """Counts in each cell, coloured by the share of the true class (row-normalised).

    One heatmap trace per row (the other rows empty), each scaled from 0 to its row's total: the
    traces' ``z`` are the counts themselves, so they sum to the split's size, while the colour is
    the row share.
    """
    names = list(classes)
    fig = go.Figure()
    for c, counts in enumerate(matrix):
        total = max(int(counts.sum()), 1)
        labels = [str(v) if v or j == c else "" for j, v in enumerate(counts.tolist())]  # blank off-diagonal 0s
        fig.add_heatmap(z=[counts.tolist()], x=names, y0=c, dy=1, zmin=0, zmax=total, colorscale="Blues",
                        text=[labels], texttemplate="%{text}", customdata=[(counts / total * 100).tolist()],
                        xgap=1, ygap=1, showscale=c == 0,
                        colorbar=dict(title="% of row", tickvals=[0, total / 2, total], ticktext=["0", "50", "100"],
                                      thickness=12),
                        hovertemplate=f"true {names[c]} → predicted %{{x}}: %{{z}} "
                                      "(%{customdata:.1f} %)<extra></extra>")
    size = min(120 + 32 * len(names), 900)
    fig.update_layout(title=title or None, height=size, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis=dict(title="predicted", type="category"),
                      yaxis=dict(title="true", tickvals=list(range(len(names))), ticktext=names, autorange="reversed",
                                 showgrid=False, zeroline=False))
    return fig


def per_class_bars(classes: tuple[str, ...], **series: np.ndarray) -> go.Figure:
    """Test accuracy per class, one bar group per named series (``baseline=…, uploaded=…``)."""
    fig = go.Figure()
    colors = {"baseline": BASELINE, "uploaded": UPLOADED}
    for name, values in series.items():
        fig.add_bar(x=list(classes), y=[None if np.isnan(v) else float(v) for v in values], name=name,
                    marker_color=colors.get(name), hovertemplate="class %{x}: %{y:.1f} %<extra></extra>")
    fig.update_traces(texttemplate="%{y:.0f}", textposition="inside", insidetextanchor="end")
    fig.update_layout(barmode="group", height=320, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis=dict(title="class", type="category"), yaxis=dict(title="test accuracy (%)", range=[0, 100]),
                      showlegend=len(series) > 1, legend=dict(orientation="h", y=1.12, x=0))
    return fig


# --- uploaded checkpoints ----------------------------------------------------------------------

def load_uploaded_checkpoint(data: bytes, filename: str, model_name: str, dataset: Dataset,
                             max_mb: int = MAX_UPLOAD_MB) -> nn.Module:
    """Bytes of an uploaded checkpoint → ``model_name`` for ``dataset`` with those weights.

    Only safetensors or a zip-format ``torch.save`` file read with ``weights_only`` get through,
    recognised by their content (``core.models.registry.state_dict_from_bytes``); a plain pickle is refused
    unread. Nothing is written to disk, so the browser's file name is only ever shown, never used
    as a path. Raises ``UserError`` (a ``CheckpointError`` for the file's content) with a message
    naming the file.
    """
    name = _display_name(filename)
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in CHECKPOINT_TYPES:
        raise UserError(f"{name}: choose a .safetensors or .pt file, got '.{suffix}'" if suffix
                        else f"{name}: choose a .safetensors or .pt file")
    if len(data) > max_mb * 1024 * 1024:
        raise UserError(f"{name} is {len(data) / 2**20:.0f} MB; the limit is {max_mb} MB")
    state = state_dict_from_bytes(data, name)
    model = create_model(model_name, dataset.image_shape, dataset.num_classes)
    return load_state(model, state, name)


def _display_name(filename: str) -> str:
    """The last part of a browser-sent file name, printable and at most 100 characters."""
    name = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c if c.isprintable() else "?" for c in name).strip()
    if len(name) > 100:
        name = name[:60] + "…" + name[-39:]
    return name or "checkpoint"
