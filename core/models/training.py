"""Training with a progress callback, and a disk cache of trained models keyed by what made them.

The default models train in seconds on the embedded digit sets, so the app never needs a
download: the first run trains, later runs load the cached safetensors file.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.cache import TensorCache, make_key
from core.data.dataset import Dataset
from core.models.recipes import RECIPES, TrainConfig
from core.models.registry import MODELS, create_model, default_device

Progress = Callable[[float, str], None]


def default_config(model_name: str, dataset_name: str | None = None, recipe: str = "default",
                   **overrides) -> TrainConfig:
    """How ``model_name`` is trained on ``dataset_name`` under ``recipe``: the model's declared
    configuration (and its epochs for that data set), the recipe applied, then ``overrides``."""
    info = MODELS.get(model_name)
    base = info.train
    if dataset_name in info.epochs_on:
        base = replace(base, epochs=info.epochs_on[dataset_name])
    base = RECIPES.get(recipe).apply(base)
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def train_model(model_name: str, dataset: Dataset, config: TrainConfig, indices: torch.Tensor | None = None,
                progress: Progress | None = None, device: torch.device | None = None) -> nn.Module:
    """Train a fresh ``model_name`` on ``dataset``'s train split (or its ``indices``); eval mode, CPU."""
    model = create_model(model_name, dataset.image_shape, dataset.num_classes, seed=config.seed)
    return fit(model, dataset, config, indices, progress, device, label=model_name)


def fit(model: nn.Module, dataset: Dataset, config: TrainConfig, indices: torch.Tensor | None = None,
        progress: Progress | None = None, device: torch.device | None = None, label: str = "model") -> nn.Module:
    """Train ``model`` itself (in place) with ``config`` on the train split (or its ``indices``).

    The batch order comes from ``config.seed``; returns the model in eval mode, on the CPU.
    """
    device = device or default_device()
    model = model.to(device)
    indices = torch.arange(len(dataset.train_y)) if indices is None else indices
    optimizer, scheduler = _optimizer(model, config, steps=config.epochs * _num_batches(len(indices), config.batch_size))
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    started = time.perf_counter()
    for epoch in range(config.epochs):
        order = indices[torch.randperm(len(indices), generator=gen)]
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            x = dataset.normalize(dataset.train_x[batch]).to(device)
            labels = dataset.train_y[batch].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            if config.logit_penalty:
                loss = loss + config.logit_penalty * _wrong_logit_energy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        if progress:
            progress((epoch + 1) / config.epochs,
                     f"training {label} on {dataset.name}: epoch {epoch + 1}/{config.epochs}, "
                     f"loss {loss.item():.3f}, {time.perf_counter() - started:.0f} s")
    model.zero_grad(set_to_none=True)
    return model.eval().cpu()


def _model_key(model_name: str, dataset: Dataset, config: TrainConfig, indices: torch.Tensor | None) -> str:
    index_key = None if indices is None else make_key(tuple(indices.tolist()))
    return make_key("model", model_name, dataset.fingerprint, tuple(sorted(asdict(config).items())), index_key)


def is_trained(model_name: str, dataset: Dataset, config: TrainConfig | None = None,
               cache: TensorCache | None = None) -> bool:
    """Whether ``trained_model`` would load this model from the cache (or the shipped assets, see
    ``core.assets``) rather than train it."""
    config = config or default_config(model_name, dataset.name)
    return (cache or TensorCache()).has("models", _model_key(model_name, dataset, config, None))


def estimate_training_seconds(model_name: str, dataset: Dataset, config: TrainConfig | None = None,
                              importance_passes: float = 2.0) -> float:
    """Seconds to train ``model_name`` on ``dataset`` here, from a one-batch probe: one training step
    timed after a warm-up one, times the run's steps, plus ``importance_passes`` passes over the
    training set at about a step's cost per batch (I_D and I_Df come next)."""
    config = config or default_config(model_name, dataset.name)
    model = create_model(model_name, dataset.image_shape, dataset.num_classes, seed=config.seed).to(default_device())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    batch = torch.arange(min(config.batch_size, len(dataset.train_y)))
    x = dataset.normalize(dataset.train_x[batch]).to(default_device())
    labels = dataset.train_y[batch].to(default_device())
    model.train()
    step_seconds = 0.0
    for attempt in range(2):  # the first step pays for one-off allocations
        started = time.perf_counter()
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_seconds = time.perf_counter() - started
    steps = _num_batches(len(dataset.train_y), config.batch_size)
    return step_seconds * steps * (config.epochs + importance_passes)


def _wrong_logit_energy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared logits of the classes a sample is not."""
    wrong = torch.ones_like(logits).scatter_(1, labels[:, None], 0.0)
    return (logits.pow(2) * wrong).sum(1).mean()


def _num_batches(n: int, batch_size: int) -> int:
    return max((n + batch_size - 1) // batch_size, 1)


def _optimizer(model: nn.Module, config: TrainConfig, steps: int):
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(steps, 1), pct_start=0.15)


def trained_model(model_name: str, dataset: Dataset, config: TrainConfig | None = None,
                  indices: torch.Tensor | None = None, cache: TensorCache | None = None,
                  progress: Progress | None = None) -> tuple[nn.Module, bool]:
    """(model, loaded_from_cache). Trains and caches when no cached model was made the same way.

    The key holds the data set's content hash, the model, the whole training config and the
    training indices (so a retrain-without-D_f model is cached apart from the baseline).
    """
    config = config or default_config(model_name, dataset.name)
    cache = cache or TensorCache()
    key = _model_key(model_name, dataset, config, indices)
    model = create_model(model_name, dataset.image_shape, dataset.num_classes, seed=config.seed)
    state = cache.get("models", key)
    if state is not None and set(state) == set(model.state_dict()):
        model.load_state_dict(state)
        return model.eval(), True
    model = train_model(model_name, dataset, config, indices, progress)
    cache.put("models", key, model.state_dict(), {"model": model_name, "dataset": dataset.name})
    return model, False
