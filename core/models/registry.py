"""The model registry (small CNN, ResNet18 for CIFAR, ViT via timm) and safe checkpoints."""
from __future__ import annotations

import os
import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from core.errors import CheckpointError, UserError
from core.models.recipes import TrainConfig
from core.registry import Registry
from core.fast.runtime import seeded, use_gpu_numerics


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    build: Callable[[tuple[int, int, int], int], nn.Module]  # (image shape (C,H,W), classes) -> model
    per_sample: str = "vmap"  # how sample-mode importance gets per-sample gradients: hooks | vmap | loop
    # The model's stages (core.fast.stages): evaluation after dampening restarts from the first stage
    # that holds a dampened element. None: one stage, the whole model.
    stages: Callable[[nn.Module], list] | None = None
    label: str = ""  # a short name for select boxes (the description is their help); default: the name
    # its own training configuration (the ``default`` recipe; other recipes derive from it) and,
    # where a data set wants other epochs, those
    train: TrainConfig = TrainConfig()
    epochs_on: Mapping[str, int] = field(default_factory=dict)
    # the images it accepts: (C, H, W) -> why not, or None (checked before anything is built)
    refuses: Callable[[tuple[int, int, int]], str | None] | None = None
    in_app: bool = True  # offered in the app's select box (False: the CLI only, e.g. it needs the model hub)

    def check_shape(self, image_shape: tuple[int, int, int]) -> None:
        reason = self.refuses(tuple(image_shape)) if self.refuses else None
        if reason:
            raise UserError(f"{self.name} cannot take {'×'.join(map(str, image_shape))} images: {reason}")

    def stages_of(self, model: nn.Module) -> list:
        from core.fast.stages import single_stage

        return (self.stages or single_stage)(model)


MODELS: Registry[ModelInfo] = Registry("model")


def default_device() -> torch.device:
    """The GPU when there is one (with float32 kept IEEE there: ``use_gpu_numerics``), else the CPU."""
    if torch.cuda.is_available():
        use_gpu_numerics()
        return torch.device("cuda")
    return torch.device("cpu")


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live."""
    return next(model.parameters()).device


def create_model(name: str, image_shape: tuple[int, int, int], num_classes: int, seed: int = 0) -> nn.Module:
    """A freshly initialised model (weights drawn from ``seed``), in eval mode, on the CPU."""
    info = MODELS.get(name)
    info.check_shape(image_shape)
    with seeded(seed):
        model = info.build(tuple(image_shape), num_classes)
    return model.eval()


# --- small CNN -------------------------------------------------------------------------------

def small_cnn(image_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Two conv blocks and two linear layers: trains in seconds on 8×8 and 28×28 digits."""
    channels, height, width = image_shape
    flat = 64 * (height // 4) * (width // 4)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, 32, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(flat, 128)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(128, num_classes)),
    ]))


# --- ResNet18, CIFAR variant -----------------------------------------------------------------

def _relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU of a layer's fresh output: in place when no gradient is recorded (evaluation: the
    same values, one activation-sized buffer fewer per layer, ~5 % of a ResNet18 forward on one
    core), a new tensor otherwise (autograd and the per-sample hooks need the layer's output)."""
    return x.relu_() if not torch.is_grad_enabled() else torch.relu(x)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = _relu(self.bn1(self.conv1(x)))
        out, shortcut = self.bn2(self.conv2(out)), self.shortcut(x)
        if torch.is_grad_enabled() or shortcut.dtype != out.dtype:
            return torch.relu(out + shortcut)
        out += shortcut  # the same sum (a + b = b + a exactly), into this block's own buffer
        return out.relu_()


class ResNet18Cifar(nn.Module):
    """3×3 stride-1 stem, no max-pool, 4 stages of 2 BasicBlocks (64/128/256/512), linear head."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_classes)

    def stem(self, x):
        return _relu(self.bn1(self.conv1(x)))

    def head(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x):  # = the stages in order (resnet_stages), so each can be rerun on its own
        out = self.stem(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                out = block(out)
        return self.head(out)


def resnet_stages(model: ResNet18Cifar) -> list:
    """Stem, each of the eight BasicBlocks, head (pool + linear)."""
    from core.fast.stages import Stage

    stages = [Stage("stem", model.stem, ("conv1.", "bn1."))]
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        stages += [Stage(f"{layer}.{i}", block, (f"{layer}.{i}.",)) for i, block in enumerate(getattr(model, layer))]
    return stages + [Stage("head", model.head, ("fc.",))]


# --- ViT via timm ----------------------------------------------------------------------------

def small_vit(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A ViT-Tiny-sized transformer with patches small enough for 8–32 pixel images."""
    from timm.models.vision_transformer import VisionTransformer

    channels, height, _ = image_shape
    patch = 2 if height <= 8 else 4
    if height % patch:
        raise UserError(f"the small ViT needs an image size divisible by {patch}, got {height}")
    return VisionTransformer(img_size=height, patch_size=patch, in_chans=channels, num_classes=num_classes,
                             embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0)


PRETRAINED_VIT = "vit_base_patch16_224.orig_in21k_ft_in1k"
HUB_HOST = "huggingface.co"


class Upsampled(nn.Module):
    """Resize inputs to the size a pretrained model expects (the paper upsamples CIFAR 32→224)."""

    def __init__(self, inner: nn.Module, size: int, channels: int):
        super().__init__()
        self.inner, self.size, self.channels = inner, size, channels

    def resize(self, x):
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        return nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)

    def forward(self, x):
        return self.inner(self.resize(x))


