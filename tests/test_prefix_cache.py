"""Prefix caching: a slider move restarts at the first stage holding a dampened element, and its
logits are bit for bit those of a full forward pass of the dampened copy (eval mode), for every
model in the registry that builds offline. Also: the subset evaluation of large data sets."""
import threading

import pytest
import torch

from core.method.dampening import plan_dampening
from core.data.dataset import Dataset
from core.evaluation.accuracy import SUBSET_THRESHOLD, predict_logits
from core.experiment import ExperimentConfig, Importances, baseline_for, forget, prepared_from, sweep
from core.models.registry import MODELS, Upsampled, create_model, upsampled_vit_stages
from core.fast.runtime import MAX_EVAL_CHUNK, MIN_EVAL_CHUNK, eval_chunk_size
from core.data.splits import make_split
from core.fast.stages import check_stages, run_stages

OFFLINE = [n for n in MODELS.names() if n != "vit_b16"]  # vit_b16 needs pretrained weights (tested apart)
SHAPES = {"small_cnn": (1, 8, 8), "resnet18": (3, 8, 8), "vit": (1, 8, 8)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


def synthetic(shape, n_train=60, n_test=24, classes=4, seed=0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    pixels = lambda n: torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)  # noqa: E731
    return Dataset("synthetic", pixels(n_train), torch.arange(n_train) % classes, pixels(n_test),
                   torch.arange(n_test) % classes, tuple(str(c) for c in range(classes)), (0.5,) * shape[0],
                   (0.25,) * shape[0])


def prepared_for(name, dataset, imp_full, imp_forget, model):
    split = make_split(dataset, "class:1")
    config = ExperimentConfig(dataset="synthetic", model=name, forget="class:1")
    return prepared_from(Importances(config, dataset, model, split, imp_full, imp_forget, {}, {}))


def importances_selecting(model, stage_of, first: int, channels: int = 1):
    """I_D = 1 everywhere; I_Df = 10 (selected at α = 5) on a few elements of the first tensor of
    stage ``first`` (``channels`` of its output rows) and of the last parameter tensor."""
    names = [n for n, _ in model.named_parameters()]
    full = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    forget = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    target = next(n for n in names if stage_of[n] == first)
    rows = forget[target].reshape(forget[target].shape[0], -1) if forget[target].dim() else forget[target].view(1)
    rows.view(rows.shape[0], -1)[:channels, 0] = 10.0
    forget[names[-1]].view(-1)[0] = 10.0
    return full, forget


def assert_bitwise_like_full_forward(prep, alpha=5.0):
    evaluation = prep.evaluations.for_mode(prep, "full")
    names = [n for n, _ in prep.model.named_parameters()]
    plan = plan_dampening(names, prep.imp_full, prep.imp_forget, alpha, 1.0)
    cached = evaluation.evaluator.logits(plan)
    damped = forget(prep, alpha, 1.0).model
    assert torch.equal(cached["test"], predict_logits(damped, prep.dataset, prep.dataset.test_x))
    assert torch.equal(cached["train"], predict_logits(damped, prep.dataset, prep.dataset.train_x))
    return evaluation.evaluator


@pytest.mark.parametrize("name", OFFLINE)
def test_stages_cover_every_parameter_and_equal_the_forward(name):
    shape = SHAPES[name]
    model = create_model(name, shape, 5, seed=0)
    stages = MODELS.get(name).stages_of(model)
    check_stages(model, stages)
    assert len(stages) >= 4
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(run_stages(stages, x), model(x))


def test_pretrained_vit_architecture_stages_equal_its_forward():
    timm = pytest.importorskip("timm")
    from core.models.registry import PRETRAINED_VIT

    model = Upsampled(timm.create_model(PRETRAINED_VIT, pretrained=False, num_classes=3), 224, 3).eval()
    stages = upsampled_vit_stages(model)
    check_stages(model, stages)
    x = torch.randn(1, 1, 8, 8)  # one channel: the wrapper expands it to three, as for digits
    with torch.inference_mode():
        assert torch.equal(run_stages(stages, x), model(x))


@pytest.mark.parametrize("name", OFFLINE)
def test_slider_move_from_every_stage_is_bit_for_bit_a_full_forward(name):
    shape = SHAPES[name]
    dataset = synthetic(shape)
    model = create_model(name, shape, dataset.num_classes, seed=0)
    stages = MODELS.get(name).stages_of(model)
    stage_of = {n: next(i for i, s in enumerate(stages) if s.owns(n)) for n, _ in model.named_parameters()}
    firsts = sorted({stage_of[n] for n in stage_of})
    for first in firsts:
        full, forget_imp = importances_selecting(model, stage_of, first)
        prep = prepared_for(name, dataset, full, forget_imp, model)
        evaluator = assert_bitwise_like_full_forward(prep)
        assert evaluator.last.first_stage == first
        share = (evaluator.num_stages - first) / evaluator.num_stages
        assert 0 < share <= 1
        if first == firsts[-1]:
            assert share == 1 / evaluator.num_stages  # only the head is recomputed


def test_evaluation_chunks_shrink_with_the_activations_and_the_probe_changes_nothing():
    resnet = create_model("resnet18", (3, 32, 32), 10, seed=0).eval()
    digits_cnn = create_model("small_cnn", (1, 8, 8), 10, seed=0).eval()
    assert MIN_EVAL_CHUNK <= eval_chunk_size(resnet, (3, 32, 32)) < eval_chunk_size(digits_cnn, (1, 8, 8)) == MAX_EVAL_CHUNK
    assert eval_chunk_size(resnet, (3, 8, 8)) > eval_chunk_size(resnet, (3, 32, 32))  # 16× fewer activations
    training = create_model("resnet18", (3, 16, 16), 10, seed=1).train()  # BN would update its statistics
    before = {k: v.clone() for k, v in training.state_dict().items()}
    eval_chunk_size(training, (3, 16, 16))
    assert training.training
    assert all(torch.equal(before[k], v) for k, v in training.state_dict().items())


def test_several_chunks_match_one_chunk_and_the_prefix_cache_bit_for_bit():
    shape = (3, 32, 32)
    dataset = synthetic(shape, n_train=72, n_test=40)
    model = create_model("resnet18", shape, dataset.num_classes, seed=0).eval()
    chunk = eval_chunk_size(model, shape)
    assert chunk < len(dataset.train_x)  # several chunks
    chunked = predict_logits(model, dataset, dataset.train_x)
    assert torch.allclose(chunked, predict_logits(model, dataset, dataset.train_x, batch_size=MAX_EVAL_CHUNK),
                          rtol=0, atol=1e-5)
    stages = MODELS.get("resnet18").stages_of(model)
    stage_of = {n: next(i for i, s in enumerate(stages) if s.owns(n)) for n, _ in model.named_parameters()}
    full, forget_imp = importances_selecting(model, stage_of, 3)
    evaluator = assert_bitwise_like_full_forward(prepared_for("resnet18", dataset, full, forget_imp, model))
    assert evaluator.chunk == chunk and len(evaluator._acts["train"]) == -(-len(dataset.train_x) // chunk)


def test_channel_slice_and_whole_stage_agree_with_the_full_forward():
    dataset = synthetic((1, 8, 8))
    model = create_model("small_cnn", (1, 8, 8), dataset.num_classes, seed=2)
    stage_of = {"conv1.weight": 0, "conv1.bias": 0, "conv2.weight": 1, "conv2.bias": 1,
                "fc1.weight": 2, "fc1.bias": 2, "fc2.weight": 3, "fc2.bias": 3}
    for channels, sliced in ((3, True), (60, False)):  # 3 of 64 filters: a slice; 60: the whole stage
        full, forget_imp = importances_selecting(model, stage_of, 1, channels=channels)
        prep = prepared_for("small_cnn", dataset, full, forget_imp, model)
        evaluator = assert_bitwise_like_full_forward(prep)
        assert evaluator.last.first_stage == 1
        assert (evaluator.last.partial_channels == channels) is sliced
    # the channels-last model's activations before the flatten are cached contiguous: a view to flatten
    flat = next(i for i, s in enumerate(evaluator.base_stages) if s.flattens_input)
    assert evaluator.channels_last and all(c[flat].is_contiguous() for c in evaluator._acts["train"])


def test_no_cached_boundary_still_matches(monkeypatch):
    monkeypatch.setenv("LFSSD_PREFIX_CACHE_MB", "0")  # only the logits are kept
    dataset = synthetic((1, 8, 8))
    model = create_model("small_cnn", (1, 8, 8), dataset.num_classes, seed=3)
    stage_of = {n: i // 2 for i, (n, _) in enumerate(model.named_parameters())}
    full, forget_imp = importances_selecting(model, stage_of, 2)
    prep = prepared_for("small_cnn", dataset, full, forget_imp, model)
    evaluator = assert_bitwise_like_full_forward(prep)
    assert evaluator.keep == {evaluator.num_stages}


def test_nothing_selected_returns_the_baseline_exactly_and_sweeps_match_forget():
    dataset = synthetic((1, 8, 8))
    model = create_model("small_cnn", (1, 8, 8), dataset.num_classes, seed=4)
    gen = torch.Generator().manual_seed(5)
    full = {n: torch.rand(p.shape, generator=gen) for n, p in model.named_parameters()}
    forget_imp = {n: torch.rand(p.shape, generator=gen) * 3 for n, p in model.named_parameters()}
    prep = prepared_for("small_cnn", dataset, full, forget_imp, model)
    assert forget(prep, 1e6, 1.0).result.headline() == prep.baseline.headline()
    table = sweep(prep, [1.0, 2.0, 3.0], [1.0, 0.5])
    for row in table.to_dict(orient="records"):
        single = forget(prep, row["alpha"], row["lambda"])
        assert row["selected"] == single.report.selected
        assert (row["d_r"], row["mia"], row["retain_train"]) == (single.result.d_r, single.result.mia,
                                                                 single.result.retain_train)


def test_concurrent_moves_on_one_prepared_experiment_do_not_mix():
    dataset = synthetic((1, 8, 8), n_train=80)
    model = create_model("small_cnn", (1, 8, 8), dataset.num_classes, seed=6)
    gen = torch.Generator().manual_seed(7)
    full = {n: torch.rand(p.shape, generator=gen) for n, p in model.named_parameters()}
    forget_imp = {n: torch.rand(p.shape, generator=gen) * 4 for n, p in model.named_parameters()}
    prep = prepared_for("small_cnn", dataset, full, forget_imp, model)
    alphas = [1.0, 1.5, 2.0, 3.0, 3.5]
    expected = {a: forget(prep, a, 1.0).result.forget_probs for a in alphas}
    seen, errors = {}, []

    def move(alpha):
        try:
            for _ in range(3):
                seen.setdefault(alpha, []).append(forget(prep, alpha, 1.0).result.forget_probs)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(a,)) for a in alphas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for alpha, results in seen.items():
        assert all((r == expected[alpha]).all() for r in results)


# --- a fixed stratified subset for large evaluation sets ------------------------------------------

def test_large_sets_score_a_subset_with_intervals_and_full_on_request():
    dataset = synthetic((1, 8, 8), n_train=9000, n_test=4000, classes=10)
    assert len(dataset.train_y) + len(dataset.test_y) > SUBSET_THRESHOLD
    model = create_model("small_cnn", (1, 8, 8), 10, seed=8)
    gen = torch.Generator().manual_seed(9)
    full = {n: torch.rand(p.shape, generator=gen) for n, p in model.named_parameters()}
    forget_imp = {n: torch.rand(p.shape, generator=gen) * 3 for n, p in model.named_parameters()}
    prep = prepared_for("small_cnn", dataset, full, forget_imp, model)
    assert prep.baseline.sample is None  # the baseline is scored on everything, once

    quick = forget(prep, 2.0, 1.0)  # auto: the subset
    sample = quick.result.sample
    assert sample is not None and not quick.result.exact
    assert sample.test_total == 4000 and sample.train_total == 9000
    assert sample.test_scored < 4000 and sample.train_scored < 9000
    for metric in ("d_r", "d_f", "test", "retain_train", "forget_train"):
        low, high = sample.intervals[metric]
        assert 0.0 <= low <= getattr(quick.result, metric) <= high <= 100.0, metric
    assert sample.intervals["d_f"][0] == sample.intervals["d_f"][1]  # every forget sample scored: exact
    assert sample.intervals["forget_train"][0] == sample.intervals["forget_train"][1]
    assert quick.result.forget_probs.shape == prep.baseline.forget_probs.shape  # same forget rows as the full run
    assert sample.intervals["mia"] is None
    assert len(sample.intervals["per_class_test"]) == 10

    exact = forget(prep, 2.0, 1.0, evaluation="full")
    assert exact.result.sample is None
    assert exact.result.d_f == quick.result.d_f  # D_f's test images are all in the subset
    low, high = sample.intervals["d_r"]
    assert low <= exact.result.d_r <= high
    low, high = sample.intervals["test"]
    assert low <= exact.result.test <= high

    base = baseline_for(prep, quick.result)
    assert base.sample is not None and base.sample.test_scored == sample.test_scored
    assert baseline_for(prep, exact.result) is prep.baseline
    with pytest.raises(Exception, match="unknown evaluation"):
        forget(prep, 2.0, 1.0, evaluation="half")


def test_bf16_is_opt_in_and_labelled():
    from core.errors import UserError

    dataset = synthetic((1, 8, 8))
    model = create_model("small_cnn", (1, 8, 8), dataset.num_classes, seed=10)
    gen = torch.Generator().manual_seed(11)
    full = {n: torch.rand(p.shape, generator=gen) for n, p in model.named_parameters()}
    forget_imp = {n: torch.rand(p.shape, generator=gen) * 3 for n, p in model.named_parameters()}
    prep = prepared_for("small_cnn", dataset, full, forget_imp, model)
    exact, fast = forget(prep, 2.0, 1.0), forget(prep, 2.0, 1.0, numerics="bf16")
    assert exact.result.numerics == "fp32" and "bf16" in fast.result.numerics and "approximate" in fast.result.numerics
    assert abs(fast.result.test - exact.result.test) <= 25.0  # close, not equal: it changes the numbers
    with pytest.raises(UserError, match="unknown numerics"):
        forget(prep, 2.0, 1.0, numerics="fp8")
