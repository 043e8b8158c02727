"""The reference code's own numbers (shared/golden), reproduced through the public API."""
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from core import compute_importance, dampen, mia_from_probs

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "ssd_lfssd_vectors.json"
if not GOLDEN.exists():  # CI lays shared/ beside the clone; a developer's checkout has it one up
    GOLDEN = Path(__file__).resolve().parents[1] / "shared" / "golden" / "ssd_lfssd_vectors.json"
# Skipped only outside CI: CI always has shared/ beside the clone, so there a missing file fails.
pytestmark = pytest.mark.skipif(not GOLDEN.exists() and not os.environ.get("CI"), reason=f"no golden vectors at {GOLDEN}")
RTOL, ATOL = 1e-5, 1e-7


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


def _model(golden) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    model.load_state_dict({k: torch.tensor(v) for k, v in golden["state_dict"].items()})
    return model.eval()


def _batches(x, y, batch_size):
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def _loaders(golden, batch_size):
    x, y = torch.tensor(golden["inputs"]), torch.tensor(golden["labels"])
    full, forget = torch.tensor(golden["full_order"]), torch.tensor(golden["forget_indices"])
    return _batches(x[full], y[full], batch_size), _batches(x[forget], y[forget], batch_size)


def _assert_maps_equal(ours, theirs):
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], torch.tensor(value), rtol=RTOL, atol=ATOL, msg=name)


def _cases(golden):
    return [(c["kind"], c["mode"]) for c in golden["cases"]]


@pytest.mark.parametrize("kind,mode", [("lfssd", "batch"), ("lfssd", "sample"), ("ssd", "batch"), ("ssd", "sample")])
@pytest.mark.parametrize("per_sample", ["vmap", "loop"])
def test_importances_match_reference(golden, kind, mode, per_sample):
    case = next(c for c in golden["cases"] if (c["kind"], c["mode"]) == (kind, mode))
    # sample mode must not depend on how samples are batched: feed batches of 4 either way
    full, forget = _loaders(golden, 4 if mode == "sample" else case["batch_size"])
    model = _model(golden)
    _assert_maps_equal(compute_importance(model, full, kind, mode, per_sample=per_sample), case["imp_full"])
    _assert_maps_equal(compute_importance(model, forget, kind, mode, per_sample=per_sample), case["imp_forget"])


def test_golden_covers_all_four_cases(golden):
    assert sorted(_cases(golden)) == [("lfssd", "batch"), ("lfssd", "sample"), ("ssd", "batch"), ("ssd", "sample")]


@pytest.mark.parametrize("case_index", range(4))
def test_dampened_weights_match_reference(golden, case_index):
    case = golden["cases"][case_index]
    imp_full = {k: torch.tensor(v) for k, v in case["imp_full"].items()}
    imp_forget = {k: torch.tensor(v) for k, v in case["imp_forget"].items()}
    model = _model(golden)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for expected in case["dampened"]:
        damped, report = dampen(model, imp_full, imp_forget, expected["alpha"], expected["lambda"])
        assert report.selected == expected["selected"]
        for name, value in expected["state_dict"].items():
            torch.testing.assert_close(damped.state_dict()[name], torch.tensor(value).to(before[name].dtype),
                                       rtol=RTOL, atol=ATOL, msg=name)
    for name, value in model.state_dict().items():  # the input model is untouched
        assert torch.equal(value, before[name])


def test_mia_matches_reference(golden):
    mia = golden["mia"]
    result = mia_from_probs(torch.tensor(mia["retain_probs"]), torch.tensor(mia["test_probs"]), torch.tensor(mia["forget_probs"]))
    assert result.predicted_member.tolist() == mia["predicted_member"]
    assert result.score == pytest.approx(mia["result"] * 100)
