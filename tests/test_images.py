"""Image decoding on real files made with Pillow (and a hand-written PNG header)."""
from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import ImageError, UserError
from core.data.images import MAX_IMAGE_BYTES, decode_image, load_images


def encode(im: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width``×``height`` 8-bit grey pixels, with one tiny IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_png_rgb_round_trip_is_exact():
    pixels = np.random.RandomState(0).randint(0, 256, (5, 6, 3)).astype(np.uint8)  # (H, W, C)
    out = decode_image(encode(Image.fromarray(pixels)), "a.png", (3, 5, 6), dark_background=False)
    assert out.dtype == torch.uint8 and out.shape == (3, 5, 6)
    assert torch.equal(out, torch.from_numpy(pixels).permute(2, 0, 1))


def test_grey_png_is_bit_identical():
    pixels = np.random.RandomState(1).randint(0, 256, (8, 8)).astype(np.uint8)
    pixels[0, :] = pixels[-1, :] = pixels[:, 0] = pixels[:, -1] = 10  # a dark border: no inversion
    data = encode(Image.fromarray(pixels, "L"))
    for dark in (False, True):
        out = decode_image(data, "g.png", (1, 8, 8), dark_background=dark)
        assert out.shape == (1, 8, 8) and torch.equal(out[0], torch.from_numpy(pixels))


def test_jpeg_round_trip_is_close():
    y, x = np.mgrid[0:32, 0:32]
    pixels = np.stack([x * 8, y * 8, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    out = decode_image(encode(Image.fromarray(pixels), "JPEG", quality=95), "a.jpg", (3, 32, 32), False)
    diff = (out.to(torch.int16) - torch.from_numpy(pixels).permute(2, 0, 1).to(torch.int16)).abs()
    assert diff.float().mean() < 3


def test_resize_and_grey_conversion():
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, 32:] = (255, 255, 255)
    out = decode_image(encode(Image.fromarray(pixels)), "big.png", (1, 8, 8), False)  # BOX: halves stay clean
    assert out.shape == (1, 8, 8) and out[0, :, :4].max() == 0 and out[0, :, 4:].min() == 255
    up = decode_image(encode(Image.fromarray(pixels[:4, :4])), "small.png", (3, 16, 16), False)
    assert up.shape == (3, 16, 16)


def test_black_on_white_digit_is_inverted_for_dark_background_sets():
    pixels = np.full((28, 28), 255, np.uint8)
    pixels[4:24, 12:16] = 0  # a black "1" on white paper
    data = encode(Image.fromarray(pixels, "L"))
    dark = decode_image(data, "one.png", (1, 28, 28), dark_background=True)[0]
    assert dark[0, 0] == 0 and dark[10, 13] == 255
    light = decode_image(data, "one.png", (1, 28, 28), dark_background=False)[0]
    assert light[0, 0] == 255 and light[10, 13] == 0


def test_rgba_transparency_goes_on_the_background():
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., 0] = 255  # red …
    pixels[:2, :, 3] = 255  # … opaque in the top half, transparent below
    data = encode(Image.fromarray(pixels, "RGBA"))
    white = decode_image(data, "a.png", (3, 4, 4), dark_background=False)
    assert white[:, 0, 0].tolist() == [255, 0, 0] and white[:, 3, 0].tolist() == [255, 255, 255]
    black = decode_image(data, "a.png", (3, 4, 4), dark_background=True)
    assert black[:, 0, 0].tolist() == [255, 0, 0] and black[:, 3, 0].tolist() == [0, 0, 0]


def test_palette_with_transparent_index():
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 255] + [0, 255, 0] + [0] * 762)
    im.putpixel((0, 0), 1)
    out = decode_image(encode(im, transparency=0), "p.png", (3, 4, 4), dark_background=False)
    assert out[:, 0, 0].tolist() == [0, 255, 0]  # opaque green
    assert out[:, 3, 3].tolist() == [255, 255, 255]  # transparent blue → white background


def test_sixteen_bit_png_is_scaled_to_eight_bits():
    values = np.array([[0, 257 * 100, 65535, 32896]], np.uint16)
    im = Image.fromarray(values)
    assert im.mode.startswith("I;16")
    out = decode_image(encode(im), "deep.png", (1, 1, 4), False)
    assert out[0, 0].tolist() == [0, 100, 255, 128]


def test_cmyk_jpeg_becomes_rgb():
    im = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    out = decode_image(encode(im, "JPEG", quality=95), "cmyk.jpg", (3, 16, 16), False)
    r, g, b = out.float().mean(dim=(1, 2)).tolist()
    assert r > 240 and g < 15 and b < 15


