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

Evaluation chunks: on the CPU, scoring images in chunks whose largest activation stays near the
size of the caches (``CPU_CHUNK_BYTES``) ran the CIFAR-shaped small CNN 2× and ResNet18-CIFAR
~1.25× faster than chunks of 512 (measured here: chunks of 64–128 images, 32 for ResNet18), with
bit-for-bit equal logits. ``eval_chunk_size`` sizes them from a one-image probe; on a GPU chunks
stay at 512.

GPU: ``use_gpu_numerics`` keeps CUDA's float32 IEEE (cuDNN would run convolutions in TF32, a
10-bit mantissa: ~1e-3 relative error, enough to move elements across the α threshold) and its
convolution algorithms deterministic; ``synchronize`` makes a timer see the GPU's queued work.
"""
from __future__ import annotations

import contextlib
import copy
import os
import threading

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


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


def use_gpu_numerics() -> None:
    """Float32 means float32 on CUDA too: no TF32 in convolutions or matrix products (a faster
    arithmetic is opt-in and labelled, like bf16), and deterministic cuDNN algorithms so a seed
    gives the same model (a few CUDA backward kernels still add with atomics: last bits may vary)."""
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _gpu_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def synchronize() -> None:
    """Wait for the GPU's queued kernels (nothing to do when CUDA was never used)."""
    if _gpu_in_use():
        torch.cuda.synchronize()


@contextlib.contextmanager
def seeded(seed: int):
    """Torch's global RNG seeded with ``seed`` inside the block and restored after: the CPU's, and
    each GPU's already in use (``torch.manual_seed`` reseeds those too)."""
    gpus = list(range(torch.cuda.device_count())) if _gpu_in_use() else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)
        yield


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


MAX_EVAL_CHUNK = 512  # images per evaluation chunk: the most, and always the chunk on a GPU
MIN_EVAL_CHUNK = 16
CPU_CHUNK_BYTES = 8 << 20
_chunk_sizes: dict[tuple, int] = {}
_chunk_lock = threading.Lock()


class _LargestOutput(TorchFunctionMode):
    """Records the largest tensor any torch function returns (thread-local: hooks on a model
    shared between sessions would see the other threads' batches too)."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.bytes = max(self.bytes, out.numel() * out.element_size())
        return out


def eval_chunk_size(model: nn.Module, image_shape: tuple[int, ...]) -> int:
    """Images per evaluation chunk for ``model`` on images of ``image_shape`` (C, H, W): on a GPU
    ``MAX_EVAL_CHUNK``; on the CPU the power of two whose largest activation is at most
    ``CPU_CHUNK_BYTES``, within [``MIN_EVAL_CHUNK``, ``MAX_EVAL_CHUNK``]. Probed once per
    architecture and shape, on one blank image (the model in eval mode, read only)."""
    first = next(model.parameters(), None)
    if first is None or first.device.type != "cpu":
        return MAX_EVAL_CHUNK
    key = (type(model).__qualname__, tuple(tuple(p.shape) for p in model.parameters()), tuple(image_shape),
           first.dtype)
    with _chunk_lock:
        if key in _chunk_sizes:
            return _chunk_sizes[key]
    probe, run = _LargestOutput(), model if not model.training else copy.deepcopy(model).eval()
    with torch.inference_mode(), probe:
        run(torch.zeros(1, *image_shape, dtype=first.dtype))
    chunk = MIN_EVAL_CHUNK
    while chunk < MAX_EVAL_CHUNK and 2 * chunk * probe.bytes <= CPU_CHUNK_BYTES:
        chunk *= 2
    with _chunk_lock:
        _chunk_sizes[key] = chunk
    return chunk
