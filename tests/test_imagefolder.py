"""The image-folder data set on generated PNG class folders."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import ImageError, UserError
from core.data.imagefolder import load_image_folder

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def write_classes(root, per_class=5, grey=False, size=(40, 40), colours=COLOURS):
    for name, colour in colours.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            value = colour if not grey else colour[0]
            im = Image.new("L" if grey else "RGB", size, value)
            im.putpixel((0, 0), i * 10 if grey else (i * 10, 0, 0))  # images of a class differ
            im.save(folder / f"{i:02d}.png")
    return root


def test_flat_folder_is_split_stratified_and_deterministic(tmp_path):
    write_classes(tmp_path)
    calls = []
    ds = load_image_folder(tmp_path, image_size=16, progress=lambda f, m: calls.append(f))
    assert ds.name == "folder" and ds.classes == ("cat", "dog", "emu")
    assert ds.image_shape == (3, 16, 16) and ds.train_x.dtype == torch.uint8
    assert len(ds.train_x) == 12 and len(ds.test_x) == 3  # round(0.2 · 5) = 1 test image a class
    assert sorted(ds.test_y.tolist()) == [0, 1, 2] and torch.bincount(ds.train_y).tolist() == [4, 4, 4]
    for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
        centre = x[:, :, 8, 8].tolist()
        assert centre == [list(COLOURS[ds.classes[label]]) for label in y.tolist()]
    again = load_image_folder(tmp_path, image_size=16)
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)
    assert calls and calls[-1] == 1.0 and ds.dark_background is False


def test_seed_changes_the_split(tmp_path):
    write_classes(tmp_path, per_class=10)
    splits = {tuple(load_image_folder(tmp_path, image_size=8, seed=s).test_x[:, 0, 0, 0].tolist()) for s in range(4)}
    assert len(splits) > 1


def test_mean_and_std_come_from_the_train_split(tmp_path):
    write_classes(tmp_path)
    ds = load_image_folder(tmp_path, image_size=8)
    scaled = ds.train_x.to(torch.float64) / 255
    for c in range(3):
        assert ds.mean[c] == pytest.approx(float(scaled[:, c].mean()))
        assert ds.std[c] == pytest.approx(float(scaled[:, c].std()))


def test_own_train_test_split_is_kept(tmp_path):
    write_classes(tmp_path / "train", per_class=3, colours={"a": (255, 0, 0), "b": (0, 0, 255)})
    write_classes(tmp_path / "test", per_class=2, colours={"a": (255, 0, 0), "b": (0, 0, 255)})
    ds = load_image_folder(tmp_path, image_size=8)
    assert ds.classes == ("a", "b")
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_y.tolist() == [0, 0, 1, 1]
    assert ds.test_x[:, :, 4, 4].tolist() == [[255, 0, 0]] * 2 + [[0, 0, 255]] * 2


def test_classes_named_train_and_test_without_subfolders_are_classes(tmp_path):
    write_classes(tmp_path, per_class=2, colours={"train": (1, 2, 3), "test": (4, 5, 6)})
    assert load_image_folder(tmp_path, image_size=4).classes == ("test", "train")


def test_grey_images_give_one_channel(tmp_path):
    write_classes(tmp_path, grey=True)
    ds = load_image_folder(tmp_path, image_size=8)
    assert ds.image_shape == (1, 8, 8) and len(ds.mean) == 1 and len(ds.std) == 1
    assert set(ds.train_x[:, 0, 4, 4].tolist()) == {200, 30}


def test_one_colour_image_makes_all_rgb(tmp_path):
    write_classes(tmp_path, grey=True)
    Image.new("RGB", (40, 40), (255, 0, 0)).save(tmp_path / "cat" / "red.png")
    assert load_image_folder(tmp_path, image_size=8).image_shape == (3, 8, 8)


def test_channels_can_be_forced(tmp_path):
    write_classes(tmp_path)
    ds = load_image_folder(tmp_path, image_size=8, channels=1)
    assert ds.image_shape == (1, 8, 8)
    reds = ds.train_x[ds.train_y == 0][:, 0, 4, 4]
    assert reds.tolist() == [Image.new("RGB", (1, 1), COLOURS["cat"]).convert("L").getpixel((0, 0))] * len(reds)
    grey = tmp_path / "grey"
    write_classes(grey, grey=True)
    assert load_image_folder(grey, image_size=8, channels=3).image_shape == (3, 8, 8)


def test_errors(tmp_path):
    with pytest.raises(UserError, match=f"^no such folder: {tmp_path / 'nope'}$"):
        load_image_folder(tmp_path / "nope")
    write_classes(tmp_path / "one", colours={"only": (0, 0, 0)})
    with pytest.raises(UserError, match="needs at least 2 class subfolders of images, found 1 \\(only\\)"):
        load_image_folder(tmp_path / "one")
    write_classes(tmp_path / "gap", per_class=2)
    (tmp_path / "gap" / "fox").mkdir()
    with pytest.raises(UserError, match="class 'fox' has no images in .*fox$"):
        load_image_folder(tmp_path / "gap")
    with pytest.raises(UserError, match="channels must be 1, 3 or None"):
        load_image_folder(tmp_path / "gap", channels=2)


def test_unreadable_image_is_named(tmp_path):
    write_classes(tmp_path, per_class=2)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + np.zeros(10, np.uint8).tobytes())
    with pytest.raises(ImageError) as info:
        load_image_folder(tmp_path)
    assert str(tmp_path / "dog" / "broken.png") in str(info.value) and "\n" not in str(info.value)


def test_test_class_unknown_to_train(tmp_path):
    write_classes(tmp_path / "train", per_class=2, colours={"a": (0, 0, 0), "b": (9, 9, 9)})
    write_classes(tmp_path / "test", per_class=1, colours={"a": (0, 0, 0), "zebra": (9, 9, 9)})
    with pytest.raises(UserError, match="has class folder 'zebra' that .*train lacks"):
        load_image_folder(tmp_path)
