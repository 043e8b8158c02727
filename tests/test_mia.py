"""The entropy MIA separates a model that memorised its training data from a fresh one."""
import torch
import torch.nn.functional as F
from torch import nn

from core import mia
from core.mia import entropy


def test_entropy_of_known_distributions():
    probs = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    torch.testing.assert_close(entropy(probs), torch.tensor([0.0, torch.log(torch.tensor(3.0)), torch.log(torch.tensor(2.0))]))


def _memorise(model, x, y, steps=400):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _model_trained_on(x, y):
    torch.manual_seed(0)
    return _memorise(nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 5)), x, y)


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def test_mia_separates_a_memorising_model_from_one_that_never_saw_the_samples():
    gen = torch.Generator().manual_seed(0)
    # random labels: nothing to generalise, so only memorisation lowers the entropy
    x, y = torch.randn(400, 20, generator=gen), torch.randint(0, 5, (400,), generator=gen)
    retain, forget, test = slice(0, 150), slice(150, 200), slice(200, 400)
    memorising = _model_trained_on(x[:200], y[:200])  # saw retain and forget
    never_saw = _model_trained_on(x[retain], y[retain])  # saw retain only: "retrained"
    score_memorising = mia(_logits(memorising, x[retain]), _logits(memorising, x[test]), _logits(memorising, x[forget]))
    score_never_saw = mia(_logits(never_saw, x[retain]), _logits(never_saw, x[test]), _logits(never_saw, x[forget]))
    assert score_memorising > 90
    assert score_never_saw < 60
    assert score_memorising - score_never_saw > 40


def test_empty_forget_set_gives_nan():
    logits = torch.randn(10, 3)
    assert torch.isnan(torch.tensor(mia(logits, logits, logits[:0])))
