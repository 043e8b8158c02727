"""A corpus of malformed, hostile and odd image files, written in their real on-disk formats.

``write_corpus(folder)`` writes every case into ``folder`` and returns a list of ``Case(path,
expectation)``. Each expectation says what the upload path must do with the file:

- ``converted``: it decodes to an image; ``check`` (if any) holds for
  ``decode_image(data, name, CHECK_SHAPE, dark_background=False)``, and ``count`` images result
  when the path is given to ``load_images`` (a folder case may hold several);
- ``message``: it is refused with a one-line message matching the regex ``pattern``.

Most cases are single files; a few are folders (many tiny files, a symbolic-link loop, …) and one
is a named pipe. Tests of an upload widget, which take bytes, should use the cases whose path is
a regular file (``case.is_upload``); the CLI's ``--forget images:<path>`` takes them all.

Nothing here needs a network, and everything is made with Pillow, zlib and struct in well under
two seconds.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from PIL import Image

CHECK_SHAPE = (3, 16, 16)  # the shape ``check`` functions see, decoded with dark_background=False
MANY_FILES = 2001  # one more than core.data.images.MAX_FILES


@dataclass(frozen=True)
class Expectation:
    outcome: str  # "converted" or "message"
    what: str  # one line: what the file is
    pattern: str = ""  # regex the message must match (``re.search``), for "message"
    check: Callable[[torch.Tensor], bool] | None = None  # on the (3, 16, 16) decode, for "converted"
    count: int = 1  # images a converted case yields through load_images


class Case(NamedTuple):
    path: Path
    expectation: Expectation

    @property
    def is_upload(self) -> bool:
        """A regular file: something a browser could upload as bytes."""
        return self.path.is_file() and not self.path.is_symlink()


def converted(what: str, check: Callable[[torch.Tensor], bool] | None = None, count: int = 1) -> Expectation:
    return Expectation("converted", what, check=check, count=count)


def message(what: str, pattern: str) -> Expectation:
    return Expectation("message", what, pattern=pattern)


# --- checks on the decoded (3, 16, 16) uint8 tensor ------------------------------------------------


def _mean_rgb(image: torch.Tensor, rows=slice(None), cols=slice(None)) -> list[float]:
    return image[:, rows, cols].float().mean(dim=(1, 2)).tolist()


def _close(values: list[float], target: tuple[int, ...], tolerance: float) -> bool:
    return all(abs(v - t) <= tolerance for v, t in zip(values, target))


def is_colour(rgb: tuple[int, int, int], tolerance: float = 12) -> Callable[[torch.Tensor], bool]:
    return lambda image: _close(_mean_rgb(image), rgb, tolerance)


def top_dark_bottom_light(image: torch.Tensor) -> bool:
    """An EXIF rotation of 90° clockwise turned 'left half black' into 'top half black'."""
    return max(_mean_rgb(image, slice(0, 6))) < 30 and min(_mean_rgb(image, slice(10, 16))) > 225


def left_dark_right_light(image: torch.Tensor) -> bool:
    return max(_mean_rgb(image, cols=slice(0, 6))) < 30 and min(_mean_rgb(image, cols=slice(10, 16))) > 225


def top_colour_bottom_white(rgb: tuple[int, int, int]) -> Callable[[torch.Tensor], bool]:
    """Opaque colour above, transparent below: transparency goes onto a white background."""
    return lambda image: (_close(_mean_rgb(image, slice(0, 6)), rgb, 15)
                          and _close(_mean_rgb(image, slice(10, 16)), (255, 255, 255), 15))


def is_grey(level: int, tolerance: float = 3) -> Callable[[torch.Tensor], bool]:
    return lambda image: _close(_mean_rgb(image), (level, level, level), tolerance)


def any_image(image: torch.Tensor) -> bool:
    return image.shape == CHECK_SHAPE and image.dtype == torch.uint8


# --- encoders ----------------------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes, extra: bytes = b"") -> bytes:
    """A PNG from its parts: IHDR for the given size and type, ``extra`` chunks, one IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def real_png_bomb(side: int = 30000) -> bytes:
    """A whole, valid 1-bit ``side``×``side`` black PNG: ~110 kB on disk, 900 M pixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return raw_png(side, side, 1, 0, idat)


def sixteen_bit_rgb_png(rgb16: tuple[int, int, int], size: int = 8) -> bytes:
    pixel = struct.pack(">HHH", *rgb16)
    return raw_png(size, size, 16, 2, zlib.compress(b"".join(b"\x00" + pixel * size for _ in range(size))))


def interlaced_png(pixels: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG of (H, W, 3) ``pixels`` (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    passes = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
    raw = b""
    for row0, col0, row_step, col_step in passes:  # each pass: a small image of its own, row by row
        sub = pixels[row0::row_step, col0::col_step]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)  # interlace method 1: Adam7
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def gif_with_screen(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (8, 8), 0), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen size Pillow reports
    return bytes(data)


def jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8), (90, 90, 90)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tiff_with_size(width: int, height: int) -> bytes:
    """A little-endian grey TIFF whose ImageWidth/ImageLength tags (type LONG) are patched."""
    data = bytearray(encode(Image.new("L", (8, 8), 0), "TIFF"))
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry:entry + 4])
        if tag in (256, 257):
            assert kind == 4, "Pillow wrote the size as SHORT; patch another way"
            data[entry + 8:entry + 12] = struct.pack("<I", width if tag == 256 else height)
    return bytes(data)


def jpeg_with_exif(pixels: np.ndarray, orientation: int | None = None, raw_exif: bytes | None = None) -> bytes:
    data = encode(Image.fromarray(pixels), "JPEG", quality=95,
                  **({"exif": _orientation(orientation)} if orientation is not None else {}))
    if raw_exif is not None:  # an APP1 segment right after SOI
        data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(raw_exif) + 2) + raw_exif + data[2:]
    return data


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _half_black_half_white() -> np.ndarray:
    pixels = np.zeros((16, 32, 3), np.uint8)  # 32 wide, 16 high: left half black, right half white
    pixels[:, 16:] = 255
    return pixels


def _noise_rgb(size: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size, size, 3)).astype(np.uint8))


def _half_transparent_rgba(rgb: tuple[int, int, int]) -> Image.Image:
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[..., :3] = rgb
    pixels[:8, :, 3] = 255  # opaque top half, transparent bottom half
    return Image.fromarray(pixels, "RGBA")


def _palette_with_transparent_index() -> bytes:
    im = Image.new("P", (16, 16), 0)  # index 0: blue, declared transparent
    im.putpalette([0, 0, 255] + [0, 200, 0] + [0] * 762)
    for y in range(8):
        for x in range(16):
            im.putpixel((x, y), 1)  # opaque green top half
    return encode(im, "PNG", transparency=0)


def _grey_alpha_png() -> bytes:
    pixels = np.zeros((16, 16, 2), np.uint8)
    pixels[..., 0] = 0  # black …
    pixels[:8, :, 1] = 255  # … opaque on top, transparent below
    return encode(Image.fromarray(pixels, "LA"), "PNG")


def _frames(fmt: str, **kwargs) -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs)


def _zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.png", encode(Image.new("RGB", (8, 8)), "PNG"))
    return buffer.getvalue()


SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
       b'<rect width="64" height="64" fill="red"/><script>alert(1)</script></svg>\n')
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>\n"
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


# --- the corpus --------------------------------------------------------------------------------------

PIXEL_LIMIT = r"over the 50,000,000-pixel limit$"


def _file_cases() -> dict[str, tuple[bytes, Expectation]]:
    """name → (content, expectation) for every single-file case."""
    red_png = encode(Image.new("RGB", (16, 16), (255, 0, 0)), "PNG")
    noise_png = encode(_noise_rgb(), "PNG")
    noise_jpeg = encode(_noise_rgb(), "JPEG", quality=90)
    zero_width = raw_png(0, 8, 8, 0, zlib.compress(b""))
    bad_crc = bytearray(red_png)
    bad_crc[29] ^= 0xFF  # the IHDR chunk's CRC
    ztxt_bomb = red_png[:33] + png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * (64 * 2**20))) + red_png[33:]
    bad_idat = raw_png(8, 8, 8, 0, b"\x78\x9c" + b"\xde\xad\xbe\xef" * 16)
    grey16 = Image.fromarray(np.full((16, 16), 257 * 100, np.uint16))  # mode I;16, 16-bit value 25700 → 100
    return {
        # --- refused, with a message ---
        "empty.png": (b"", message("zero bytes", r"empty\.png is empty$")),
        "truncated_half.png": (noise_png[: len(noise_png) // 2], message("PNG cut in half", r"is truncated")),
        "truncated_header.png": (noise_png[:20], message("PNG cut inside IHDR", r"is truncated")),
        "signature_only.png": (noise_png[:8], message("only the 8-byte PNG signature", r"truncated or damaged")),
        "truncated_half.jpg": (noise_jpeg[: len(noise_jpeg) // 2], message("JPEG cut in half", r"is truncated")),
        "jpeg_soi_only.jpg": (noise_jpeg[:2], message("only the JPEG start-of-image marker", r"truncated or damaged")),
        "text_named.png": (b"this is a shopping list, not a picture\n", message("text named .png", r"not an image \(text\?\)$")),
        "drawing.svg": (SVG, message("an SVG with a script", r"SVG drawing")),
        "svg_named.png": (SVG, message("an SVG named .png", r"SVG drawing")),
        "document_named.png": (PDF, message("a PDF named .png", r"PDF document")),
        "page_named.jpg": (HTML, message("HTML named .jpg", r"not an image \(text\?\)$")),
        "random_bytes.png": (bytes(np.random.RandomState(3).randint(0, 256, 4096).astype(np.uint8)),
                             message("4 kB of random bytes", r"not an image in a supported format")),
        "icon_named.png": (encode(Image.new("RGB", (16, 16)), "ICO"),
                           message("a Windows icon (Pillow reads it; we do not)", r"supported format.*icon \(ICO\)")),
        "archive_named.png": (_zip_bytes(), message("a zip holding a PNG", r"archive")),
        "photo_named.jpg": (HEIC, message("a HEIC header", r"HEIC")),
        "bomb_30000x30000.png": (real_png_bomb(30000), message("a real 1-bit 30000×30000 PNG (110 kB)",
                                                               r"900,000,000 pixels, " + PIXEL_LIMIT)),
        "bomb_header_only.png": (raw_png(30000, 30000, 8, 0, zlib.compress(b"\x00" * 64)),
                                 message("IHDR claims 30000×30000", r"900,000,000 pixels, " + PIXEL_LIMIT)),
        "bomb_9000x9000.png": (raw_png(9000, 9000, 8, 0, zlib.compress(b"\x00" * 64)),
                               message("81 M pixels: Pillow only warns here", r"81,000,000 pixels, " + PIXEL_LIMIT)),
        "bomb_screen.gif": (gif_with_screen(30000, 30000), message("GIF logical screen 30000×30000", PIXEL_LIMIT)),
        "bomb_sof.jpg": (jpeg_with_size(30000, 30000), message("JPEG frame header 30000×30000", PIXEL_LIMIT)),
        "bomb_tags.tif": (tiff_with_size(30000, 30000), message("TIFF tags 30000×30000", PIXEL_LIMIT)),
        "ztxt_bomb.png": (ztxt_bomb, message("a zTXt chunk inflating to 64 MB", r"decompression bomb")),
        "zero_width.png": (zero_width, message("IHDR width 0", r"truncated or damaged|no pixels")),
        "bad_crc.png": (bytes(bad_crc), message("IHDR checksum wrong", r"truncated or damaged")),
        "bad_idat.png": (bad_idat, message("IDAT is not zlib data", r"is damaged|is truncated")),
        # --- converted ---
        "grey16.png": (encode(grey16, "PNG"), converted("16-bit grey PNG", is_grey(100))),
        "rgb16.png": (sixteen_bit_rgb_png((65535, 0, 0)), converted("16-bit RGB PNG", is_colour((255, 0, 0)))),
        "cmyk.jpg": (encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95),
                     converted("CMYK JPEG", is_colour((255, 0, 0), 15))),
        "cmyk.tif": (encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "TIFF"),
                     converted("CMYK TIFF", is_colour((255, 0, 0)))),
        "palette_alpha.png": (_palette_with_transparent_index(),
                              converted("palette PNG with a transparent index", top_colour_bottom_white((0, 200, 0)))),
        "rgba_half_transparent.png": (encode(_half_transparent_rgba((255, 0, 0)), "PNG"),
                                      converted("RGBA PNG, bottom half transparent", top_colour_bottom_white((255, 0, 0)))),
        "grey_alpha.png": (_grey_alpha_png(), converted("grey + alpha PNG", top_colour_bottom_white((0, 0, 0)))),
        "animated.gif": (_frames("GIF", duration=100, loop=0), converted("3-frame GIF: the first frame", is_colour((255, 0, 0)))),
        "animated.png": (_frames("PNG"), converted("3-frame APNG: the first frame", is_colour((255, 0, 0)))),
        "animated.webp": (_frames("WEBP", lossless=True), converted("3-frame WebP: the first frame", is_colour((255, 0, 0)))),
        "multipage.tif": (_frames("TIFF"), converted("3-page TIFF: the first page", is_colour((255, 0, 0)))),
        "exif_rotated.jpg": (jpeg_with_exif(_half_black_half_white(), orientation=6),
                             converted("EXIF orientation 6 (rotate 90°)", top_dark_bottom_light)),
        "exif_orientation_9.jpg": (jpeg_with_exif(_half_black_half_white(), orientation=9),
                                   converted("EXIF orientation 9 (invalid): left as stored", left_dark_right_light)),
        "exif_corrupt.jpg": (jpeg_with_exif(_half_black_half_white(), raw_exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"
                                            + b"\x01" * 20), converted("damaged EXIF block", left_dark_right_light)),
        "png_named.jpg": (red_png, converted("a PNG named .jpg (read by content)", is_colour((255, 0, 0)))),
        "jpeg_named.png": (encode(Image.new("RGB", (16, 16), (0, 0, 255)), "JPEG", quality=95),
                           converted("a JPEG named .png (read by content)", is_colour((0, 0, 255)))),
        "one_pixel.png": (encode(Image.new("RGB", (1, 1), (0, 255, 0)), "PNG"), converted("1×1 pixel", is_colour((0, 255, 0)))),
        "long_strip.png": (encode(Image.new("L", (5000, 1), 77), "PNG"), converted("5000×1 strip", is_grey(77))),
        "one_bit.bmp": (encode(Image.new("1", (16, 16), 1), "BMP"), converted("1-bit BMP", is_grey(255))),
        "float32.tif": (encode(Image.fromarray(np.full((16, 16), 0.5, np.float32)), "TIFF"),
                        converted("32-bit float TIFF in 0..1", is_grey(128, 1))),
        "int32.tif": (encode(Image.fromarray(np.full((16, 16), 257 * 40, np.int32)), "TIFF"),
                      converted("32-bit integer TIFF", is_grey(40, 1))),
        "lab.tif": (encode(Image.new("LAB", (16, 16), (128, 128, 128)), "TIFF"), converted("CIE L*a*b* TIFF", any_image)),
        "interlaced.png": (interlaced_png(_half_black_half_white()[:, 8:24]),  # 16×16: left black, right white
                           converted("Adam7-interlaced PNG", left_dark_right_light)),
        "progressive.jpg": (encode(Image.new("RGB", (16, 16), (255, 0, 0)), "JPEG", progressive=True, quality=95),
                            converted("progressive JPEG", is_colour((255, 0, 0), 15))),
        "lossy.webp": (encode(Image.new("RGB", (16, 16), (0, 0, 255)), "WEBP", quality=90),
                       converted("lossy WebP", is_colour((0, 0, 255), 15))),
    }


def write_corpus(folder: str | Path) -> list[Case]:
    """Write every case under ``folder`` (created if needed); return them as ``Case(path, expectation)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, (content, expectation) in _file_cases().items():
        path = folder / name
        path.write_bytes(content)
        cases.append(Case(path, expectation))

    oversize = folder / "oversize_21mb.png"  # a sparse file: 21 MB long, nearly nothing on disk
    with oversize.open("wb") as fh:
        fh.write(encode(Image.new("RGB", (8, 8)), "PNG"))
        fh.truncate(21 * 2**20)
    cases.append(Case(oversize, message("a 21 MB file (PNG head, zero tail)", r"21\.0 MB, over the 20 MB limit")))

    if hasattr(os, "mkfifo"):  # a named pipe named like an image: reading it would block forever
        fifo = folder / "pipe.png"
        os.mkfifo(fifo)
        cases.append(Case(fifo, message("a named pipe (FIFO) named .png", r"not a regular file")))

    cases.extend(_folder_cases(folder))
    return cases


