"""The entropy MIA separates a model that memorised its training data from a fresh one."""
import torch
import torch.nn.functional as F
from torch import nn

from core import mia
from core.evaluation.attacks import MEMBER_RATE_RANGE, MIN_PROBABILITY_SPREAD, MiaFit, entropy, mia_from_probs


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


# --- a fit that carries no signal gives no number -------------------------------------------------

def _probs_with_entropy_spread(gen, n, concentration):
    """Softmax rows over 10 classes whose entropies vary with ``concentration``."""
    logits = torch.randn(n, 10, generator=gen) * concentration
    return torch.softmax(logits, dim=-1)


def test_identical_members_and_non_members_give_no_number_and_say_why():
    gen = torch.Generator().manual_seed(0)
    probs = _probs_with_entropy_spread(gen, 300, 3.0)
    forget = _probs_with_entropy_spread(gen, 40, 0.1)  # very uncertain: a tilted fit would call them all one side
    result = mia_from_probs(probs, probs.clone(), forget)
    assert result.score is None
    assert result.predicted_member.size == 0
    assert result.reason and ("zero slope" in result.reason or "flat fit" in result.reason)
    assert result.fit.probability_spread < MIN_PROBABILITY_SPREAD


def test_members_and_non_members_from_one_distribution_never_give_a_number_from_noise():
    """The failure the lock issue measured: equally uncertain members and non-members, a slope that
    is noise. Whatever the draw, either no number, or a fit that really spans probabilities."""
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        members = _probs_with_entropy_spread(gen, 1000, 0.05)  # every row near uniform: entropies ≈ ln 10
        non_members = _probs_with_entropy_spread(gen, 400, 0.05)
        forget = _probs_with_entropy_spread(gen, 30, 0.05)
        result = mia_from_probs(members, non_members, forget)
        if result.score is not None:
            assert result.fit.probability_spread >= MIN_PROBABILITY_SPREAD, (seed, result.fit)
        else:
            assert result.reason, seed


def test_a_fit_with_signal_still_scores_and_reports_its_diagnostics():
    gen = torch.Generator().manual_seed(0)
    members = _probs_with_entropy_spread(gen, 500, 8.0)  # confident: low entropy
    non_members = _probs_with_entropy_spread(gen, 500, 1.0)  # uncertain: high entropy
    forget = _probs_with_entropy_spread(gen, 50, 8.0)
    result = mia_from_probs(members, non_members, forget)
    assert result.score is not None and result.score > 80 and result.reason is None
    fit = result.fit
    assert fit.coefficient < 0  # lower entropy → member
    assert fit.balanced_accuracy > 0.7 and fit.members == 500 and fit.non_members == 500
    low, high = MEMBER_RATE_RANGE
    assert low <= fit.member_rate <= high and fit.probability_spread > 0.5


def test_no_members_or_no_non_members_give_no_number():
    probs = torch.softmax(torch.randn(20, 10), dim=-1)
    for members, non_members in ((probs[:0], probs), (probs, probs[:0])):
        result = mia_from_probs(members, non_members, probs[:5])
        assert result.score is None and "nothing to fit" in result.reason


def test_a_fit_calling_all_its_training_data_one_side_gives_no_number():
    fit = MiaFit(coefficient=-0.5, intercept=-9.0, iterations=3, probability_spread=0.3, member_rate=0.0,
                 balanced_accuracy=0.5, members=100, non_members=100)
    assert "calls 0.0 % of its own training images members" in fit.no_signal()
    assert MiaFit(-0.5, 0.1, 3, 0.3, 0.7, 0.55, 100, 100).no_signal() is None


# --- which images the attack is fitted on ---------------------------------------------------------

def test_unlabelled_targets_leave_the_baselines_classes_for_the_images_out_of_both_sides():
    from core.data.registry import load_dataset
    from core.data.splits import make_split, with_attack_exclusion

    data = load_dataset("digits")
    labelled = make_split(data, "class:3")
    members, non_members = labelled.attack_sets(data)
    assert torch.equal(members, labelled.retain_train)  # the papers' sets for labelled targets
    assert torch.equal(non_members, torch.arange(len(data.test_y)))

    hidden = make_split(data, "images:test:3")
    assert not hidden.labelled and len(hidden.forget_images) == int((data.test_y == 3).sum())
    # what a baseline predicts for the images: mostly 3, a few 5s and one 8 (under a tenth)
    predictions = torch.tensor([3] * 40 + [5] * 5 + [8])
    split = with_attack_exclusion(hidden, predictions)
    assert split.attack_excluded == (3, 5)
    members, non_members = split.attack_sets(data)
    assert not torch.isin(data.train_y[members], torch.tensor([3, 5])).any()
    assert not torch.isin(data.test_y[non_members], torch.tensor([3, 5])).any()
    assert len(members) == int((~torch.isin(data.train_y, torch.tensor([3, 5]))).sum())
    assert "both without class 3 ('3'), 5 ('5')" in split.attack_description(data)
    assert with_attack_exclusion(labelled, predictions) is labelled  # labelled targets keep the papers' sets


def test_unlabelled_test_images_after_forgetting_score_from_a_fit_with_signal(tmp_path):
    """End to end on a real model: the attack's sets leave class 3 out, and the number reported
    after forgetting comes from a fit that spans probabilities (or there is none, with a reason)."""
    from core.cache import TensorCache
    from core.experiment import ExperimentConfig, forget, prepare

    torch.set_num_threads(1)
    prepared = prepare(ExperimentConfig(forget="images:test:3"), TensorCache(tmp_path))
    assert 3 in prepared.split.attack_excluded
    for result in (prepared.baseline, forget(prepared, 3.5, 1.0).result):
        assert "without class 3" in result.mia_sets
        assert (result.mia is None) == (result.mia_note is not None)
