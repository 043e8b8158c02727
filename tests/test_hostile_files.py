"""Malformed and hostile image files through the upload path: decoded, or refused with one clear
line, never a crash. The corpus (``tests/hostile_files.py``) is written in real formats; the CLI
half runs every case through ``python -m core forget --forget images:<path>`` in a real
subprocess (see ``tests/cli_batch.py``), plus one separate ``python -m core`` process."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.errors import ImageError
from core.data.images import LimitError, decode_image, decode_images, load_images
from cli_batch import REPO, cli_env, run_many
from hostile_files import CHECK_SHAPE, Case, write_corpus

SHAPES = [(CHECK_SHAPE, False), ((1, 8, 8), True), ((3, 32, 32), False)]  # check shape, digits, CIFAR
PER_FILE_SECONDS = 3.0  # generous for a loaded machine; the bombs are refused in milliseconds
REQUIRED = ("empty.png", "truncated_half.png", "truncated_half.jpg", "text_named.png", "drawing.svg",
            "bomb_30000x30000.png", "grey16.png", "cmyk.jpg", "palette_alpha.png", "animated.gif",
            "exif_rotated.jpg", "many_tiny_files")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Case]:
    return write_corpus(tmp_path_factory.mktemp("hostile"))


def _matches(expectation, text: str) -> bool:
    return bool(re.search(expectation.pattern, text))


def test_the_corpus_covers_the_issue(corpus):
    names = {case.path.name for case in corpus}
    assert set(REQUIRED) <= names, set(REQUIRED) - names
    assert sum(case.is_upload for case in corpus) >= 30
    assert {case.expectation.outcome for case in corpus} == {"converted", "message"}
    bomb = next(c for c in corpus if c.path.name == "bomb_30000x30000.png")
    assert bomb.path.stat().st_size < 200_000  # small on disk, 30000×30000 in its IHDR
    assert bomb.path.read_bytes()[16:24] == (30000).to_bytes(4, "big") * 2


def test_every_upload_decodes_or_is_refused_clearly(corpus):
    torch.set_num_threads(1)
    failures = []
    for case in (c for c in corpus if c.is_upload):
        data, name, expect = case.path.read_bytes(), case.path.name, case.expectation
        for shape, dark in SHAPES:
            started = time.perf_counter()
            try:
                image = decode_image(data, name, shape, dark)
            except ImageError as exc:
                message = str(exc)
                if expect.outcome != "message" or not _matches(expect, message) or "\n" in message:
                    failures.append(f"{name} {shape}: refused with {message!r}, expected {expect}")
            except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
                failures.append(f"{name} {shape}: crashed with {type(exc).__name__}: {exc}")
            else:
                if expect.outcome != "converted":
                    failures.append(f"{name} {shape}: decoded, expected a message matching {expect.pattern!r}")
                elif image.shape != shape or image.dtype != torch.uint8:
                    failures.append(f"{name} {shape}: got {tuple(image.shape)} {image.dtype}")
                elif shape == CHECK_SHAPE and expect.check and not expect.check(image):
                    failures.append(f"{name}: decoded wrongly ({expect.what}); mean RGB "
                                    f"{image.float().mean(dim=(1, 2)).tolist()}")
            seconds = time.perf_counter() - started
            if seconds > PER_FILE_SECONDS:
                failures.append(f"{name} {shape}: took {seconds:.1f} s")
    assert not failures, "\n".join(failures)


def test_every_case_through_load_images(corpus):
    """``load_images`` is what the CLI's ``images:<path>`` calls: files, folders and the pipe."""
    failures = []
    for case in corpus:
        expect = case.expectation
        try:
            images, names = load_images(str(case.path), (1, 8, 8), True)
        except ImageError as exc:
            if expect.outcome != "message" or not _matches(expect, str(exc)):
                failures.append(f"{case.path.name}: refused with {str(exc)!r}, expected {expect}")
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{case.path.name}: crashed with {type(exc).__name__}: {exc}")
        else:
            if expect.outcome != "converted" or len(images) != expect.count or len(names) != expect.count:
                failures.append(f"{case.path.name}: loaded {len(images)} images, expected {expect}")
    assert not failures, "\n".join(failures)


# --- the CLI: every case through `python -m core forget --forget images:<path>` ----------------------


def _forget_args(path) -> list[str]:
    return ["forget", "--dataset", "digits", "--forget", f"images:{path}", "--alpha", "3.5", "--epochs", "2", "--json"]


