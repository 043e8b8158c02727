"""A content-addressed disk cache of tensor dicts (safetensors), safe against crashes and rot.

Writes go to a temporary file beside the entry, are flushed to disk, and only then
``os.replace``d into place, so a reader never sees half a file, even after the writer was killed
(a killed writer leaves only a ``.<name>.<random>.tmp`` file, which no reader opens and a later
writer removes once it is stale). Each file carries a SHA-256 of its tensors in its header; a file
that does not parse, or whose content does not match, is deleted and treated as a miss, so the
caller recomputes. A cache folder that cannot be written (read-only, full, not a folder) degrades
to memory for this process, with a warning the caller shows.

A miss (no file, or a damaged one discarded) is served from the shipped assets when they hold the
entry (``core.assets``): the asset's bytes must match the SHA-256 in ``assets/manifest.json`` and
its own header checksum, or it is not used (with a warning) and the caller recomputes.

The bytes written are the same for the same tensors and metadata (the header's metadata in sorted
key order), so an entry rebuilt elsewhere can be compared byte for byte.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

FORMAT_VERSION = "1"
WRITE_CHUNK = 64 * 1024  # bytes per write call; ``on_write`` reports after each
STALE_TMP_SECONDS = 600  # a temporary file this old belongs to a writer that died

# (temporary path, bytes written so far, total bytes): progress of one cache or checkpoint write.
WriteProgress = Callable[[Path, int, int], None]


def cache_root() -> Path:
    """``$LFSSD_CACHE_DIR``, else ``~/.cache/lfssd-explorer``."""
    return Path(os.environ.get("LFSSD_CACHE_DIR", Path.home() / ".cache" / "lfssd-explorer"))


def make_key(*parts: object) -> str:
    """A stable key from plain values (strings, numbers, tuples)."""
    return hashlib.sha256(repr((FORMAT_VERSION,) + parts).encode()).hexdigest()[:24]


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _commit(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` to disk, then move it into place and flush the folder (best effort)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename itself is atomic
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place atomically."""
    tmp = _temp_beside(Path(path))
    try:
        yield tmp
        _commit(tmp, Path(path))
    finally:
        _remove_quietly(tmp)


