"""A model as a sequence of stages, so evaluation can restart from the first stage that changed.

``model(x) == stage_n(…stage_1(x))``, bit for bit in eval mode: each stage calls the model's own
modules in the order its ``forward`` does. Every parameter belongs to exactly one stage (named by
prefixes of parameter names). A stage may also offer ``channels(idx, packed)``: a function of the
input giving the stage's output restricted to the output channels ``idx``, for stages whose
output channel c depends only on the rows c of its parameters (a convolution, optionally
BatchNorm, then per-channel activations and pooling), so a few dampened filters cost a few
filters' work (``packed``: with the filters packed into every vector lane, ``core.fast.packed_conv``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.fast.packed_conv import PackedFilters, packable


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[torch.Tensor], torch.Tensor]  # bound to one model instance
    prefixes: tuple[str, ...]  # parameter-name prefixes ("conv2." …) of the parameters it uses
    # (idx, packed) -> (x -> out[:, idx]), the filters taken from the parameters as they are now
    channels: Callable[[torch.Tensor, bool], Callable[[torch.Tensor], torch.Tensor]] | None = None
    channel_params: tuple[str, ...] = field(default=())  # parameters whose dim 0 indexes output channels
    packs: Callable[[torch.Tensor, int], bool] | None = None  # (x, filters): whether channels(…, packed=True) pays
    # the stage begins by flattening its input: an input stored contiguous (NCHW) flattens as a
    # view, where a channels-last one is copied on every pass
    flattens_input: bool = False

    def owns(self, param_name: str) -> bool:
        return any(param_name == p.rstrip(".") or param_name.startswith(p) for p in self.prefixes)


StageBuilder = Callable[[nn.Module], list[Stage]]


def single_stage(model: nn.Module) -> list[Stage]:
    """The fallback for a model that declares nothing: one stage, always recomputed."""
    return [Stage("model", model, ("",))]


def _run_all(modules: Sequence[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x):
        for module in modules:
            x = module(x)
        return x
    return run


_PER_CHANNEL = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.MaxPool2d, nn.AvgPool2d,
                nn.Identity, nn.Dropout)


def sequential_stages(model: nn.Sequential, prefix: str = "") -> list[Stage]:
    """Stages of an ``nn.Sequential``: a new stage at each child with parameters (and at a
    ``Flatten``, so convolution blocks keep their channel axis); parameter-free children join the
    stage before them."""
    groups: list[list[tuple[str, nn.Module]]] = []
    for name, child in model.named_children():
        if _has_params(child):
            if groups and not any(_has_params(m) for _, m in groups[-1]):
                groups[-1].append((name, child))  # parameter-free children lead into this one
            else:
                groups.append([(name, child)])
        elif not groups or isinstance(child, nn.Flatten):
            groups.append([(name, child)])
        else:
            groups[-1].append((name, child))
    stages = []
    for group in groups:
        names, modules = [n for n, _ in group], [m for _, m in group]
        owned = tuple(f"{prefix}{n}." for n, m in group if _has_params(m))
        stages.append(Stage("+".join(names), _run_all(modules), owned, *_channelwise(group, prefix),
                            flattens_input=isinstance(modules[0], nn.Flatten)))
    return stages


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _channelwise(group, prefix: str):
    """(channels, channel_params, packs) when the group is conv [→ BatchNorm] → per-channel ops; else ()."""
    modules = [m for _, m in group]
    if not modules or not isinstance(modules[0], nn.Conv2d) or modules[0].groups != 1 \
            or modules[0].padding_mode != "zeros":
        return ()
    rest = modules[1:]
    if rest and isinstance(rest[0], nn.BatchNorm2d):
        bn, rest = rest[0], rest[1:]
        if bn.running_mean is None:
            return ()
    else:
        bn = None
    if not all(isinstance(m, _PER_CHANNEL) for m in rest):
        return ()
    conv = modules[0]
    names = [n for n, _ in group]

    def channels(idx, packed=False):
        if packed:
            convolve = PackedFilters(conv, idx)
        else:
            weight, bias = conv.weight[idx], conv.bias[idx] if conv.bias is not None else None
            convolve = lambda x: F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, 1)  # noqa: E731
        if bn is not None:
            norm = (bn.running_mean[idx], bn.running_var[idx], bn.weight[idx] if bn.weight is not None else None,
                    bn.bias[idx] if bn.bias is not None else None)

        def run(x):
            out = convolve(x)
            if bn is not None:
                out = F.batch_norm(out, *norm, False, 0.0, bn.eps)
            for module in rest:
                out = module(out)
            return out
        return run

    params = [f"{prefix}{names[0]}.weight"] + ([f"{prefix}{names[0]}.bias"] if conv.bias is not None else [])
    if bn is not None:
        params += [f"{prefix}{names[1]}.{p}" for p in ("weight", "bias") if getattr(bn, p) is not None]
    return channels, tuple(params), lambda x, filters: packable(conv, x, filters)


def vit_stages(model: nn.Module, prefix: str = "") -> list[Stage]:
    """timm's VisionTransformer: the embedding, each block, then norm and head — its own methods,
    in ``forward_features``/``forward_head``'s order (no attention mask, no checkpointing)."""
    embed_params = tuple(f"{prefix}{n}" for n in ("patch_embed.", "cls_token", "reg_token", "pos_embed", "norm_pre."))
    stages = [Stage("embed", lambda x: model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x)))),
                    embed_params)]
    stages += [Stage(f"blocks.{i}", block, (f"{prefix}blocks.{i}.",)) for i, block in enumerate(model.blocks)]
    head_params = tuple(f"{prefix}{n}." for n in ("norm", "fc_norm", "attn_pool", "head"))
    stages.append(Stage("head", lambda x: model.forward_head(model.norm(x)), head_params))
    return stages


def check_stages(model: nn.Module, stages: list[Stage]) -> None:
    """Every parameter in exactly one stage (``ValueError`` naming the first that is not)."""
    for name, _ in model.named_parameters():
        owners = [s.name for s in stages if s.owns(name)]
        if len(owners) != 1:
            raise ValueError(f"parameter {name} belongs to {len(owners)} stages ({', '.join(owners) or 'none'})")


def run_stages(stages: list[Stage], x: torch.Tensor) -> torch.Tensor:
    for stage in stages:
        x = stage.run(x)
    return x
