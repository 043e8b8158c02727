"""Evaluate dampened copies of one baseline model without re-running what dampening left alone.

At a useful α, dampening touches few parameter tensors, mostly late ones. The model's declared
stages (``core.fast.stages``) let evaluation cache the baseline's activations at stage boundaries on
the evaluation images once, and recompute a dampened model only from the first stage that holds
a selected element. Where that stage is a convolution block and only a few of its filters hold
selected elements, only those output channels are recomputed, on the CPU with the filters packed
into every vector lane where that pays (``core.fast.packed_conv``). Once per shape, the slice is
checked to reproduce the full convolution's values bit for bit, packed first, then plain; where
neither does, the whole stage is recomputed.

Results are bit-for-bit those of ``predict_logits`` on a dampened copy: the same chunks of
``eval_chunk_size`` images, the same normalisation, the same modules in the same order.

Activations are kept within a memory budget (``$LFSSD_PREFIX_CACHE_MB``; default 512 MiB on the
CPU, a quarter of the free memory on a GPU); the boundaries nearest the output, the cheapest and
most often useful, are kept first, then earlier ones while they fit. Parameters are
set in one reused private copy of the model per thread (never the shared baseline), and only the
tensors that changed since its last use are rewritten.
"""
from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from core.method.dampening import DampeningPlan, dampened_value
from core.data.dataset import Dataset
from core.evaluation.accuracy import model_input
from core.fast.runtime import eval_chunk_size, layout_copy
from core.fast.stages import Stage, single_stage

DEFAULT_BUDGET_MB = 512
PARTIAL_MAX_SHARE = 0.5  # recompute a channel slice only when it is at most this share of the channels