def test_exif_orientation_is_applied():
    pixels = np.zeros((16, 32, 3), np.uint8)  # 32 wide, 16 high: left half black, right half white
    pixels[:, 16:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(data, "phone.jpg", (3, 32, 16), False)  # displayed: 16 wide, 32 high
    assert out[:, :12].float().mean() < 20 and out[:, 20:].float().mean() > 235  # left → top


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = decode_image(data, "anim.gif", (3, 8, 8), False)
    assert out[:, 4, 4].tolist() == [255, 0, 0]


def test_webp_bmp_tiff_are_read():
    im = Image.new("RGB", (6, 6), (10, 200, 30))
    for fmt in ("BMP", "TIFF", "WEBP"):
        kwargs = {"lossless": True} if fmt == "WEBP" else {}
        out = decode_image(encode(im, fmt, **kwargs), f"a.{fmt.lower()}", (3, 6, 6), False)
        assert out[:, 3, 3].tolist() == [10, 200, 30], fmt


@pytest.mark.parametrize("data, message", [
    (b"hello, I am a text file\n", r"^x\.png is not an image \(text\?\)$"),
    (b"", r"^x\.png is empty$"),
    (b"\x00\x01\x02\x03" * 10, r"^x\.png is not an image in a supported format"),
])
def test_not_images(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data, "x.png", (3, 8, 8), False)


def test_format_outside_the_list_is_refused():
    data = encode(Image.new("RGB", (16, 16)), "ICO")  # Pillow reads ICO, but we do not
    with pytest.raises(ImageError, match="not an image in a supported format"):
        decode_image(data, "x.png", (3, 8, 8), False)


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_truncated_png(cut):
    data = encode(Image.fromarray(np.random.RandomState(2).randint(0, 256, (64, 64, 3)).astype(np.uint8)))
    with pytest.raises(ImageError, match=r"^x\.png is truncated"):
        decode_image(data[: int(len(data) * cut)], "x.png", (3, 8, 8), False)


@pytest.mark.parametrize("keep", [12, 20, 40])  # cut inside the signature's chunk, IHDR, after IHDR
def test_truncated_header(keep):
    data = encode(Image.new("RGB", (8, 8)))[:keep]
    with pytest.raises(ImageError, match=r"^x\.png is truncated"):
        decode_image(data, "x.png", (3, 8, 8), False)


@pytest.mark.parametrize("width, height", [(30000, 30000), (9000, 9000)])  # Pillow's error, and its warning
def test_decompression_bomb_is_refused_quickly(width, height):
    data = png_header_only(width, height)
    assert len(data) < 200
    start = time.monotonic()
    with pytest.raises(ImageError, match=r"^bomb\.png is [\d,]+ pixels, over the 50,000,000-pixel limit$"):
        decode_image(data, "bomb.png", (1, 28, 28), True)
    assert time.monotonic() - start < 1


def test_real_one_bit_bomb():
    """A real 1-bit PNG, 18 kB on disk and 144 M pixels once decoded (30000² is 109 kB, slower to make)."""
    data = encode(Image.new("1", (12000, 12000)))
    with pytest.raises(ImageError, match="144,000,000 pixels, over the 50,000,000-pixel limit"):
        decode_image(data, "bomb.png", (1, 28, 28), True)


def test_too_many_bytes():
    with pytest.raises(ImageError, match=r"^huge\.png is 20\.0 MB, over the 20 MB limit$"):
        decode_image(b"\x89PNG" + b"\x00" * (MAX_IMAGE_BYTES - 3), "huge.png", (3, 8, 8), False)


def test_image_error_is_a_user_error():
    assert issubclass(ImageError, UserError)


# --- load_images -----------------------------------------------------------------------------


def write_png(path, value: int, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)


def test_load_folder_recursively_sorted_skipping_hidden_and_other_files(tmp_path):
    write_png(tmp_path / "b.png", 20)
    write_png(tmp_path / "a.png", 10)
    write_png(tmp_path / "sub" / "c.PNG", 30)
    write_png(tmp_path / ".hidden.png", 99)
    write_png(tmp_path / ".cache" / "d.png", 99)
    (tmp_path / "notes.txt").write_text("not an image")
    images, names = load_images(str(tmp_path), (1, 4, 4), dark_background=False)
    assert names == ["a.png", "b.png", "sub/c.PNG"]
    assert images.shape == (3, 1, 4, 4) and images.dtype == torch.uint8
    assert images[:, 0, 0, 0].tolist() == [10, 20, 30]


def test_load_single_file_and_glob(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"img{i}.png", 10 * i)
    images, names = load_images(str(tmp_path / "img1.png"), (3, 8, 8), False)
    assert images.shape == (1, 3, 8, 8) and names == ["img1.png"] and images.max() == 10
    images, names = load_images(str(tmp_path / "img[02].png"), (1, 8, 8), False)
    assert [n.rsplit("/", 1)[-1] for n in names] == ["img0.png", "img2.png"]
    assert images[:, 0, 0, 0].tolist() == [0, 20]


def test_load_errors(tmp_path):
    with pytest.raises(ImageError, match="^no such file or folder: /no/such/path$"):
        load_images("/no/such/path", (1, 8, 8), False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match=f"^no images in folder {tmp_path / 'empty'}"):
        load_images(str(tmp_path / "empty"), (1, 8, 8), False)
    with pytest.raises(ImageError, match="^no files match .*nothing-\\*.png$"):
        load_images(str(tmp_path / "nothing-*.png"), (1, 8, 8), False)
    for i in range(3):
        write_png(tmp_path / "many" / f"{i}.png", 0)
    with pytest.raises(ImageError, match="has 3 images, over the limit of 2"):
        load_images(str(tmp_path / "many"), (1, 8, 8), False, max_files=2)


def test_load_names_the_bad_file(tmp_path):
    write_png(tmp_path / "good.png", 0)
    (tmp_path / "bad.png").write_text("I am text")
    with pytest.raises(ImageError) as info:
        load_images(str(tmp_path), (1, 8, 8), False)
    assert str(info.value) == f"{tmp_path / 'bad.png'} is not an image (text?)"


# --- forget images made the way a digit set made its own ------------------------------------------

def _correlation(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_a_small_digit_on_a_big_light_canvas_becomes_the_sets_own_kind_of_image(name):
    """A digit drawn small, black on white, off centre in a big picture (as a phone photo or a
    rendered glyph is): cropped to its ink, centred, scaled to the set's box and made bright on
    dark, it matches the set's own image of it; shrinking the whole picture does not."""
    from core.data.registry import load_dataset

    data = load_dataset(name)
    _, height, width = data.image_shape
    originals = data.test_x[data.test_y == 3][:8, 0].numpy()
    fits = []
    for original in originals:
        rows, cols = np.nonzero(original > 40)
        ink = original[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        glyph = np.asarray(Image.fromarray(ink).resize((ink.shape[1] * 6, ink.shape[0] * 6), Image.NEAREST))
        canvas = np.full((300, 400), 255, dtype=np.uint8)  # white paper
        canvas[40:40 + glyph.shape[0], 250:250 + glyph.shape[1]] = 255 - glyph  # black ink, top right
        data_bytes = encode(Image.fromarray(canvas))
        notes: list[str] = []
        fitted = decode_image(data_bytes, "photo.png", data.image_shape, True, digit_box=data.digit_box, notes=notes)[0]
        plain = decode_image(data_bytes, "photo.png", data.image_shape, True)[0]
        assert fitted.shape == (height, width) and int(fitted.max()) == 255 and notes == []
        fits.append(_correlation(fitted, original))
        # measured: digits 0.86–1.0 (plain resize 0.08–0.33), MNIST 0.55–0.94 (plain −0.09–0.19):
        # MNIST centred its digits after anti-aliasing, which a re-scan cannot repeat exactly
        assert fits[-1] > 0.5 and fits[-1] > _correlation(plain, original) + 0.3, (fits[-1], _correlation(plain, original))
    assert np.mean(fits) > 0.7, fits


def test_images_too_small_or_too_flat_are_kept_with_a_note():
    notes: list[str] = []
    tiny = decode_image(encode(Image.new("L", (1, 1), 200)), "dot.png", (1, 8, 8), True, digit_box=1.0, notes=notes)
    grey = decode_image(encode(Image.new("L", (4000, 3000), 128)), "grey.png", (1, 8, 8), True, digit_box=1.0,
                        notes=notes)
    assert tiny.shape == grey.shape == (1, 8, 8)
    assert notes == ["dot.png is 1×1 px, smaller than the model's 8×8 input: it was enlarged, and may mean little",
                     "dot.png is almost flat (grey levels 200–200): it shows nothing the model could recognise",
                     "grey.png is almost flat (grey levels 128–128): it shows nothing the model could recognise"]
