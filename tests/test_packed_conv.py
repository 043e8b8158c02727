"""Packed filters (core.fast.packed_conv): one or two filters of a convolution computed with every
vector lane busy give the plain convolution's values, bit for bit on this machine's kernels, and
the prefix cache uses them for MNIST-sized maps, falling back to the plain slice when they differ."""
import pytest
import torch
from torch import nn

from core.fast import packed_conv
from core.models.registry import create_model
from core.fast.packed_conv import PackedFilters, packable
from test_prefix_cache import assert_bitwise_like_full_forward, importances_selecting, prepared_for, synthetic

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the thread count the bench uses


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("size,kernel,padding,bias,filters", [
    ((14, 14), 3, 1, True, [17]),       # the small CNN's conv2 on MNIST
    ((14, 14), 3, 1, True, [3, 40]),
    ((32, 32), 3, 1, False, [5]),       # ResNet18-CIFAR's 3×3 convolutions
    ((13, 11), 5, 2, True, [0]),        # odd sizes: rows and columns past the map are dropped
    ((16, 12), 3, 0, True, [63]),       # no padding
])
def test_packed_filters_give_the_plain_convolution_bit_for_bit(size, kernel, padding, bias, filters):
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(32, 64, kernel, padding=padding, bias=bias).to(memory_format=torch.channels_last)
    x = channels_last(torch.randn(48, 32, *size, generator=gen).relu())
    idx = torch.tensor(filters)
    with torch.inference_mode():
        full = conv(x)
        packed = PackedFilters(conv, idx)(x)
    assert packed.shape == (48, len(filters), *full.shape[2:])
    assert torch.equal(packed, full[:, idx])


def test_packing_is_used_only_where_it_is_possible_and_pays():
    conv = nn.Conv2d(32, 64, 3, padding=1).to(memory_format=torch.channels_last)
    mnist = channels_last(torch.zeros(2, 32, 14, 14))
    assert packable(conv, mnist, 1)
    assert not packable(conv, mnist, 8)  # eight filters fill the lanes already
    assert not packable(conv, mnist.contiguous(), 1)  # NCHW: another kernel
    assert not packable(conv, channels_last(torch.zeros(2, 32, 7, 7)), 1)  # small maps: measured slower
    strided = nn.Conv2d(32, 64, 3, stride=2, padding=1)
    assert not packable(strided, mnist, 1)


def test_prefix_cache_packs_one_filter_on_mnist_sized_maps_bit_for_bit():
    dataset = synthetic((1, 28, 28), n_train=40, n_test=16)
    model = create_model("small_cnn", (1, 28, 28), dataset.num_classes, seed=4)
    stage_of = {n: i // 2 for i, (n, _) in enumerate(model.named_parameters())}
    full, forget_imp = importances_selecting(model, stage_of, 1, channels=1)  # one conv2 filter
    evaluator = assert_bitwise_like_full_forward(prepared_for("small_cnn", dataset, full, forget_imp, model))
    assert (evaluator.last.first_stage, evaluator.last.partial_channels, evaluator.last.packed) == (1, 1, True)


def test_prefix_cache_falls_back_to_the_plain_slice_when_packing_differs(monkeypatch):
    """Where packed sums are not the plain ones (another kernel, another machine), the once-per-
    shape check sees it and the plain slice is used: still bit for bit. Simulated by nudging the
    packed output by one ulp."""
    real_call = PackedFilters.__call__
    monkeypatch.setattr(PackedFilters, "__call__", lambda self, x: torch.nextafter(real_call(self, x),
                                                                                   torch.tensor(float("inf"))))
    dataset = synthetic((1, 28, 28), n_train=40, n_test=16)
    model = create_model("small_cnn", (1, 28, 28), dataset.num_classes, seed=4)
    stage_of = {n: i // 2 for i, (n, _) in enumerate(model.named_parameters())}
    full, forget_imp = importances_selecting(model, stage_of, 1, channels=1)
    evaluator = assert_bitwise_like_full_forward(prepared_for("small_cnn", dataset, full, forget_imp, model))
    assert (evaluator.last.partial_channels, evaluator.last.packed) == (1, False)
    assert set(evaluator._slice_modes.values()) == {"plain"}


def test_lanes_follow_the_cpu_and_packing_fills_them():
    lane_count = packed_conv.lanes()
    assert lane_count == (16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 8)
    rows, cols = packed_conv.packing(lane_count)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    packed = PackedFilters(conv, torch.tensor([1]))
    assert rows * cols == lane_count and packed.weight.shape == (lane_count, 3, 3 + rows - 1, 3 + cols - 1)
