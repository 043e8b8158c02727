"""Forget specs resolve to the right index sets, in the reference order of D."""
import pytest
import torch

from core.data.registry import load_dataset
from core.data.dataset import Dataset
from core.errors import UserError
from core.data.splits import ForgetSpec, images_split, make_split


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_class_split_partitions_train_and_test(digits):
    split = make_split(digits, "class:3")
    assert split.forget_class == 3
    assert torch.all(digits.train_y[split.forget_train] == 3)
    assert torch.all(digits.train_y[split.retain_train] != 3)
    assert len(split.forget_train) + len(split.retain_train) == len(digits.train_y)
    assert torch.all(digits.test_y[split.forget_test] == 3) and torch.all(digits.test_y[split.retain_test] != 3)


def test_a_class_without_training_images_is_a_clear_error(digits):
    keep = digits.train_y != 3
    no_threes = Dataset("digits without train 3s", digits.train_x[keep], digits.train_y[keep], digits.test_x,
                        digits.test_y, digits.classes, digits.mean, digits.std)
    with pytest.raises(UserError, match=r"class 3 \('3'\) has no training images in digits without train 3s"):
        make_split(no_threes, "class:3")
    assert make_split(no_threes, "class:4").forget_class == 4


def test_reference_order_sorts_retained_by_class_and_appends_forget(digits):
    split = make_split(digits, "class:3")
    order = split.d_order(digits, "reference")
    labels = digits.train_y[order]
    n_forget = len(split.forget_train)
    assert torch.all(labels[-n_forget:] == 3)
    retained = labels[:-n_forget]
    assert torch.all(retained[1:] >= retained[:-1])  # ascending class
    for cls in (0, 9):  # dataset order within a class
        within = order[:-n_forget][retained == cls]
        assert torch.all(within[1:] > within[:-1])
    assert sorted(order.tolist()) == list(range(len(digits.train_y)))


def test_class_sorted_order_is_target_independent(digits):
    a = make_split(digits, "class:3").d_order(digits, "class-sorted")
    b = make_split(digits, "class:7").d_order(digits, "class-sorted")
    assert torch.equal(a, b)


def test_class_by_name_and_id(digits):
    assert make_split(digits, "class:7").forget_class == make_split(digits, "class: 7").forget_class == 7


def test_random_split_is_seeded_and_scores_d_f_on_train(digits):
    a, b, c = make_split(digits, "random:50:1"), make_split(digits, "random:50:1"), make_split(digits, "random:50:2")
    assert torch.equal(a.forget_train, b.forget_train) and not torch.equal(a.forget_train, c.forget_train)
    assert len(a.forget_train) == 50 and len(a.retain_test) == len(digits.test_y) and len(a.forget_test) == 0
    assert a.reference_batch_size == 128


def test_images_split_is_unlabelled(digits):
    split = images_split(digits, digits.test_x[:5], [f"{i}.png" for i in range(5)])
    assert not split.labelled and split.num_forget == 5
    _, y = next(iter(split.forget_loader(digits, 64)))
    assert torch.all(y == -1)
    with pytest.raises(UserError, match="empty"):
        images_split(digits, digits.test_x[:0], [])


def _tiny_cifar20() -> Dataset:
    fine_train = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    fine_test = torch.tensor([0, 1, 2, 3])
    coarse = torch.tensor([0, 0, 1, 1])  # fine 0,1 → super 0; fine 2,3 → super 1
    img = lambda n: torch.zeros(n, 3, 4, 4, dtype=torch.uint8)  # noqa: E731
    return Dataset("cifar20", img(8), coarse[fine_train], img(4), coarse[fine_test], ("s0", "s1"),
                   (0.5,) * 3, (0.25,) * 3, fine_train, fine_test, ("baby", "lamp", "rocket", "sea"))


def test_subclass_keeps_siblings_in_retain():
    ds = _tiny_cifar20()
    split = make_split(ds, "subclass:rocket")
    assert split.forget_class == 1
    assert split.forget_train.tolist() == [2, 6]
    assert 3 in split.retain_train.tolist() and 7 in split.retain_train.tolist()  # sibling 'sea'
    assert split.forget_test.tolist() == [2]


@pytest.mark.parametrize("spec,match", [
    ("class:42", "does not exist in digits"), ("class:nosuch", "does not exist"), ("bogus", "bad forget target"),
    ("class:", "bad forget target"), ("random:0", "between 1 and"), ("random:x", "whole numbers"),
    ("subclass:baby", "no sub-classes"),
])
def test_bad_targets_are_user_errors(digits, spec, match):
    with pytest.raises(UserError, match=match):
        make_split(digits, spec)


def test_spec_roundtrip():
    assert str(ForgetSpec.parse("Class:3")) == "class:3"
