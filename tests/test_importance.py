"""Importance equals a direct autograd computation, for both kinds and both modes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import compute_importance
from core.cache import TensorCache
from core.method.importance import cached_importance
from core.errors import UserError


def tiny_net(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 5), nn.Tanh(), nn.Linear(5, 4)).eval()


def data(n=10, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def direct(model, x, y, kind, per):
    """Autograd straight from the definition: one backward per group of samples."""
    totals = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    groups = [(x[i:i + per], y[i:i + per]) for i in range(0, len(x), per)]
    for xb, yb in groups:
        model.zero_grad()
        out = model(xb)
        loss = (out ** 2).sum(dim=1).mean() if kind == "lfssd" else F.cross_entropy(out, yb)
        loss.backward()
        for n, p in model.named_parameters():
            totals[n] += p.grad.abs() if kind == "lfssd" else p.grad ** 2
    model.zero_grad(set_to_none=True)
    return {n: t / len(groups) for n, t in totals.items()}


def batches(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


@pytest.mark.parametrize("kind", ["lfssd", "ssd"])
def test_batch_mode_equals_autograd(kind):
    model, (x, y) = tiny_net(), data()
    ours = compute_importance(model, batches(x, y, 4), kind, "batch")
    expected = direct(model, x, y, kind, per=4)
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["lfssd", "ssd"])
@pytest.mark.parametrize("per_sample", ["vmap", "loop"])
def test_sample_mode_equals_per_sample_autograd(kind, per_sample):
    model, (x, y) = tiny_net(), data()
    ours = compute_importance(model, batches(x, y, 3), kind, "sample", per_sample=per_sample)
    expected = direct(model, x, y, kind, per=1)
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["lfssd", "ssd"])
def test_batch_mode_at_batch_size_one_equals_sample_mode(kind):
    model, (x, y) = tiny_net(), data()
    one = compute_importance(model, batches(x, y, 1), kind, "batch")
    sample = compute_importance(model, batches(x, y, 5), kind, "sample")
    for name in one:
        torch.testing.assert_close(one[name], sample[name], rtol=1e-5, atol=1e-8)


def test_batch_mode_depends_on_batch_size_sample_mode_does_not():
    model, (x, y) = tiny_net(), data()
    b2 = compute_importance(model, batches(x, y, 2), "lfssd", "batch")
    b5 = compute_importance(model, batches(x, y, 5), "lfssd", "batch")
    assert not torch.allclose(b2["6.weight"], b5["6.weight"])
    s2 = compute_importance(model, batches(x, y, 2), "lfssd", "sample")
    s5 = compute_importance(model, batches(x, y, 5), "lfssd", "sample")
    torch.testing.assert_close(s2["6.weight"], s5["6.weight"])


def test_model_is_left_untouched_and_in_eval_mode():
    model, (x, y) = tiny_net(), data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compute_importance(model, batches(x, y, 4), "lfssd", "batch")
    compute_importance(model, batches(x, y, 4), "ssd", "sample")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN stats too
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_unused_parameter_gets_zero_importance():
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.unused = tiny_net(), nn.Linear(2, 2)

        def forward(self, x):
            return self.net(x)

    model, (x, y) = WithUnused().eval(), data()
    imp = compute_importance(model, batches(x, y, 4), "lfssd", "batch")
    assert torch.count_nonzero(imp["unused.weight"]) == 0
    assert set(imp) == {n for n, _ in model.named_parameters()}


def test_lfssd_needs_no_labels_ssd_refuses_unlabelled():
    model, (x, _) = tiny_net(), data()
    unlabelled = torch.full((len(x),), -1)
    imp = compute_importance(model, batches(x, unlabelled, 4), "lfssd", "batch")
    assert all(torch.isfinite(v).all() for v in imp.values())
    with pytest.raises(UserError, match="SSD needs labels"):
        compute_importance(model, batches(x, unlabelled, 4), "ssd", "batch")


def test_lfssd_has_no_nan_at_zero_output():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
    x, y = data()
    imp = compute_importance(model, batches(x, y, 4), "lfssd", "batch")
    assert all(torch.isfinite(v).all() for v in imp.values())


@pytest.mark.parametrize("kind,mode", [("bogus", "batch"), ("lfssd", "bogus")])
def test_unknown_kind_or_mode_is_a_user_error(kind, mode):
    x, y = data()
    with pytest.raises(UserError, match="choose one of"):
        compute_importance(tiny_net(), batches(x, y, 4), kind, mode)


def test_empty_loader_is_a_user_error():
    with pytest.raises(UserError, match="empty"):
        compute_importance(tiny_net(), [], "lfssd", "batch")


class _Loader(list):
    def content_key(self):
        return "fixed-test-key"


def test_second_run_hits_cache_without_a_backward_pass(tmp_path):
    model, (x, y) = tiny_net(), data()
    loader, cache = _Loader(batches(x, y, 4)), TensorCache(tmp_path)
    first, hit1 = cached_importance(model, loader, "lfssd", "batch", cache, "m")
    backward_calls = []
    hooks = [p.register_hook(lambda g: backward_calls.append(1)) for p in model.parameters()]
    second, hit2 = cached_importance(model, loader, "lfssd", "batch", TensorCache(tmp_path), "m")
    for h in hooks:
        h.remove()
    assert (hit1, hit2) == (False, True)
    assert backward_calls == []
    for name in first:
        assert torch.equal(first[name], second[name])


def test_corrupt_cache_file_is_recomputed(tmp_path):
    model, (x, y) = tiny_net(), data()
    loader = _Loader(batches(x, y, 4))
    first, _ = cached_importance(model, loader, "lfssd", "batch", TensorCache(tmp_path), "m")
    [path] = list((tmp_path / "importance").glob("*.safetensors"))
    raw = bytearray(path.read_bytes())
    raw[-10:] = bytes(b ^ 0xFF for b in raw[-10:])  # flip bytes inside tensor data
    path.write_bytes(bytes(raw))
    cache = TensorCache(tmp_path)
    again, hit = cached_importance(model, loader, "lfssd", "batch", cache, "m")
    assert hit is False
    assert any("corrupt" in w for w in cache.warnings)
    for name in first:
        assert torch.equal(first[name], again[name])
    _, hit_after = cached_importance(model, loader, "lfssd", "batch", TensorCache(tmp_path), "m")
    assert hit_after is True  # the recomputed entry was written back whole