def upsampled_vit_stages(model: Upsampled) -> list:
    """The inner ViT's stages, the resize folded into the first."""
    from dataclasses import replace

    from core.fast.stages import vit_stages

    stages = vit_stages(model.inner, prefix="inner.")
    first = stages[0]
    return [replace(first, run=lambda x: first.run(model.resize(x))), *stages[1:]]


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def pretrained_vit_b16(image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The paper's ViT-B/16 (ImageNet-21k, fine-tuned on 1k), with a new linear head."""
    import timm

    if not _hub_reachable():
        _raise_unless_cached()
    try:
        inner = timm.create_model(PRETRAINED_VIT, pretrained=True, num_classes=num_classes)
    except Exception as exc:  # the hub's many network and file errors, one message for users
        raise UserError(f"could not load the pretrained weights of {PRETRAINED_VIT}: {exc}".splitlines()[0]) from None
    return Upsampled(inner, 224, 3)


def _raise_unless_cached() -> None:
    cache = Path(os.environ.get("HF_HUB_CACHE", Path.home() / ".cache" / "huggingface" / "hub"))
    if not any(cache.glob("models--timm--vit_base_patch16_224*")):
        raise UserError(
            f"vit_b16 needs pretrained weights from {HUB_HOST}, which cannot be reached here and are not in {cache}; "
            "use 'vit' (trained from scratch) or copy the timm weights into that cache")


def _sequential_stages(model: nn.Module) -> list:
    from core.fast.stages import sequential_stages

    return sequential_stages(model)


def _vit_stages(model: nn.Module) -> list:
    from core.fast.stages import vit_stages

    return vit_stages(model)


def _small_cnn_refuses(shape: tuple[int, int, int]) -> str | None:
    return "it pools twice: images must be at least 4×4" if min(shape[1:]) < 4 else None


MODELS.register("small_cnn", ModelInfo(
    "small_cnn", "small CNN: 2 conv + 2 linear layers (trains in seconds)", small_cnn, per_sample="hooks",
    stages=_sequential_stages, label="small CNN",
    train=TrainConfig(epochs=30, batch_size=64, lr=1e-3, logit_penalty=1e-3),
    # MNIST-5k has 3× the images of digits at 12× the pixels: fewer epochs keep it under 20 s
    epochs_on={"mnist5k": 8}, refuses=_small_cnn_refuses))
MODELS.register("resnet18", ModelInfo(
    "resnet18", "ResNet18, CIFAR variant (11 M parameters)", lambda shape, n: ResNet18Cifar(shape[0], n),
    per_sample="hooks", stages=resnet_stages, label="ResNet18",
    train=TrainConfig(epochs=30, batch_size=128, lr=0.1, weight_decay=5e-4, optimizer="sgd")))
MODELS.register("vit", ModelInfo(
    "vit", "ViT-Tiny-sized, small patches, trained from scratch (timm)", small_vit, stages=_vit_stages,
    label="ViT (small, from scratch)", train=TrainConfig(epochs=60, batch_size=128, lr=1e-3, weight_decay=0.05)))
MODELS.register("vit_b16", ModelInfo(
    "vit_b16", "the paper's ViT-B/16, pretrained (needs the model hub)", pretrained_vit_b16, per_sample="loop",
    stages=upsampled_vit_stages, label="ViT-B/16 (pretrained)",
    train=TrainConfig(epochs=3, batch_size=32, lr=1e-4, weight_decay=0.05), in_app=False))


# --- checkpoints -----------------------------------------------------------------------------
#
# A checkpoint is read by its content, never its name: safetensors (an 8-byte header length, then
# JSON), or a zip-format ``torch.save`` file read with ``torch.load(weights_only=True)``. Anything
# else, a plain pickle above all (unpickling runs code), is refused before it is parsed.

def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the model's state dict as safetensors, atomically (``OSError`` when it cannot)."""
    from core.cache import save_tensors

    save_tensors(path, model.state_dict(), metadata)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from safetensors or a zip-format ``torch.save`` file (``weights_only``).

    A plain pickle is refused before a byte of it is unpickled: unpickling runs code.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.exists():
        raise CheckpointError(f"no such checkpoint file: {path}")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file")
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if _checkpoint_kind(head, path.name) == "safetensors":
        from safetensors.torch import load

        # read whole, not memory-mapped: a file rewritten or cut later must not change (or crash) us
        return _read_safetensors(lambda: load(path.read_bytes()), path.name)
    return _read_torch_zip(path, path.name)


def state_dict_from_bytes(data: bytes, name: str) -> dict[str, torch.Tensor]:
    """``read_state_dict`` for an upload's bytes (nothing written to disk); ``name`` is for messages."""
    import io

    if _checkpoint_kind(data[:16], name) == "safetensors":
        from safetensors.torch import load

        return _read_safetensors(lambda: load(data), name)
    return _read_torch_zip(io.BytesIO(data), name)


def _checkpoint_kind(head: bytes, name: str) -> str:
    """"safetensors" or "torch-zip" from a file's first bytes; anything else is refused here."""
    if len(head) < 9:
        raise CheckpointError(f"{name} is not a checkpoint (only {len(head)} bytes)")
    if head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80":
        raise CheckpointError(f"{name} is a plain pickle (or a legacy torch.save file); refusing to unpickle it "
                              "(that can run code). Save weights with safetensors or a current torch.save")
    raise CheckpointError(f"{name} is neither safetensors nor a torch.save file")


def _read_safetensors(read, name: str) -> dict[str, torch.Tensor]:
    try:
        return read()
    except Exception as exc:
        raise CheckpointError(f"{name} is not a valid safetensors file: {exc}".splitlines()[0]) from None


def _read_torch_zip(source, name: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{name} was refused by torch.load(weights_only=True): {exc}".splitlines()[0]) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise CheckpointError(f"{name} does not hold a state dict of tensors")
    return obj


def load_checkpoint(path: str | Path, model: nn.Module) -> nn.Module:
    """Load weights from ``path`` into ``model`` (a fresh one from ``create_model``) and return it.

    Raises ``CheckpointError`` naming missing, unexpected, mis-shaped and non-finite keys.
    """
    return load_state(model, read_state_dict(path), Path(path).name)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> nn.Module:
    """Copy ``state`` into ``model`` (fresh, not shared) after checking it fits; eval mode.

    Refused, with a message naming up to four keys per problem: missing, unexpected, wrong shape,
    not floating point where the model's tensor is, NaN or infinite values.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)
    mis_shaped = [f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    mistyped = [f"{k} {str(state[k].dtype).removeprefix('torch.')}" for k, v in expected.items()
                if k in state and v.is_floating_point() and not state[k].is_floating_point()]
    non_finite = [k for k, v in expected.items() if k in state and state[k].is_floating_point()
                  and state[k].shape == v.shape and not bool(torch.isfinite(state[k]).all())]
    problems = (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped),
                ("not floating point", mistyped), ("NaN or infinite values", non_finite))
    parts = [f"{label}: {', '.join(keys[:4])}{f' and {len(keys) - 4} more' if len(keys) > 4 else ''}"
             for label, keys in problems if keys]
    if parts:
        raise CheckpointError(f"{name} does not fit this model ({'; '.join(parts)})")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{name} does not fit this model: {exc}".splitlines()[0]) from None
    return model.eval()


def weights_hash(model: nn.Module) -> str:
    """A content hash of every parameter and buffer: a cache key, and proof nothing changed."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