def _folder_cases(folder: Path) -> list[Case]:
    tiny = encode(Image.new("L", (1, 1), 0), "PNG")
    good = encode(Image.new("RGB", (16, 16), (255, 0, 0)), "PNG")

    many = folder / "many_tiny_files"
    many.mkdir()
    for i in range(MANY_FILES):
        (many / f"{i:05d}.png").write_bytes(tiny)

    loop = folder / "symlink_loop"
    (loop / "sub").mkdir(parents=True)
    (loop / "sub" / "red.png").write_bytes(good)
    (loop / "sub" / "again").symlink_to(loop, target_is_directory=True)  # a cycle, never followed

    nothing = folder / "no_images"
    nothing.mkdir()
    (nothing / "README.txt").write_text("no pictures here\n")
    (nothing / "drawing.svg").write_bytes(SVG)
    (nothing / ".hidden.png").write_bytes(good)

    mixed = folder / "one_bad_among_good"
    mixed.mkdir()
    (mixed / "a_good.png").write_bytes(good)
    (mixed / "b_bad.png").write_text("not an image\n")
    (mixed / "c_good.png").write_bytes(good)

    odd_names = folder / "odd_entries"
    (odd_names / "folder_named.png").mkdir(parents=True)  # a folder with an image extension
    (odd_names / "red.png").write_bytes(good)
    (odd_names / "dangling.png").symlink_to(folder / "no-such-target.png")
    (odd_names / "to_dev_null.png").symlink_to("/dev/null")

    return [
        Case(many, message(f"{MANY_FILES:,} tiny 1×1 PNGs in one folder", r"has 2,001 images, over the limit of 2,000")),
        Case(loop, converted("a folder whose sub-folder links back to it", is_colour((255, 0, 0)), count=1)),
        Case(nothing, message("only text, an SVG and a hidden PNG", r"no images in folder")),
        Case(mixed, message("a text file named .png between two good PNGs", r"b_bad\.png is not an image \(text\?\)")),
        Case(odd_names, converted("a folder named .png, a dangling link, a link to /dev/null, one good PNG",
                                  is_colour((255, 0, 0)), count=1)),
    ]


def describe(cases: list[Case]) -> str:
    """The corpus as JSON lines (name, kind, expected outcome, what), for reports."""
    return "\n".join(json.dumps({"name": c.path.name, "kind": "file" if c.is_upload else "other",
                                 "outcome": c.expectation.outcome, "what": c.expectation.what}) for c in cases)
