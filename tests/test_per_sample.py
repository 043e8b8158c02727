"""Sample-mode importance from one forward and one backward pass (core.fast.per_sample) equals the
per-sample loop, on every layer kind it handles; models it cannot follow fall back to vmap."""
import pytest
import torch
from torch import nn

from core import compute_importance
from core.models.registry import create_model
from core.fast.per_sample import plan


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


def with_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm running statistics, so the normalisation matters."""
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


class Tokens(nn.Module):
    """Linear layers over a token axis and a LayerNorm: the per-token branch of the rules."""

    def __init__(self):
        super().__init__()
        self.embed, self.norm, self.head = nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)

    def forward(self, x):  # (B, 1, 4, 4) -> 4 tokens of 4
        tokens = self.norm(self.embed(x.reshape(len(x), 4, 4)))
        return self.head(tokens.mean(1))


class Reused(nn.Module):
    """One layer called twice: the hook rules cannot follow it."""

    def __init__(self):
        super().__init__()
        self.layer, self.head = nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.layer(torch.tanh(self.layer(x.flatten(1)))))


MODELS = {
    "conv_bn_linear": lambda: with_stats(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, stride=2), nn.BatchNorm2d(3),
                                                       nn.ReLU(), nn.Flatten(), nn.Linear(12, 3))),
    "tokens": lambda: Tokens().eval(),
    "small_cnn": lambda: create_model("small_cnn", (1, 8, 8), 3, seed=1),
    "resnet18": lambda: with_stats(create_model("resnet18", (3, 8, 8), 3, seed=1)),
    "reused_layer": lambda: Reused().eval(),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", ["lfssd", "ssd"])
def test_hooks_equal_the_per_sample_loop(name, kind):
    model = MODELS[name]()
    shape = (3, 8, 8) if name == "resnet18" else (1, 8, 8) if name == "small_cnn" else (1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, *shape, generator=gen), torch.randint(0, 3, (5,), generator=gen)
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    hooks = compute_importance(model, batches, kind, "sample", per_sample="hooks")
    loop = compute_importance(model, batches, kind, "sample", per_sample="loop")
    assert set(hooks) == set(loop)
    for key in loop:
        scale = float(loop[key].abs().max()) or 1.0
        torch.testing.assert_close(hooks[key], loop[key], rtol=1e-4, atol=1e-6 * scale, msg=key)


def test_models_with_parameters_outside_supported_layers_are_not_planned():
    assert plan(create_model("small_cnn", (1, 8, 8), 3)) is not None
    assert plan(create_model("vit", (1, 8, 8), 3)) is None  # class token, position embedding


def test_unknown_per_sample_method_is_a_user_error():
    from core.errors import UserError

    with pytest.raises(UserError, match="choose one of: hooks, vmap, loop"):
        compute_importance(nn.Linear(2, 2), [(torch.ones(1, 2), torch.zeros(1, dtype=torch.long))], "lfssd", "sample",
                           per_sample="magic")