@pytest.fixture(scope="module")
def cli_runs(corpus, tmp_path_factory):
    """(one real process on the 30000² bomb, every case in the batch driver), run side by side."""
    root = tmp_path_factory.mktemp("hostile_cli")
    bomb = next(c for c in corpus if c.path.name == "bomb_30000x30000.png")
    single = subprocess.Popen([sys.executable, "-m", "core", *_forget_args(bomb.path)], cwd=REPO,
                              env=cli_env(root / "single_cache"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL)
    try:
        started = time.perf_counter()
        runs = run_many([_forget_args(case.path) for case in corpus], root / "batch", root / "cache")
        batch_seconds = time.perf_counter() - started
        out, err = single.communicate(timeout=300)
    finally:
        if single.poll() is None:
            single.kill()
            single.wait()
    return (single.returncode, out, err), runs, batch_seconds


def test_cli_upload_path_converts_or_refuses_every_case(corpus, cli_runs):
    _, runs, seconds = cli_runs
    failures = []
    for case, run in zip(corpus, runs, strict=True):
        expect, text = case.expectation, run.describe()
        if "Traceback" in run.stderr or run.returncode not in (0, 2):
            failures.append(f"{case.path.name}: crashed\n{text}")
        elif expect.outcome == "converted":
            if run.returncode != 0:
                failures.append(f"{case.path.name}: expected converted\n{text}")
            else:
                out = json.loads(run.stdout)
                if out["forget_size"] != expect.count or out["warnings"]:
                    failures.append(f"{case.path.name}: forget_size {out['forget_size']} (expected {expect.count}), "
                                    f"warnings {out['warnings']}")
        else:
            lines = run.stderr.splitlines()
            if (run.returncode != 2 or run.stdout.strip() or len(lines) != 1 or not lines[0].startswith("error: ")
                    or not _matches(expect, lines[0])):
                failures.append(f"{case.path.name}: expected one 'error:' line matching {expect.pattern!r}\n{text}")
    assert not failures, "\n\n".join(failures)
    print(f"{len(runs)} CLI runs in one process: {seconds:.1f} s")


def test_a_separate_cli_process_refuses_the_png_bomb_in_one_line(cli_runs):
    (code, out, err), _, _ = cli_runs
    assert code == 2, err
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(r"bomb_30000x30000\.png is 900,000,000 pixels, over the 50,000,000-pixel limit$", err.strip())


# --- mutated images (fuzz) ---------------------------------------------------------------------------


def _seeds() -> list[tuple[str, bytes]]:
    rng = np.random.RandomState(5)
    rgb = Image.fromarray(rng.randint(0, 256, (12, 10, 3)).astype(np.uint8))
    out = []
    for fmt, kwargs in (("PNG", {}), ("JPEG", {"quality": 80}), ("GIF", {}), ("BMP", {}),
                        ("WEBP", {"lossless": True}), ("TIFF", {"compression": "tiff_lzw"})):
        buffer = io.BytesIO()
        rgb.save(buffer, fmt, **kwargs)
        out.append((fmt, buffer.getvalue()))
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw):
    fmt, data = draw(st.sampled_from(SEEDS))
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 6))):  # byte flips anywhere, headers included
        position = draw(st.integers(0, len(data) - 1))
        data[position] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    return fmt, bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.sampled_from(SHAPES))
def test_mutated_images_decode_or_raise_image_error(sample, shape_dark):
    fmt, data = sample
    shape, dark = shape_dark
    started = time.perf_counter()
    try:
        image = decode_image(data, f"fuzz.{fmt.lower()}", shape, dark)
    except ImageError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.")
    else:
        assert image.shape == shape and image.dtype == torch.uint8
    assert time.perf_counter() - started < PER_FILE_SECONDS


# --- limits on a load of many files ----------------------------------------------------------------


def _png(value: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), value).save(buffer, "PNG")
    return buffer.getvalue()


def test_decode_images_skips_bad_files_with_their_messages():
    images, names, skipped = decode_images([("a.png", _png(10)), ("b.png", b"text, not an image\n"),
                                            ("c.png", b""), ("d.png", _png(30))], (1, 8, 8), False)
    assert names == ["a.png", "d.png"] and images[:, 0, 0, 0].tolist() == [10, 30]
    assert skipped == ["b.png is not an image (text?)", "c.png is empty"]
    with pytest.raises(ImageError, match=r"^no usable images: b\.png is not an image \(text\?\)$"):
        decode_images([("b.png", b"text, not an image\n")], (1, 8, 8), False)


def test_decode_images_limits_count_bytes_and_pixels():
    files = [(f"{i}.png", _png(i)) for i in range(5)]
    with pytest.raises(LimitError, match=r"^5 files at once, over the limit of 4; pick fewer$"):
        decode_images(files, (1, 8, 8), False, max_files=4)
    with pytest.raises(LimitError, match=r"over 0 MB \(limit reached at 0\.png\)"):
        decode_images(files, (1, 8, 8), False, max_total_bytes=10)
    with pytest.raises(LimitError, match=r"over 200 pixels \(limit reached at 3\.png\)"):
        decode_images(files, (1, 8, 8), False, max_total_pixels=200)  # 64 pixels each: the 4th passes 200


def test_load_images_limits_total_bytes_and_pixels(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(_png(i, size=32))
    with pytest.raises(LimitError, match=r"limit reached at .*1\.png"):
        load_images(str(tmp_path), (1, 8, 8), False, max_total_bytes=len(_png(0, 32)) + 1)
    with pytest.raises(LimitError, match=r"over 2,000 pixels \(limit reached at .*1\.png\)"):
        load_images(str(tmp_path), (1, 8, 8), False, max_total_pixels=2000)  # 1,024 pixels each
    images, _ = load_images(str(tmp_path), (1, 8, 8), False, max_total_pixels=3 * 1024)
    assert len(images) == 3


def test_a_glob_over_many_files_stops_early(tmp_path):
    for i in range(30):
        (tmp_path / f"{i:02d}.png").write_bytes(_png(i))
    with pytest.raises(LimitError, match=r"has 30 images, over the limit of 10"):
        load_images(str(tmp_path / "*.png"), (1, 8, 8), False, max_files=10)
