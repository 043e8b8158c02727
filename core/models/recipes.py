"""Training recipes, a family: how a model is trained, declared once and chosen by name.

A model declares its own hyper-parameters (``ModelInfo.train``); a recipe turns them into the
configuration a run uses. ``default`` is the model's own (for the small CNN: Adam with a 1e-3
penalty on the wrong classes' squared logits, which keeps its outputs calm and LFSSD's ratios
sharp); ``plain`` is the same without that penalty (cross-entropy alone), the way most models
out there are trained. The retrained reference always uses the recipe of the model it is compared
with, and every cache key holds the resulting configuration.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from core.registry import Registry


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | sgd (momentum 0.9, cosine schedule)
    seed: int = 0
    label_smoothing: float = 0.0
    logit_penalty: float = 0.0  # weight of the wrong classes' mean squared logit, added to the loss


@dataclass(frozen=True)
class Recipe:
    name: str
    label: str  # for select boxes
    help: str  # one line, for the CLI's --help and the sidebar's tooltip
    apply: Callable[[TrainConfig], TrainConfig]  # the model's own configuration -> this recipe's


RECIPES: Registry[Recipe] = Registry("recipe")
RECIPES.register("default", Recipe(
    "default", "default", "each model's own recipe (the small CNN's adds a 1e-3 penalty on the wrong classes' "
    "squared logits)", lambda config: config))
RECIPES.register("plain", Recipe(
    "plain", "plain", "cross-entropy alone: the model's recipe without the wrong-logit penalty or label smoothing",
    lambda config: replace(config, logit_penalty=0.0, label_smoothing=0.0)))
