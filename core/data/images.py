"""Image files → uint8 tensors in a data set's format (forget images, uploads, image folders).

Files come from users, so every one is checked by its content (never its name), size and pixel
count before it is decoded, and every failure is an ``ImageError`` whose one-line message names
the file. Odd modes (16-bit, CMYK, palettes with transparency, animations, EXIF rotation) are
converted; what cannot be converted is refused with a message. A load of many files has limits
on their number, total bytes and total pixels.
"""
from __future__ import annotations

import glob
import io
import itertools
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.errors import ImageError

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # one file
MAX_IMAGE_PIXELS = 50_000_000  # one image, as declared in its header
MAX_FILES = 2000  # one load (a folder, a glob, a batch of uploads)
MAX_TOTAL_BYTES = 200 * 1024 * 1024  # one load
MAX_TOTAL_PIXELS = 500_000_000  # one load: ten images at the per-image limit
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # the only decoders Pillow may try
EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")

_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
# Files people mistake for pixel images, by their first bytes: (test, what it looks like, is an image).
_OTHER_KINDS = (
    (lambda h: h[4:8] == b"ftyp" and h[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"heim", b"heis"),
     "a HEIC/HEIF photo", True),
    (lambda h: h[4:8] == b"ftyp" and h[8:12] in (b"avif", b"avis"), "an AVIF image", True),
    (lambda h: h.startswith(b"\x00\x00\x01\x00"), "an icon (ICO)", True),
    (lambda h: h.startswith(b"8BPS"), "a Photoshop file (PSD)", True),
    (lambda h: h.startswith(b"%PDF"), "a PDF document", False),
    (lambda h: b"<svg" in h.lower(), "an SVG drawing (vector graphics); export it as PNG", False),
    (lambda h: h.startswith((b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!")), "an archive (zip, gzip, 7z or rar)", False),
    (lambda h: h.startswith((b"\x7fELF", b"MZ")), "a program", False),
)

# Pillow's own guard reads this global; lower it from ~89 M so a huge declared size is refused
# when the header is read, before any pixels are allocated (``_open_checked`` sets it again
# before each file, in case other code changed it, and also checks the size itself).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class LimitError(ImageError):
    """A load of many images went over its count, byte or pixel limit: the whole load stops."""


class Limits:
    """What one load of many images may add up to; ``take_*`` count a file against them."""

    def __init__(self, max_files: int = MAX_FILES, max_total_bytes: int = MAX_TOTAL_BYTES,
                 max_total_pixels: int = MAX_TOTAL_PIXELS):
        self.max_files, self.max_total_bytes, self.max_total_pixels = max_files, max_total_bytes, max_total_pixels
        self.files = self.bytes = self.pixels = 0

    def take_file(self, name: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        if self.files > self.max_files:
            raise LimitError(f"more than {self.max_files:,} images at once; pick fewer")
        if self.bytes > self.max_total_bytes:
            raise LimitError(f"the images add up to over {self.max_total_bytes // 2**20} MB (limit reached at {name}); "
                             "pick fewer or smaller ones")

    def take_pixels(self, name: str, pixels: int) -> None:
        self.pixels += pixels
        if self.pixels > self.max_total_pixels:
            raise LimitError(f"the images add up to over {self.max_total_pixels:,} pixels (limit reached at {name}); "
                             "pick fewer or smaller ones")


def decode_image(data: bytes, name: str, shape: tuple[int, int, int], dark_background: bool,
                 limits: Limits | None = None, digit_box: float | None = None,
                 notes: list[str] | None = None) -> torch.Tensor:
    """Decode one image file's bytes to a uint8 (C, H, W) tensor of ``shape`` (C is 1 or 3).

    With ``dark_background`` a light-background image (mostly bright border) is inverted, so a
    black-on-white digit becomes white-on-black like MNIST. ``limits`` counts the image's pixels
    (from its header, before decoding) against a load's total. ``digit_box`` (one channel only):
    prepare it like a digit set's own images (``fit_digit``). ``notes`` collects warnings about
    an image that is kept but may mean little (too small, too flat).
    """
    channels, height, width = shape
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    im = _open_checked(data, name, limits)
    try:
        im = _flatten(im, dark_background)
        im = im.convert("L" if channels == 1 else "RGB")
        if notes is not None:
            notes.extend(image_notes(im, name, (width, height)))
        if digit_box is not None and channels == 1:
            pixels = np.array(im, dtype=np.uint8)
            if dark_background and _border_mean(torch.from_numpy(pixels)[None]) > 127:
                pixels = 255 - pixels
            return torch.from_numpy(fit_digit(pixels, (height, width), digit_box))[None]
        if im.size != (width, height):
            shrinking = width <= im.width and height <= im.height
            im = im.resize((width, height), Image.BOX if shrinking else Image.BILINEAR)
    except (ValueError, OSError, TypeError, KeyError) as e:  # a mode Pillow cannot convert
        raise ImageError(f"{name} has an image mode that cannot be converted to {'grey' if channels == 1 else 'RGB'} "
                         f"({im.mode}: {e})".splitlines()[0]) from None
    array = np.asarray(im, dtype=np.uint8).reshape(height, width, -1)  # (H, W, C)
    image = torch.from_numpy(array.transpose(2, 0, 1).copy())
    if dark_background and _border_mean(image) > 127:
        image = 255 - image
    return image


def _open_checked(data: bytes, name: str, limits: Limits | None = None) -> Image.Image:
    """Open and fully decode the first frame, refusing what is not a small, whole image."""
    if len(data) == 0:
        raise ImageError(f"{name} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{name} is {len(data) / 2**20:.1f} MB, over the {MAX_IMAGE_BYTES // 2**20} MB limit")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # the guard on, whatever other code did to it
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut-off file is an error, not grey pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")  # "Corrupt EXIF data" etc.
        try:
            im = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise ImageError(_not_an_image(data, name)) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(_too_many_pixels(e, name)) from None
        except Exception as e:  # a header that parses halfway
            raise ImageError(_damaged(e, name)) from None
        width, height = im.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageError(f"{name} is {width}×{height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit")
        if width < 1 or height < 1:
            raise ImageError(f"{name} has no pixels ({width}×{height})")
        if limits is not None:
            limits.take_pixels(name, width * height)
        try:
            im.seek(0)  # animated GIF/WEBP/PNG/TIFF: the first frame
            im.load()
        except Exception as e:  # Pillow raises OSError, SyntaxError, EOFError, ValueError …
            raise ImageError(_damaged(e, name)) from None
        return _upright(im)


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # bad EXIF is metadata damage, not image damage
        return im


def _too_many_pixels(error: Exception, name: str) -> str:
    """Pillow refuses at the header and tells only the pixel count ("Image size (N pixels) …")."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return f"{name} is {size}, over the {MAX_IMAGE_PIXELS:,}-pixel limit"


def _not_an_image(data: bytes, name: str) -> str:
    head = data[:1024]
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return f"{name} is truncated or damaged: it starts like an image but cannot be read"
    for test, what, is_image in _OTHER_KINDS:
        if test(head):
            if is_image:
                return (f"{name} is not an image in a supported format ({', '.join(FORMATS)}): it looks like {what}; "
                        "convert it to PNG or JPEG")
            return f"{name} is not an image: it looks like {what}"
    if _looks_like_text(head):
        return f"{name} is not an image (text?)"
    return f"{name} is not an image in a supported format ({', '.join(FORMATS)})"


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 without control bytes (a cut-off last character allowed)."""
    text = head.decode("utf-8", errors="ignore")
    return len(text.encode()) >= len(head) - 3 and all(c >= " " or c in "\t\r\n" for c in text)


def _damaged(error: Exception, name: str) -> str:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, EOFError) or "truncated" in message.lower():
        return f"{name} is truncated"
    if "decompressed data too large" in message.lower():
        return f"{name} holds a metadata chunk that decompresses to too much data (a decompression bomb)"
    return f"{name} is damaged ({message})"


def preview(data: bytes, name: str, size: int = 72) -> np.ndarray | None:
    """A small RGB picture of a user's file for showing it (checked and converted like any image,
    so no odd mode or size reaches a renderer); None when it is not a usable image."""
    try:
        im = _flatten(_open_checked(data, name), dark_background=False).convert("RGB")
        im.thumbnail((size, size))
    except (ImageError, ValueError, OSError, TypeError, KeyError):
        return None
    return np.asarray(im, dtype=np.uint8)


FLAT_RANGE = 16  # grey levels: an image spanning fewer holds no shape worth forgetting


def image_notes(im: Image.Image, name: str, size: tuple[int, int]) -> list[str]:
    """Warnings for an image that decodes but may mean little to the model."""
    notes = []
    if im.width < size[0] or im.height < size[1]:
        notes.append(f"{name} is {im.width}×{im.height} px, smaller than the model's {size[0]}×{size[1]} input: "
                     "it was enlarged, and may mean little")
    grey = np.asarray(im.convert("L"), dtype=np.int16)
    if _flat(grey):
        low, high = int(grey.min()), int(grey.max())
        notes.append(f"{name} is almost flat (grey levels {low}–{high}): it shows nothing the model could recognise")
    return notes


def _flat(grey: np.ndarray) -> bool:
    """Fewer than 1 in 1,000 pixels differ from the median by FLAT_RANGE grey levels or more."""
    return bool((np.abs(grey - np.median(grey)) >= FLAT_RANGE).mean() < 0.001)


def fit_digit(pixels: np.ndarray, shape: tuple[int, int], box: float) -> np.ndarray:
    """Bright-on-dark ``pixels`` (H0, W0) → a (H, W) uint8 digit made the way digit sets make theirs:
    cropped to its ink, padded square (centred), scaled to ``box`` of the frame with area
    averaging, centred, and its brightest ink stretched to 255. A flat image is only resized."""
    height, width = shape
    values = pixels.astype(np.float64)
    low, high = np.percentile(values, 1), values.max()
    if _flat(pixels.astype(np.int16)) or high - low < FLAT_RANGE:
        return np.array(Image.fromarray(pixels).resize((width, height), Image.BOX), dtype=np.uint8)  # writable
    ink = values > low + 0.25 * (high - low)
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    crop = np.clip(values[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] - low, 0, None)
    side = max(crop.shape)
    square = np.zeros((side, side))
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    target = max(1, round(box * min(height, width)))
    scaled = np.asarray(Image.fromarray(square.astype(np.float32), "F").resize((target, target), Image.BOX))
    # centred by the ink's centre of mass, as MNIST does (a glyph that fills the frame cannot move)
    mass = scaled.sum()
    com_y = float((scaled.sum(axis=1) * np.arange(target)).sum() / mass) if mass else (target - 1) / 2
    com_x = float((scaled.sum(axis=0) * np.arange(target)).sum() / mass) if mass else (target - 1) / 2
    top = int(np.clip(round((height - 1) / 2 - com_y), 0, height - target))
    left = int(np.clip(round((width - 1) / 2 - com_x), 0, width - target))
    frame = np.zeros((height, width))
    frame[top:top + target, left:left + target] = scaled
    peak = frame.max()
    return np.clip(np.rint(frame * (255.0 / peak if peak > 0 else 1.0)), 0, 255).astype(np.uint8)


def _flatten(im: Image.Image, dark_background: bool) -> Image.Image:
    """Bring any Pillow mode to "L" or "RGB": transparency on the background, 16-bit to 8-bit."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _sixteen_bit_to_l(im)
    if im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    if im.mode == "1":
        return im.convert("L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        background = (0, 0, 0, 255) if dark_background else (255, 255, 255, 255)
        return Image.alpha_composite(Image.new("RGBA", im.size, background), im.convert("RGBA")).convert("RGB")
    if im.mode in ("L", "RGB"):
        return im
    return im.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    """16-bit grey (0..65535) → 8-bit, rounding 65535 to 255 (Pillow's own convert clips)."""
    values = np.asarray(im).astype(np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")


def _border_mean(image: torch.Tensor) -> float:
    """Mean of the outermost rows and columns, over channels: the background's brightness."""
    border = torch.cat([image[:, 0, :], image[:, -1, :], image[:, :, 0], image[:, :, -1]], dim=1)
    return float(border.to(torch.float32).mean())


def list_image_files(folder: Path, limit: int | None = None) -> list[Path]:
    """Regular image files under ``folder`` by extension, recursively, sorted; hidden files and
    folders are skipped and symbolic links to folders are not followed (no loops).

    With ``limit``, the walk stops after ``limit`` files (a folder of millions costs no more).
    """
    found = _image_files_under(folder)
    return sorted(itertools.islice(found, limit) if limit is not None else found)


def _image_files_under(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if not name.startswith(".") and path.suffix.lower() in EXTENSIONS and _is_regular(path):
                yield path


def _is_regular(path: Path) -> bool:
    """A regular file (following a symbolic link): never a FIFO, socket or device."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def read_image_file(path: Path, shape: tuple[int, int, int], dark_background: bool,
                    limits: Limits | None = None, digit_box: float | None = None) -> torch.Tensor:
    """``decode_image`` on a file, refusing an oversized one (or not a regular file) before reading it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ImageError(f"{path} is not a regular file")
            if info.st_size > MAX_IMAGE_BYTES:
                raise ImageError(f"{path} is {info.st_size / 2**20:.1f} MB, over the {MAX_IMAGE_BYTES // 2**20} MB limit")
            if limits is not None:
                limits.take_file(str(path), info.st_size)
            data = fh.read(MAX_IMAGE_BYTES + 1)  # a file that grew meanwhile is caught by decode_image
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    return decode_image(data, str(path), shape, dark_background, limits, digit_box)


def load_images(spec: str, shape: tuple[int, int, int], dark_background: bool, max_files: int = MAX_FILES,
                max_total_bytes: int = MAX_TOTAL_BYTES, max_total_pixels: int = MAX_TOTAL_PIXELS,
                digit_box: float | None = None) -> tuple[torch.Tensor, list[str]]:
    """Images from a file, a folder (recursively) or a glob pattern → ((N, C, H, W) uint8, names).

    Fails on the first file that is not a usable image, with a message naming it, and when the
    files are more than ``max_files`` or add up to more than ``max_total_bytes`` or
    ``max_total_pixels`` (checked from sizes and headers, before decoding).
    """
    files, names = _resolve(str(spec), max_files)
    limits = Limits(max_files, max_total_bytes, max_total_pixels)
    images = [read_image_file(path, shape, dark_background, limits, digit_box) for path in files]
    return torch.stack(images), names


def decode_images(files: Iterable[tuple[str, bytes]], shape: tuple[int, int, int], dark_background: bool,
                  max_files: int = MAX_FILES, max_total_bytes: int = MAX_TOTAL_BYTES,
                  max_total_pixels: int = MAX_TOTAL_PIXELS, digit_box: float | None = None,
                  notes: list[str] | None = None) -> tuple[torch.Tensor, list[str], list[str]]:
    """Uploaded (name, bytes) pairs → ((N, C, H, W) uint8, names, one message per skipped file).

    A file that is not a usable image is skipped with its message; going over the load's limits
    (count, total bytes, total pixels) raises ``ImageError``, as does having no usable image.
    ``digit_box`` and ``notes``: as in ``decode_image``.
    """
    files = list(files)
    if len(files) > max_files:
        raise LimitError(f"{len(files):,} files at once, over the limit of {max_files:,}; pick fewer")
    limits = Limits(max_files, max_total_bytes, max_total_pixels)
    images, names, skipped = [], [], []
    for name, data in files:
        limits.take_file(name, len(data))
        try:
            images.append(decode_image(data, name, shape, dark_background, limits, digit_box, notes))
            names.append(name)
        except LimitError:
            raise
        except ImageError as exc:
            skipped.append(str(exc))
    if not images:
        raise ImageError("no usable images" + (f": {skipped[0]}" if len(skipped) == 1 else f" among {len(files)} files"))
    return torch.stack(images), names, skipped


SCAN_FACTOR = 50  # a folder or glob is counted exactly up to this many times the file limit


def _resolve(spec: str, max_files: int = MAX_FILES) -> tuple[list[Path], list[str]]:
    """The files a spec names, and the names to show for them."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = _capped(_image_files_under(path), spec, max_files)
        if not files:
            raise ImageError(f"no images in folder {path} (looked for {' '.join(EXTENSIONS)})")
        return files, [f.relative_to(path).as_posix() for f in files]
    if path.exists():
        if not _is_regular(path):
            raise ImageError(f"{path} is not a regular file")
        return [path], [path.name]
    if glob.has_magic(spec):
        matches = (Path(p) for p in glob.iglob(str(path), recursive=True))
        files = _capped((f for f in matches if _is_regular(f)), spec, max_files)
        if not files:
            raise ImageError(f"no files match {spec}")
        return files, [str(f) for f in files]
    raise ImageError(f"no such file or folder: {path}")


def _capped(found: Iterator[Path], spec: str, max_files: int) -> list[Path]:
    """At most ``max_files`` paths, sorted; more is an error that counts them (up to a point)."""
    files = list(itertools.islice(found, max_files + 1))
    if len(files) > max_files:
        more = sum(1 for _ in itertools.islice(found, max_files * SCAN_FACTOR))
        count = f"{len(files) + more:,}" if more < max_files * SCAN_FACTOR else f"more than {len(files) + more:,}"
        raise LimitError(f"{spec} has {count} images, over the limit of {max_files:,}; pick fewer")
    return sorted(files)
