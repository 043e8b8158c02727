"""Parameter importance over a data set: LFSSD (label-free) and SSD (Fisher diagonal).

| kind  | differentiated per batch (or per sample)            | accumulated        |
|-------|-----------------------------------------------------|--------------------|
| ssd   | mean cross-entropy                                  | grad², summed      |
| lfssd | mean of ‖f(x)‖₂² over the batch, on the raw logits | |grad|, summed      |

then divided by the number of batches (``batch`` mode, as the reference code does) or of
samples (``sample`` mode: each sample's own gradient, the paper's equation 3 exactly).
Accumulation is in place, one ``torch._foreach_*`` call per batch for every tensor at once.
The model is in eval mode throughout and is never modified: gradients come from
``torch.autograd.grad``, so no ``.grad`` is written to a shared model.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from core.data.loader import NO_LABEL

KINDS = ("lfssd", "ssd")
MODES = ("batch", "sample")
PER_SAMPLE = ("hooks", "vmap", "loop")  # how sample mode gets per-sample gradients
# (running totals, this process's count) -> the count over every process, totals summed in place
Reduce = Callable[[list[torch.Tensor], int], int]
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
    check_labels(kind, labels)
    return F.cross_entropy(logits, labels)


def check_labels(kind: str, labels: torch.Tensor) -> None:
    if kind == "ssd" and bool((labels == NO_LABEL).any()):
        raise UserError("SSD needs labels, and the forget images have none; use LFSSD (label-free)")


def compute_importance(model: nn.Module, loader: Iterable, kind: str = "lfssd", mode: str = "batch",
                       progress: Progress | None = None, per_sample: str = "vmap",
                       reduce: Reduce | None = None) -> Importance:
    """Importance of every named parameter of ``model`` over ``loader``'s ``(x, y)`` batches.

    Returns a dict keyed by parameter name, each tensor shaped like its parameter, on the CPU
    (computed on the model's device). ``per_sample`` ("hooks", "vmap" or "loop") picks how sample
    mode gets per-sample gradients; "hooks" falls back to vmap for layers it cannot follow.
    ``reduce`` (see ``core.fast.distributed``) sums the running totals and the count over processes that
    each saw a shard of the batches, so every process returns the importance over all of them.
    """
    validate(kind, mode)
    if per_sample not in PER_SAMPLE:
        raise UserError(f"unknown per-sample method '{per_sample}'; choose one of: {', '.join(PER_SAMPLE)}")
    from core.fast.runtime import as_layout, layout_copy

    model.eval()
    run = layout_copy(model)  # a channels-last copy for convolutional models; ``model`` is untouched
    channels_last = run is not model
    params = dict(run.named_parameters())
    device = next(iter(params.values())).device
    totals = {name: torch.zeros_like(p, device=device, memory_format=torch.contiguous_format)
              for name, p in params.items()}
    step = _step(run, mode, per_sample)
    count, n_batches = 0, max(len(loader), 1) if hasattr(loader, "__len__") else None
    for i, (x, y) in enumerate(loader):
        x = as_layout(x.to(device, non_blocking=True), channels_last)
        count += step(run, params, totals, kind, x, y.to(device, non_blocking=True))
        if progress and n_batches:
            progress((i + 1) / n_batches, f"{kind} importance ({mode}): batch {i + 1}/{n_batches}")
    if reduce is not None:
        count = reduce(list(totals.values()), count)
    if count == 0:
        raise UserError("cannot compute importance over an empty set")
    values = list(totals.values())
    torch._foreach_div_(values, float(count))
    return {name: t.cpu() for name, t in zip(totals, values)}  # contiguous, in parameter order


def _step(model: nn.Module, mode: str, per_sample: str):
    if mode == "batch":
        return _batch_step
    if per_sample == "hooks":
        from core.fast.per_sample import plan

        layers = plan(model)
        if layers is not None:
            return _HookStep(layers)
        per_sample = "vmap"
    return _sample_step_vmap if per_sample == "vmap" else _sample_step_loop


def _batch_step(model, params, totals, kind, x, y) -> int:
    """Accumulate |g| or g² of the batch-mean gradient, in place and in one foreach call; returns 1."""
    names = [n for n, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(objective(kind, model(x), y), [params[n] for n in names], allow_unused=True)
    pairs = [(totals[n], g) for n, g in zip(names, grads) if g is not None]
    if pairs:
        targets, found = (list(t) for t in zip(*pairs))
        found = [g if _owns_memory(g) else g.contiguous() for g in found]  # e.g. an expanded gradient
        if kind == "lfssd":
            torch._foreach_abs_(found)  # the gradients are ours; abs is idempotent even if two alias
            torch._foreach_add_(targets, found)
        else:
            torch._foreach_addcmul_(targets, found, found)  # total += g·g
    return 1


def _owns_memory(t: torch.Tensor) -> bool:
    """Dense without overlap (safe to modify in place): contiguous in some memory format."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _sample_step_loop(model, params, totals, kind, x, y) -> int:
    for i in range(len(x)):
        _batch_step(model, params, totals, kind, x[i:i + 1], y[i:i + 1])
    return len(x)


class _HookStep:
    """Sample mode from one forward and one backward per batch (``core.fast.per_sample``); batches the
    hooks cannot follow go through vmap instead."""

    def __init__(self, layers):
        self.layers = layers

    def __call__(self, model, params, totals, kind, x, y) -> int:
        from core.fast.per_sample import Unsupported, accumulate

        check_labels(kind, y)
        try:
            return accumulate(model, self.layers, totals, kind, x, y)
        except Unsupported:
            return _sample_step_vmap(model, params, totals, kind, x, y)


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


def max_relative_difference(reference: Importance, other: Importance) -> float:
    """Largest |reference − other| over each tensor, relative to that tensor's largest |reference|."""
    return max(float((reference[k] - other[k]).abs().max() / reference[k].abs().max().clamp_min(1e-30))
               for k in reference)


def cached_importance(model: nn.Module, loader, kind: str, mode: str, cache, model_key: str,
                      progress: Progress | None = None, per_sample: str = "vmap",
                      group=None) -> tuple[Importance, bool]:
    """(importance, from_cache): computed once per (model weights, data and order, kind, mode,
    batch size) and stored in ``cache`` (a ``TensorCache``); a damaged entry is recomputed.

    ``group`` (``core.fast.distributed.Group``): each process takes a share of the batches and the
    sums are all-reduced; the entry has the same key and content as a one-process run, and only
    the first process writes it.
    """
    from core.cache import make_key

    validate(kind, mode)
    key = make_key("importance", model_key, loader.content_key(), kind, mode)
    hit = cache.get("importance", key)
    names = [name for name, _ in model.named_parameters()]
    usable = hit is not None and set(hit) == set(names)
    if group is not None:
        usable = group.all_agree(usable)  # every process loads, or every process computes
    if usable:
        if progress:
            progress(1.0, f"{kind} importance ({mode}): loaded from cache")
        return {name: hit[name] for name in names}, True  # model order (the file stores them sorted)
    if group is None:
        imp = compute_importance(model, loader, kind, mode, progress, per_sample)
    else:
        imp = compute_importance(model, group.shard(loader), kind, mode, progress, per_sample, reduce=group.reduce)
    if group is None or group.rank == 0:
        cache.put("importance", key, imp, {"kind": kind, "mode": mode})
    if group is not None:
        group.barrier()
    return imp, False
