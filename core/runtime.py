"""How the engine runs on this machine: torch threads, and the memory layout convolutions get.

Threads: on a small machine shared with other work, torch's default (one intra-op thread per
core) spins threads against each other; measured here, two spinning threads made the small CNN
up to ~9× slower on a busy 2-core machine. ``configure_threads`` picks one thread per core
beyond the first (one on 1–2 cores), unless ``LFSSD_THREADS`` or ``OMP_NUM_THREADS`` says
otherwise (torchrun sets the latter to 1 per process).

Layout: convolutions over NHWC ("channels last") tensors ran 2× faster on the CPU for the small
CNN's forward pass and ~20 % for ResNet18's (measured by ``python -m core bench``). A model with
two or more 2-D convolutions is run as a channels-last copy; the shared model is never converted
in place. Every evaluation path (``predict_logits`` and the prefix cache) uses the same rule, so
they agree bit for bit.
"""
from __future__ import annotations

import copy
import os

import torch
from torch import nn


def default_threads() -> int:
    for variable in ("LFSSD_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def configure_threads(count: int | None = None) -> int:
    """Set torch's intra-op threads (``count``, else ``default_threads()``); returns the number."""
    count = count or default_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def prefers_channels_last(model: nn.Module) -> bool:
    """Two or more 2-D convolutions: the channels-last layout pays (the first convolution of a
    one-channel image alone gains nothing)."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) >= 2


def layout_copy(model: nn.Module) -> nn.Module:
    """``model`` itself, or a channels-last copy of it when that layout pays."""
    if not prefers_channels_last(model):
        return model
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def as_layout(x: torch.Tensor, model_is_channels_last: bool) -> torch.Tensor:
    if model_is_channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
