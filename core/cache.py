"""A content-addressed disk cache of tensor dicts (safetensors), safe against crashes and rot.

Writes go to a temporary file that is ``os.replace``d into place, so a reader never sees half a
file. Each file carries a SHA-256 of its tensors in its header; a file whose content does not
match is deleted and treated as a miss, so the caller recomputes. A cache folder that cannot be
written degrades to memory, with a warning the caller can show.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

FORMAT_VERSION = "1"


def cache_root() -> Path:
    """``$LFSSD_CACHE_DIR``, else ``~/.cache/lfssd-explorer``."""
    return Path(os.environ.get("LFSSD_CACHE_DIR", Path.home() / ".cache" / "lfssd-explorer"))


def make_key(*parts: object) -> str:
    """A stable key from plain values (strings, numbers, tuples)."""
    return hashlib.sha256(repr((FORMAT_VERSION,) + parts).encode()).hexdigest()[:24]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class TensorCache:
    """``get``/``put`` dicts of CPU tensors under ``<root>/<namespace>/<key>.safetensors``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_root()
        self.warnings: list[str] = []
        self._memory: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    def path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / f"{key}.safetensors"

    def get(self, namespace: str, key: str) -> dict[str, torch.Tensor] | None:
        if (namespace, key) in self._memory:
            return self._memory[(namespace, key)]
        path = self.path(namespace, key)
        if not path.exists():
            return None
        tensors = _read_verified(path)
        if tensors is None:
            self.warnings.append(f"discarded a corrupt cache entry: {path.name}")
            _remove_quietly(path)
        return tensors

    def put(self, namespace: str, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        header = {**(metadata or {}), "sha256": tensors_digest(tensors), "format": FORMAT_VERSION}
        try:
            with atomic_path(self.path(namespace, key)) as tmp:
                save_file(tensors, str(tmp), metadata=header)
        except OSError as exc:
            self._memory[(namespace, key)] = tensors
            self.warnings.append(f"cache folder {self.root} is not writable ({exc.strerror}); keeping results in memory")


def _read_verified(path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            expected = (fh.metadata() or {}).get("sha256")
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except Exception:  # any parse failure means a damaged file
        return None
    return tensors if expected and tensors_digest(tensors) == expected else None


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