def write_atomic(path: str | Path, data: bytes, on_write: WriteProgress | None = None) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``.

    Raises ``OSError`` (read-only folder, full disk, …); the temporary file is removed then.
    """
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with open(tmp, "wb") as fh:
            view = memoryview(data)
            for start in range(0, len(view), WRITE_CHUNK):
                fh.write(view[start:start + WRITE_CHUNK])
                if on_write is not None:
                    fh.flush()
                    on_write(tmp, min(start + WRITE_CHUNK, len(view)), len(view))
        _commit(tmp, path)
    finally:
        _remove_quietly(tmp)


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors bytes of CPU copies of ``tensors``: the same bytes for the same input."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return _canonical_metadata(data) if metadata else data


def _canonical_metadata(data: bytes) -> bytes:
    """``data`` with its header's metadata in sorted key order. safetensors writes the metadata in
    the order of a hash map seeded anew in each process, so the same tensors would otherwise give
    different bytes from run to run. Only the header changes (re-padded with spaces to 8 bytes, as
    safetensors pads it); tensor offsets count from the end of the header and stay valid."""
    import json

    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 on_write: WriteProgress | None = None) -> None:
    """Write a safetensors file atomically; a failed write raises ``OSError`` and leaves no file."""
    write_atomic(path, serialize(tensors, metadata), on_write)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class TensorCache:
    """``get``/``put`` dicts of CPU tensors under ``<root>/<namespace>/<key>.safetensors``.

    ``warnings`` collects what the user should see (entries discarded as damaged, a folder that
    could not be written, a shipped asset refused); ``on_write`` reports the progress of each file
    written. ``assets=False``: a miss is never served from the shipped assets (``core.assets``;
    ``LFSSD_ASSETS=0`` turns them off for every cache).
    """

    def __init__(self, root: str | Path | None = None, on_write: WriteProgress | None = None, assets: bool = True):
        self.root = Path(root) if root is not None else cache_root()
        self.on_write = on_write
        self.assets = assets
        self.warnings: list[str] = []
        self._memory: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    def path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / f"{key}.safetensors"

    def get(self, namespace: str, key: str) -> dict[str, torch.Tensor] | None:
        if (namespace, key) in self._memory:
            return dict(self._memory[(namespace, key)])
        path = self.path(namespace, key)
        if not path.is_file():
            return self._from_assets(namespace, key, path)
        tensors = _read_verified(path)
        if tensors is None:
            self._warn(f"discarded a corrupt cache entry ({namespace}/{path.name}); recomputing it")
            _remove_quietly(path)
            return self._from_assets(namespace, key, path)
        return tensors

    def has(self, namespace: str, key: str) -> bool:
        """Whether ``get`` finds the entry without computing it: a file in this cache, or a shipped
        asset (not read here: a damaged one is found out, and refused, by ``get``)."""
        if (namespace, key) in self._memory or self.path(namespace, key).is_file():
            return True
        if not self.assets:
            return False
        from core.assets import listed

        return listed(namespace, key)

    def _from_assets(self, namespace: str, key: str, path: Path) -> dict[str, torch.Tensor] | None:
        """The shipped asset standing for this entry, checked twice (the manifest's SHA-256 of the
        file, then the header's own checksum) and copied into the cache; None when there is none
        or it is refused (with a warning naming the file)."""
        if not self.assets:
            return None
        from core.assets import seed_bytes

        data, warning = seed_bytes(namespace, key)
        if warning:
            self._warn(warning)
        if data is None:
            return None
        tensors = _verified(data)
        if tensors is None:
            self._warn(f"the asset for {namespace}/{path.name} matches its SHA-256 in the manifest but not its own "
                       "header checksum: not used; recomputing")
            return None
        try:
            _remove_stale_temporaries(path.parent)
            write_atomic(path, data, self.on_write)
        except OSError as exc:
            self._memory[(namespace, key)] = tensors  # freshly loaded: nobody else holds them
            self._warn(f"cannot write to the cache folder {self.root} ({exc.strerror or exc}); "
                       "keeping results in memory for this run only")
            return dict(tensors)
        return tensors

    def put(self, namespace: str, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        header = {**(metadata or {}), "sha256": tensors_digest(tensors), "format": FORMAT_VERSION}
        path = self.path(namespace, key)
        try:
            _remove_stale_temporaries(path.parent)
            write_atomic(path, serialize(tensors, header), self.on_write)
        except OSError as exc:
            # clones: a CPU tensor's .cpu() is itself, and the caller's tensors may be a live model's
            self._memory[(namespace, key)] = {k: v.clone() for k, v in tensors.items()}
            self._warn(f"cannot write to the cache folder {self.root} ({exc.strerror or exc}); "
                       "keeping results in memory for this run only")

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


def _read_verified(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors in ``path`` if it parses and matches the SHA-256 in its header, else None.

    The file is read into memory whole, never memory-mapped: tensors mapped from the file would
    change (or crash the process with SIGBUS) if the file were later rewritten or truncated in
    place, after the checksum was verified.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return _verified(data)


def _verified(data: bytes) -> dict[str, torch.Tensor] | None:
    """The tensors in safetensors ``data`` if it parses and matches the SHA-256 in its header, else None."""
    from safetensors.torch import load

    try:
        metadata = read_header(data).get("__metadata__") or {}
        expected = metadata.get("sha256")
        if not expected or metadata.get("format") != FORMAT_VERSION:
            return None
        tensors = load(data)
    except Exception:  # any read or parse failure means a damaged (or unreadable) file
        return None
    return tensors if tensors_digest(tensors) == expected else None


def read_header(data: bytes) -> dict:
    """The JSON header of safetensors bytes; ``ValueError`` when its length or JSON is wrong."""
    import json

    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError(f"header of {size} bytes in a file of {len(data)}")
    header = json.loads(data[8:8 + size])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files left by writers that were killed (old enough not to be live)."""
    if not folder.is_dir():
        return
    cutoff = time.time() - STALE_TMP_SECONDS
    for tmp in folder.glob(".*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except OSError:
            pass


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
