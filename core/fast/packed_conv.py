"""A few filters of a convolution at the price of a few filters, on the CPU.

oneDNN's CPU convolution vectorises over output channels: one AVX2 register holds 8 output
channels (16 with AVX-512), so one filter on its own costs as much as eight (measured here: the
1-filter slice of the small CNN's conv2 took as long as 8 filters, and 1/6 of all 64). A channel
slice of a dampened stage is usually one or two filters, so it wasted 7 lanes of 8.

Packing fills the lanes with the same filter at neighbouring output positions: lane (dy, dx)
holds the filter shifted by dy rows and dx columns inside a kernel (fy - 1) rows and (fx - 1)
columns larger, and the convolution runs with stride (fy, fx), so its output channel (dy, dx) at
(Y, X) is the original output at (fy·Y + dy, fx·X + dx) (offset by the extra padding that lets
the packed rows and columns cover the map; positions past its edges are dropped). Each lane sums
the same products in the same order as the plain convolution; the extra taps multiply zeros and
add nothing. So the result is bit-for-bit the plain one *when the convolution kernel keeps its
summation order across these shapes* (and no input under a zero tap is infinite or NaN), which
nothing guarantees: ``core.evaluation.prefix`` checks it once per shape against the cached full output and
uses the plain slice where it does not hold.

Measured here for one of the small CNN's 64 conv2 filters on 14×14 maps: 0.56 ms against 1.10 ms
per chunk of 64 images, the rearrangement of the output included.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MIN_OUTPUT_PIXELS = 100  # below ~10×10 maps the rearrangement costs what the lanes save (measured: 7×7 lost)
MIN_WORK_SAVED = 2.0  # pack only when the lanes do at least this many times less work


def lanes() -> int:
    """Output channels per vector register in oneDNN's CPU convolution: 16 with AVX-512, else 8."""
    return 16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 8


def packing(lane_count: int) -> tuple[int, int]:
    """(rows, columns) of output positions per filter: 4 rows, the rest in columns (measured
    fastest here of 1×8, 2×4, 4×2 and 8×1 on 14×14 and 32×32 maps)."""
    rows = min(4, lane_count)
    return rows, lane_count // rows


def _packed_count(size: int, kernel: int, pad: int, factor: int) -> int:
    """Output rows (or columns) of the packed convolution: stride ``factor``, kernel ``factor - 1`` larger."""
    return (size + 2 * pad - (kernel + factor - 1)) // factor + 1


def _extra_padding(size: int, kernel: int, pad: int, factor: int) -> tuple[int, int]:
    """(e, n): with e more rows of padding on each side, packed rows cover the n output rows."""
    n = size + 2 * pad - kernel + 1
    e = 0
    while factor * _packed_count(size, kernel, pad + e, factor) - e < n:
        e += 1
    return e, n


def _cover(conv: nn.Conv2d, x: torch.Tensor, fy: int, fx: int) -> tuple[int, int, int, int]:
    """(ey, h, ex, w): the extra padding rows and columns, and the output map's height and width."""
    (ey, h), (ex, w) = (_extra_padding(x.shape[2], conv.kernel_size[0], conv.padding[0], fy),
                        _extra_padding(x.shape[3], conv.kernel_size[1], conv.padding[1], fx))
    return ey, h, ex, w


def packable(conv: nn.Conv2d, x: torch.Tensor, filters: int) -> bool:
    """Whether packing ``filters`` of ``conv`` over ``x`` is possible and pays: a CPU, a
    channels-last input, a stride-1 undilated ungrouped convolution with zero padding, an output
    map of at least ``MIN_OUTPUT_PIXELS``, and at least ``MIN_WORK_SAVED`` times less work."""
    if (x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last)
            or conv.groups != 1 or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1)
            or isinstance(conv.padding, str) or conv.padding_mode != "zeros"):
        return False
    lane_count = lanes()
    fy, fx = packing(lane_count)
    kh, kw = conv.kernel_size
    ey, h, ex, w = _cover(conv, x, fy, fx)
    if h * w < MIN_OUTPUT_PIXELS:
        return False
    packed_rows = _packed_count(x.shape[2], kh, conv.padding[0] + ey, fy)
    packed_cols = _packed_count(x.shape[3], kw, conv.padding[1] + ex, fx)
    packed_work = filters * packed_rows * packed_cols * (kh + fy - 1) * (kw + fx - 1)  # vector FMAs per input channel
    plain_work = -(-filters // lane_count) * h * w * kh * kw
    return plain_work >= MIN_WORK_SAVED * packed_work


class PackedFilters:
    """The filters ``idx`` of ``conv``, packed once (from the weights as they are now); calling
    it on an input gives ``conv``'s output channels ``idx``, shape (N, len(idx), H, W)."""

    def __init__(self, conv: nn.Conv2d, idx: torch.Tensor):
        self.fy, self.fx = packing(lanes())
        self.conv = conv
        weight = conv.weight[idx]
        k, ic, kh, kw = weight.shape
        self.filters = k
        fy, fx = self.fy, self.fx
        packed = weight.new_zeros(k, fy, fx, ic, kh + fy - 1, kw + fx - 1)
        for dy in range(fy):
            for dx in range(fx):
                packed[:, dy, dx, :, dy:dy + kh, dx:dx + kw] = weight
        self.weight = packed.reshape(k * fy * fx, ic, kh + fy - 1, kw + fx - 1).contiguous(
            memory_format=torch.channels_last)
        self.bias = conv.bias[idx].repeat_interleave(fy * fx) if conv.bias is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        fy, fx, (ph, pw) = self.fy, self.fx, self.conv.padding
        ey, h, ex, w = _cover(self.conv, x, fy, fx)
        out = F.conv2d(x, self.weight, self.bias, (fy, fx), (ph + ey, pw + ex))
        n, _, rows, cols = out.shape
        # channel (filter, dy, dx) at (Y, X) is the filter's output at (fy·Y + dy - ey, fx·X + dx - ex)
        spread = out.reshape(n, self.filters, fy, fx, rows, cols).permute(0, 1, 4, 2, 5, 3)
        return spread.reshape(n, self.filters, rows * fy, cols * fx)[:, :, ey:ey + h, ex:ex + w]
