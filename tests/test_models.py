"""The model registry builds every member; checkpoints load safely or are refused clearly."""
import os
import pickle
import time

import pytest
import torch
from safetensors.torch import save_file

from core import create_model, load_checkpoint
from core.errors import CheckpointError, UserError
from core.models.registry import MODELS, save_checkpoint, weights_hash

OFFLINE_ONLY = {"vit_b16"}  # needs pretrained weights from a hub: tested for its clear failure


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n not in OFFLINE_ONLY])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_every_model_builds_and_runs(name, shape):
    model = create_model(name, shape, num_classes=7, seed=0)
    assert not model.training
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)


def test_same_seed_same_weights_other_seed_other_weights():
    a = create_model("small_cnn", (1, 8, 8), 10, seed=0)
    b = create_model("small_cnn", (1, 8, 8), 10, seed=0)
    c = create_model("small_cnn", (1, 8, 8), 10, seed=1)
    assert weights_hash(a) == weights_hash(b) != weights_hash(c)


def test_creating_a_model_leaves_the_callers_random_stream_alone():
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    create_model("small_cnn", (1, 8, 8), 10, seed=7)  # seeds torch's global RNG inside, restores it after
    assert torch.equal(torch.rand(5), expected)


def test_resnet18_cifar_has_the_paper_shape():
    model = create_model("resnet18", (3, 32, 32), 100)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    n_params = sum(p.numel() for p in model.parameters())
    assert 11.0e6 < n_params < 11.4e6


@pytest.mark.parametrize("channels_last", [False, True])
def test_resnet18_in_place_evaluation_equals_the_recorded_forward(channels_last):
    """Without autograd the ReLUs and residual sums run in place: the same logits bit for bit,
    and the input the caller passed is never written."""
    model = create_model("resnet18", (3, 16, 16), 10, seed=1).eval()
    with torch.no_grad():  # BatchNorm away from identity, so its output is no copy of its input
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0), bn.weight.normal_(), bn.bias.normal_()
    x = torch.randn(6, 3, 16, 16)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    recorded = model(x)
    assert recorded.requires_grad
    stage_input = model.stem(x).detach()
    with torch.inference_mode():
        kept = stage_input.clone()
        assert torch.equal(model(x), recorded.detach())
        model.layer1[0](stage_input)  # a block rerun on a cached activation leaves it as it was
    assert torch.equal(stage_input, kept)


def test_pretrained_vit_fails_fast_and_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-hf-cache")
    started = time.perf_counter()
    with pytest.raises(UserError, match="vit_b16 needs pretrained weights"):
        create_model("vit_b16", (3, 32, 32), 10)
    assert time.perf_counter() - started < 5


def test_unknown_model_lists_the_registry():
    with pytest.raises(UserError, match="choose one of: small_cnn, resnet18"):
        create_model("nosuch", (1, 8, 8), 10)


def test_safetensors_roundtrip(tmp_path):
    model = create_model("small_cnn", (1, 8, 8), 10, seed=3)
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(tmp_path / "m.safetensors", create_model("small_cnn", (1, 8, 8), 10, seed=0))
    assert weights_hash(loaded) == weights_hash(model)


def test_torch_save_zip_loads_with_weights_only(tmp_path):
    model = create_model("small_cnn", (1, 8, 8), 10, seed=4)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt", create_model("small_cnn", (1, 8, 8), 10))
    assert weights_hash(loaded) == weights_hash(model)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_pickle_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"weight": _Exploit(marker)}))
    with pytest.raises(CheckpointError, match="plain pickle"):
        load_checkpoint(path, create_model("small_cnn", (1, 8, 8), 10))
    assert not marker.exists()


def test_torch_zip_with_code_is_refused_by_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weight": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt", create_model("small_cnn", (1, 8, 8), 10))
    assert not marker.exists()


def test_wrong_architecture_names_the_keys(tmp_path):
    save_file({"conv1.weight": torch.zeros(5, 1, 3, 3), "extra.bias": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "w.safetensors", create_model("small_cnn", (1, 8, 8), 10))
    message = str(err.value)
    assert "missing: conv1.bias" in message and "unexpected: extra.bias" in message
    assert "conv1.weight (5, 1, 3, 3)≠(32, 1, 3, 3)" in message


@pytest.mark.parametrize("content,match", [(b"", "not a checkpoint"), (b"hello world, not weights", "neither"),
                                           (b"\x10\x00\x00\x00\x00\x00\x00\x00{broken", "not a valid safetensors")])
def test_garbage_files_are_refused(tmp_path, content, match):
    (tmp_path / "x.bin").write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "x.bin", create_model("small_cnn", (1, 8, 8), 10))


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n not in OFFLINE_ONLY])
def test_sample_mode_vmap_equals_loop_for_every_model(name):
    from core import compute_importance

    shape = (1, 8, 8) if name != "resnet18" else (3, 16, 16)
    model = create_model(name, shape, 5)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, *shape, generator=gen), torch.randint(0, 5, (4,), generator=gen)
    batches = [(x[:2], y[:2]), (x[2:], y[2:])]
    for kind in ("lfssd", "ssd"):
        vmapped = compute_importance(model, batches, kind, "sample", per_sample="vmap")
        looped = compute_importance(model, batches, kind, "sample", per_sample="loop")
        for key in looped:
            scale = float(looped[key].abs().max()) or 1.0  # round-off is relative to the largest entry
            torch.testing.assert_close(vmapped[key], looped[key], rtol=1e-4, atol=1e-6 * scale)