def budget_bytes(device: torch.device | None = None) -> int:
    """``$LFSSD_PREFIX_CACHE_MB`` MiB; else 512 MiB of host memory, or on a GPU a quarter of its
    free memory (at most 16 GiB), where the activations then live."""
    value = os.environ.get("LFSSD_PREFIX_CACHE_MB", "").strip()
    if value:
        try:
            return max(0, int(float(value) * 2 ** 20))
        except ValueError:
            pass
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(free // 4, 16 * 2 ** 30))
    return DEFAULT_BUDGET_MB * 2 ** 20


@dataclass
class _Scratch:
    model: nn.Module
    stages: list[Stage]
    params: dict[str, torch.Tensor]
    dirty: set[str] = field(default_factory=set)  # parameters that differ from the baseline now


@dataclass
class PassStats:
    """What the last pass recomputed: for the benchmark and tests."""

    first_stage: int  # index of the first recomputed stage (== stages: nothing recomputed)
    stages: int
    partial_channels: int | None = None  # channels recomputed in the first stage, when sliced
    stage_channels: int | None = None
    packed: bool = False  # the slice's filters were packed into every vector lane (core.fast.packed_conv)


class PrefixEvaluator:
    """Logits of dampened versions of ``model`` on fixed named image sets (uint8, normalised by
    ``dataset``), recomputed from the first changed stage. Thread-safe; ``model`` is only read."""

    def __init__(self, model: nn.Module, stages_fn, dataset: Dataset, image_sets: dict[str, torch.Tensor],
                 budget: int | None = None, autocast: torch.dtype | None = None):
        self.dataset = dataset
        # the baseline as evaluation runs it: a channels-last copy where that layout pays
        self.model = layout_copy(model)
        self.channels_last = self.model is not model
        self.stages_fn = stages_fn or single_stage
        self.base_stages = self.stages_fn(self.model)
        self.device = next(model.parameters()).device
        self.names = [n for n, _ in self.model.named_parameters()]
        self.stage_of = {n: next(i for i, s in enumerate(self.base_stages) if s.owns(n)) for n in self.names}
        self.sets = dict(image_sets)
        shape = next((tuple(images.shape[1:]) for images in self.sets.values() if len(images)), None)
        self.chunk = eval_chunk_size(model, shape) if shape else 1  # predict_logits' chunks
        self.budget = budget_bytes(self.device) if budget is None else budget
        self.keep: set[int] = set()  # cached boundaries (b = input of stage b; len(stages) = logits)
        self._acts: dict[str, list[dict[int, torch.Tensor]]] | None = None
        self._lock = threading.Lock()
        self._pool: list[_Scratch] = []
        self._slice_modes: dict[tuple, str | None] = {}
        self.last = PassStats(len(self.base_stages), len(self.base_stages))
        self.autocast = autocast  # opt-in, changes numerics: e.g. torch.bfloat16 (pays on GPUs, not on most CPUs)

    @property
    def num_stages(self) -> int:
        return len(self.base_stages)

    def first_changed(self, changed) -> int:
        return min((self.stage_of[n] for n in changed), default=self.num_stages)

    def cached_bytes(self) -> int:
        if self._acts is None:
            return 0
        return sum(t.numel() * t.element_size() for chunks in self._acts.values() for c in chunks for t in c.values())

    # --- passes ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def baseline_logits(self) -> dict[str, torch.Tensor]:
        """The baseline's logits on every set (the first call runs the model and fills the cache)."""
        with self._lock:
            if self._acts is None:
                with self._numerics():
                    self._fill()
        self.last = PassStats(self.num_stages, self.num_stages)
        return {name: self._cat(name, self.num_stages) for name in self.sets}

    @torch.inference_mode()
    def logits(self, plan: DampeningPlan | None) -> dict[str, torch.Tensor]:
        """Logits of the baseline dampened by ``plan`` (None: the baseline itself)."""
        if plan is None or not plan.betas:
            return self.baseline_logits()
        self.baseline_logits()  # make sure the cache exists
        first = self.first_changed(plan.betas)
        scratch = self._acquire()
        try:
            self._set_params(scratch, plan)
            slice_idx, rows = self._channel_slice(first, plan)
            bound: dict[str, Callable] = {}  # this move's channel slice, per mode: filters packed once
            with self._numerics():
                out = {name: torch.cat([self._forward(scratch, name, c, first, slice_idx, bound)
                                        for c in range(len(chunks))])
                       if chunks else self._empty(name) for name, chunks in self._acts.items()}
        finally:
            self._release(scratch)
        modes = [v for k, v in self._slice_modes.items() if k[0] == first and slice_idx is not None
                 and k[1] == len(slice_idx)]
        exact = slice_idx is not None and bool(modes) and None not in modes
        self.last = PassStats(first, self.num_stages, len(slice_idx) if exact else None, rows if exact else None,
                              exact and all(m == "packed" for m in modes))
        return out

    def _numerics(self):
        from contextlib import nullcontext

        if self.autocast is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def _fill(self) -> None:
        """One baseline pass over every set, recording the stage boundaries the budget allows."""
        self.keep = self._plan()
        acts: dict[str, list[dict[int, torch.Tensor]]] = {name: [] for name in self.sets}
        for name, images in self.sets.items():
            for start in range(0, len(images), self.chunk):
                x = self._input(images, start)
                record: dict[int, torch.Tensor] = {}
                for i, stage in enumerate(self.base_stages):
                    x = stage.run(x)
                    if i + 1 in self.keep:
                        record[i + 1] = self._stored(i + 1, x)
                acts[name].append(record)
        self._acts = acts

    def _plan(self) -> set[int]:
        """Boundaries to keep: the logits, then from the output backwards while the budget lasts
        (sizes from a one-image probe)."""
        keep = {self.num_stages}
        sample = next((images[:1] for images in self.sets.values() if len(images)), None)
        if sample is None:
            return keep
        total = sum(len(images) for images in self.sets.values())
        x, sizes = model_input(self.dataset, sample, self.device, self.channels_last), {}
        for i, stage in enumerate(self.base_stages):
            x = stage.run(x)
            sizes[i + 1] = x.element_size() * x.numel()
        used = 0
        for b in range(self.num_stages - 1, 0, -1):
            cost = sizes[b] * total
            if used + cost <= self.budget:
                keep.add(b)
                used += cost
        return keep

    def _stored(self, boundary: int, x: torch.Tensor) -> torch.Tensor:
        """The activation as cached: contiguous where the next stage flattens it (same values; the
        flatten is then a view on every later pass, and a slice's copy of it a plain memcpy)."""
        if boundary < self.num_stages and self.base_stages[boundary].flattens_input:
            return x.contiguous()
        return x

    def _forward(self, scratch: _Scratch, name: str, c: int, first: int, slice_idx, bound: dict) -> torch.Tensor:
        cached = self._acts[name][c]
        start = max((b for b in cached if b <= first and b < self.num_stages), default=0)
        x = cached[start] if start else self._input(self.sets[name], c * self.chunk)
        for i in range(start, self.num_stages):
            if i < first:
                x = self.base_stages[i].run(x)  # unchanged: the shared baseline's stage
            elif i == first and slice_idx is not None and \
                    (mode := self._slice_mode(i, x, cached[i + 1], slice_idx)) is not None:
                if mode not in bound:
                    bound[mode] = scratch.stages[i].channels(slice_idx, mode == "packed")
                x = self._sliced(bound[mode], cached[i + 1], slice_idx, x)
            else:
                x = scratch.stages[i].run(x)
        return x.float().cpu()

    # --- channel slices ----------------------------------------------------------------------------

    def _channel_slice(self, first: int, plan: DampeningPlan) -> tuple[torch.Tensor | None, int | None]:
        """(output channels of stage ``first`` holding selected elements, the stage's channel count),
        or (None, None) when a slice cannot be used."""
        if first >= self.num_stages:
            return None, None
        stage = self.base_stages[first]
        if stage.channels is None or first + 1 not in self.keep:
            return None, None
        changed = [n for n in plan.betas if self.stage_of[n] == first]
        if not set(changed) <= set(stage.channel_params):
            return None, None
        rows = None
        for n in changed:
            mask = plan.selected[n]
            hit = mask.reshape(mask.shape[0], -1).any(1)
            rows = hit if rows is None else rows | hit
        idx = torch.nonzero(rows).flatten().to(self.device)
        return (idx, len(rows)) if len(idx) <= PARTIAL_MAX_SHARE * len(rows) else (None, None)

    def _slice_mode(self, i: int, x: torch.Tensor, out: torch.Tensor, idx: torch.Tensor) -> str | None:
        """How to compute the channel slice so that it gives the full stage's values bit for bit,
        for these shapes: "packed" (every vector lane busy, where that pays), else "plain", else
        None (recompute the whole stage). Checked once on the baseline, whose full output is
        cached, then remembered."""
        key = (i, len(idx), tuple(x.shape), x.dtype, str(x.device))
        if key not in self._slice_modes:
            stage, expected = self.base_stages[i], out.index_select(1, idx)
            candidates = ("packed", "plain") if stage.packs is not None and stage.packs(x, len(idx)) else ("plain",)
            self._slice_modes[key] = next((mode for mode in candidates
                                           if torch.equal(stage.channels(idx, mode == "packed")(x), expected)), None)
        return self._slice_modes[key]

    @staticmethod
    def _sliced(run, baseline_out: torch.Tensor, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = baseline_out.clone()
        out[:, idx] = run(x)
        return out

    # --- the private copies ------------------------------------------------------------------------

    def _acquire(self) -> _Scratch:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        model = copy.deepcopy(self.model)
        for p in model.parameters():
            p.requires_grad_(False)
        return _Scratch(model, self.stages_fn(model), dict(model.named_parameters()))

    def _release(self, scratch: _Scratch) -> None:
        with self._lock:
            self._pool.append(scratch)

    def _set_params(self, scratch: _Scratch, plan: DampeningPlan) -> None:
        base = dict(self.model.named_parameters())
        for name in scratch.dirty - set(plan.betas):
            scratch.params[name].copy_(base[name])
        for name, beta in plan.betas.items():
            dampened_value(base[name].detach(), beta, out=scratch.params[name])
        scratch.dirty = set(plan.betas)

    # --- inputs ------------------------------------------------------------------------------------

    def _input(self, images: torch.Tensor, start: int) -> torch.Tensor:
        return model_input(self.dataset, images[start:start + self.chunk], self.device, self.channels_last)

    def _cat(self, name: str, boundary: int) -> torch.Tensor:
        chunks = self._acts[name]
        return torch.cat([c[boundary].float().cpu() for c in chunks]) if chunks else self._empty(name)

    def _empty(self, name: str) -> torch.Tensor:
        return torch.zeros(0, self.dataset.num_classes)
