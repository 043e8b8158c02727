"""Parameter importance over a data set: LFSSD (label-free) and SSD (Fisher diagonal).

| kind  | differentiated per batch (or per sample)            | accumulated        |
|-------|-----------------------------------------------------|--------------------|
| ssd   | mean cross-entropy                                  | grad², summed      |
| lfssd | mean of ‖f(x)‖₂² over the batch, on the raw logits | |grad|, summed      |

then divided by the number of batches (``batch`` mode, as the reference code does) or of
samples (``sample`` mode: each sample's own gradient, the paper's equation 3 exactly).
The model is in eval mode throughout and is never modified: gradients come from
``torch.autograd.grad``, so no ``.grad`` is written to a shared model.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from core.loader import NO_LABEL

KINDS = ("lfssd", "ssd")
MODES = ("batch", "sample")
Progress = Callable[[float, str], None]
Importance = dict[str, torch.Tensor]


def validate(kind: str, mode: str) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown importance kind '{kind}'; choose one of: {', '.join(KINDS)}")
    if mode not in MODES:
        raise UserError(f"unknown importance mode '{mode}'; choose one of: {', '.join(MODES)}")


def objective(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The scalar whose gradient measures importance, averaged over the batch."""
    if kind == "lfssd":
        return logits.pow(2).sum(1).mean()  # squared l2 norm; no NaN gradient at a zero row
    if (labels == NO_LABEL).any():
        raise UserError("SSD needs labels, and the forget images have none; use LFSSD (label-free)")
    return F.cross_entropy(logits, labels)


def _accumulate(kind: str, total: torch.Tensor, grad: torch.Tensor) -> None:
    total.add_(grad.abs() if kind == "lfssd" else grad.pow(2))


def compute_importance(model: nn.Module, loader: Iterable, kind: str = "lfssd", mode: str = "batch",
                       progress: Progress | None = None, per_sample: str = "vmap") -> Importance:
    """Importance of every named parameter of ``model`` over ``loader``'s ``(x, y)`` batches.

    Returns a dict keyed by parameter name, each tensor shaped like its parameter, on the CPU.
    ``per_sample`` ("vmap" or "loop") picks how sample mode gets per-sample gradients.
    """
    validate(kind, mode)
    model.eval()
    params = dict(model.named_parameters())
    device = next(iter(params.values())).device
    totals = {name: torch.zeros_like(p, device=device) for name, p in params.items()}
    step = _batch_step if mode == "batch" else (_sample_step_vmap if per_sample == "vmap" else _sample_step_loop)
    count, n_batches = 0, max(len(loader), 1) if hasattr(loader, "__len__") else None
    for i, (x, y) in enumerate(loader):
        count += step(model, params, totals, kind, x.to(device), y.to(device))
        if progress and n_batches:
            progress((i + 1) / n_batches, f"{kind} importance ({mode}): batch {i + 1}/{n_batches}")
    if count == 0:
        raise UserError("cannot compute importance over an empty set")
    return {name: (t / count).cpu() for name, t in totals.items()}


def _batch_step(model, params, totals, kind, x, y) -> int:
    """Accumulate |g| or g² of the batch-mean gradient; returns 1 (one batch)."""
    names = [n for n, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(objective(kind, model(x), y), [params[n] for n in names], allow_unused=True)
    for name, grad in zip(names, grads):
        if grad is not None:
            _accumulate(kind, totals[name], grad)
    return 1


def _sample_step_loop(model, params, totals, kind, x, y) -> int:
    for i in range(len(x)):
        _batch_step(model, params, totals, kind, x[i:i + 1], y[i:i + 1])
    return len(x)


def _sample_step_vmap(model, params, totals, kind, x, y) -> int:
    """Per-sample gradients in one vectorised call (torch.func); falls back to a loop."""
    from torch.func import functional_call, grad, vmap

    names = [n for n, p in params.items() if p.requires_grad]
    frozen = {n: p.detach() for n, p in params.items()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def sample_objective(trainable, xi, yi):
        out = functional_call(model, ({**frozen, **trainable}, buffers), (xi.unsqueeze(0),))
        return objective(kind, out, yi.unsqueeze(0))

    try:
        per_sample = vmap(grad(sample_objective), in_dims=(None, 0, 0))({n: frozen[n] for n in names}, x, y)
    except UserError:
        raise
    except Exception:  # ops without a batching rule: same numbers, one sample at a time
        return _sample_step_loop(model, params, totals, kind, x, y)
    for name in names:
        g = per_sample[name]  # (B, *param shape)
        totals[name].add_((g.abs() if kind == "lfssd" else g.pow(2)).sum(0))
    return len(x)


def cached_importance(model: nn.Module, loader, kind: str, mode: str, cache, model_key: str,
                      progress: Progress | None = None, per_sample: str = "vmap") -> tuple[Importance, bool]:
    """(importance, from_cache): computed once per (model weights, data and order, kind, mode,
    batch size) and stored in ``cache`` (a ``TensorCache``); a damaged entry is recomputed."""
    from core.cache import make_key

    validate(kind, mode)
    key = make_key("importance", model_key, loader.content_key(), kind, mode)
    hit = cache.get("importance", key)
    names = [name for name, _ in model.named_parameters()]
    if hit is not None and set(hit) == set(names):
        if progress:
            progress(1.0, f"{kind} importance ({mode}): loaded from cache")
        return {name: hit[name] for name in names}, True  # model order (the file stores them sorted)
    imp = compute_importance(model, loader, kind, mode, progress, per_sample)
    cache.put("importance", key, imp, {"kind": kind, "mode": mode})
    return imp, False
