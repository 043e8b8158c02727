"""Shipped cache entries (``assets/``): a fresh machine starts from them instead of training.

``assets/manifest.json`` lists every file under ``assets/``: its path there, the SHA-256 of its
bytes, its size, what it is in words, and, for a cache entry, the ``(namespace, key)`` of the
``TensorCache`` entry it is a byte copy of. When ``TensorCache.get`` finds no file in the cache it
asks ``seed_bytes``: a listed entry is read and its SHA-256 checked against the manifest (the cache
then checks its own header checksum too) before it is written into the cache and used. An asset
whose hash does not match is never trusted: the cache warns, naming the file, and the caller trains
or computes as if there were no asset.

``$LFSSD_ASSETS_DIR`` names another assets folder (default: ``assets/`` at the repository's root);
``LFSSD_ASSETS=0`` turns seeding off. The manifest is parsed once per process (again only when the
file itself changes: one ``stat`` per cache miss), so a miss with nothing shipped stays cheap.
``python -m core assets`` lists, checks and rebuilds the folder (``core.cli.assets``).

Standard library only: ``core.cache`` imports this module, never the other way round.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
REPO = Path(__file__).resolve().parents[1]
_OFF = ("0", "false", "no", "off")


def assets_dir() -> Path:
    """``$LFSSD_ASSETS_DIR``, else ``<repo>/assets``."""
    return Path(os.environ.get("LFSSD_ASSETS_DIR") or REPO / "assets")


def enabled() -> bool:
    """Whether a cache miss may be served from the assets (``LFSSD_ASSETS=0`` turns it off)."""
    return os.environ.get("LFSSD_ASSETS", "1").strip().lower() not in _OFF


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One file of the assets folder, as the manifest lists it."""

    path: str  # relative to the assets folder, with forward slashes
    sha256: str
    size: int
    what: str
    namespace: str | None = None  # a cache entry's namespace and key; None for other files
    key: str | None = None
    step: str | None = None  # the rebuild step that makes it (``core.cli.assets``)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Manifest:
    folder: Path
    entries: tuple[Entry, ...] = ()
    error: str | None = None  # why the manifest cannot be used (then it holds no entries)
    by_key: dict = field(default_factory=dict, repr=False, compare=False)  # (namespace, key) -> Entry

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME


def manifest_bytes(entries) -> bytes:
    """The manifest file for ``entries``: sorted by path, sorted keys, fixed indent, newline at the end."""
    files = [e.as_dict() for e in sorted(entries, key=lambda e: e.path)]
    return (json.dumps({"format": MANIFEST_FORMAT, "files": files}, sort_keys=True, indent=2, ensure_ascii=False)
            + "\n").encode("utf-8")


def parse_manifest(folder: Path, data: bytes) -> Manifest:
    """The manifest in ``data``; a malformed one is a ``Manifest`` with ``error`` set and no entries."""
    try:
        raw = json.loads(data.decode("utf-8"))
        if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT or not isinstance(raw.get("files"), list):
            raise ValueError(f"not a format-{MANIFEST_FORMAT} manifest")
        entries = tuple(_entry(item) for item in raw["files"])
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        return Manifest(folder, error=f"{folder / MANIFEST_NAME} cannot be read ({exc}): shipped assets not used")
    by_key = {(e.namespace, e.key): e for e in entries if e.namespace is not None and e.key is not None}
    return Manifest(folder, entries, by_key=by_key)


def _entry(item) -> Entry:
    if not isinstance(item, dict):
        raise ValueError("an entry is not an object")
    path = item["path"]
    parts = PurePosixPath(path).parts if isinstance(path, str) else ()
    if not parts or PurePosixPath(path).is_absolute() or any(p in ("..", ".") for p in parts) or "\\" in path:
        raise ValueError(f"bad path {path!r}")
    sha, size = item["sha256"], item["size"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise ValueError(f"bad SHA-256 for {path}")
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"bad size for {path}")
    namespace, key = item.get("namespace"), item.get("key")
    for name in (namespace, key):
        if name is not None and (not isinstance(name, str) or not name or "/" in name or name.startswith(".")):
            raise ValueError(f"bad cache namespace or key for {path}")
    return Entry(path, sha, size, str(item.get("what", "")), namespace, key, item.get("step"))


_lock = threading.Lock()
_loaded: dict[str, tuple[tuple, Manifest]] = {}  # folder -> (the manifest file's stat, parsed)


def load_manifest(folder: Path | None = None) -> Manifest | None:
    """The manifest of ``folder`` (default ``assets_dir()``), or None when it has none.

    Parsed once per process; a ``stat`` per call notices when the file was replaced.
    """
    folder = Path(folder) if folder is not None else assets_dir()
    path = folder / MANIFEST_NAME
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)
    with _lock:
        known = _loaded.get(str(folder))
        if known is not None and known[0] == stamp:
            return known[1]
    try:
        parsed = parse_manifest(folder, path.read_bytes())
    except OSError as exc:
        parsed = Manifest(folder, error=f"{path} cannot be read ({exc.strerror or exc}): shipped assets not used")
    with _lock:
        _loaded[str(folder)] = (stamp, parsed)
    return parsed


def seed_bytes(namespace: str, key: str) -> tuple[bytes | None, str | None]:
    """(the bytes of the shipped file standing for cache entry ``namespace/key``, checked against the
    manifest's SHA-256 and size, or None; a warning for the user, or None).

    None without a warning: seeding is off, there is no manifest, or it lists no such entry.
    """
    if not enabled():
        return None, None
    manifest = load_manifest()
    if manifest is None:
        return None, None
    if manifest.error:
        return None, manifest.error
    entry = manifest.by_key.get((namespace, key))
    if entry is None:
        return None, None
    path = manifest.folder / entry.path
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, (f"the asset {path}, listed in {manifest.path}, cannot be read ({exc.strerror or exc}); "
                      "recomputing")
    if len(data) != entry.size or sha256_hex(data) != entry.sha256:
        return None, f"the asset {path} does not match its SHA-256 in {manifest.path}: not used; recomputing"
    return data, None


def listed(namespace: str, key: str) -> bool:
    """Whether seeding is on and the manifest lists this cache entry (its file is not read)."""
    if not enabled():
        return False
    manifest = load_manifest()
    return manifest is not None and (namespace, key) in manifest.by_key
