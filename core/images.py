"""Image files → uint8 tensors in a data set's format (forget images, uploads, image folders).

Files come from users, so every one is checked by its content, size and pixel count before it is
decoded, and every failure is an ``ImageError`` whose one-line message names the file.
"""
from __future__ import annotations

import glob
import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageError

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 50_000_000
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # the only decoders Pillow may try
EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")

_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")

# Pillow's own guard reads this global; lower it from ~89 M so a huge declared size is refused
# when the header is read, before any pixels are allocated.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def decode_image(data: bytes, name: str, shape: tuple[int, int, int], dark_background: bool) -> torch.Tensor:
    """Decode one image file's bytes to a uint8 (C, H, W) tensor of ``shape`` (C is 1 or 3).

    With ``dark_background`` a light-background image (mostly bright border) is inverted, so a
    black-on-white digit becomes white-on-black like MNIST.
    """
    channels, height, width = shape
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    im = _open_checked(data, name)
    im = _flatten(im, dark_background)
    im = im.convert("L" if channels == 1 else "RGB")
    if im.size != (width, height):
        shrinking = width <= im.width and height <= im.height
        im = im.resize((width, height), Image.BOX if shrinking else Image.BILINEAR)
    array = np.asarray(im, dtype=np.uint8).reshape(height, width, -1)  # (H, W, C)
    image = torch.from_numpy(array.transpose(2, 0, 1).copy())
    if dark_background and _border_mean(image) > 127:
        image = 255 - image
    return image


def _open_checked(data: bytes, name: str) -> Image.Image:
    """Open and fully decode the first frame, refusing what is not a small, whole image."""
    if len(data) == 0:
        raise ImageError(f"{name} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{name} is {len(data) / 2**20:.1f} MB, over the {MAX_IMAGE_BYTES // 2**20} MB limit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
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
        try:
            im.seek(0)  # animated GIF/WEBP/TIFF: the first frame
            im.load()
            return ImageOps.exif_transpose(im)
        except Exception as e:  # Pillow raises OSError, SyntaxError, EOFError, ValueError …
            raise ImageError(_damaged(e, name)) from None


def _too_many_pixels(error: Exception, name: str) -> str:
    """Pillow refuses at the header and tells only the pixel count ("Image size (N pixels) …")."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return f"{name} is {size}, over the {MAX_IMAGE_PIXELS:,}-pixel limit"


def _not_an_image(data: bytes, name: str) -> str:
    head = data[:512]
    if all(c >= 32 or c in b"\t\r\n" for c in head):  # no control bytes: text of some kind
        return f"{name} is not an image (text?)"
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return f"{name} is truncated or damaged: it starts like an image but cannot be read"
    return f"{name} is not an image in a supported format ({', '.join(FORMATS)})"


def _damaged(error: Exception, name: str) -> str:
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return f"{name} is truncated"
    return f"{name} is damaged ({error})"


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


def list_image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` by extension, recursively, sorted, hidden ones skipped."""
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).parts
        if any(part.startswith(".") for part in relative):
            continue
        if path.suffix.lower() in EXTENSIONS and path.is_file():
            files.append(path)
    return sorted(files)


def read_image_file(path: Path, shape: tuple[int, int, int], dark_background: bool) -> torch.Tensor:
    """``decode_image`` on a file, refusing an oversized one before reading it."""
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"{path} is {size / 2**20:.1f} MB, over the {MAX_IMAGE_BYTES // 2**20} MB limit")
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    return decode_image(data, str(path), shape, dark_background)


def load_images(spec: str, shape: tuple[int, int, int], dark_background: bool,
                max_files: int = 2000) -> tuple[torch.Tensor, list[str]]:
    """Images from a file, a folder (recursively) or a glob pattern → ((N, C, H, W) uint8, names)."""
    files, names = _resolve(str(spec))
    if len(files) > max_files:
        raise ImageError(f"{spec} has {len(files):,} images, over the limit of {max_files:,}; pick fewer")
    images = [read_image_file(path, shape, dark_background) for path in files]
    return torch.stack(images), names


def _resolve(spec: str) -> tuple[list[Path], list[str]]:
    """The files a spec names, and the names to show for them."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path], [path.name]
    if path.is_dir():
        files = list_image_files(path)
        if not files:
            raise ImageError(f"no images in folder {path} (looked for {' '.join(EXTENSIONS)})")
        return files, [f.relative_to(path).as_posix() for f in files]
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise ImageError(f"no files match {spec}")
        return files, [str(f) for f in files]
    raise ImageError(f"no such file or folder: {path}")
