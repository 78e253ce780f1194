"""Bytes under keys: the tiny backends (the object store on top is `cas.objectstore`).

A backend knows a handful of verbs (write, read, exists, list, delete, and append
where the medium allows it) and nothing about hashing or runs. Keys are relative
``/``-separated paths whose every segment is checked, and the local backend also
checks the normalised path, so no key can reach outside the root. (Symbolic
links planted inside a repository are followed: the root is trusted.)

On S3 every verb is one request, without the HEADs and LISTs some s3fs calls add
(`cas.s3`). fsspec (and through it s3fs) is imported only here.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from cas import s3
from cas.digest import Digest
from cas.errors import IntegrityError, InvalidInputError, NotFoundError

TEMP_SUFFIX = ".tmp"
_CREATE_LOCK = threading.Lock()
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


def check_key(key: str) -> str:
    """Refuse any key that is not a relative path of safe segments."""
    parts = key.split("/")
    for part in parts:
        if _SEGMENT.fullmatch(part) is None or ".." in part:
            raise InvalidInputError(f"invalid storage key {key[:120]!r}: unsafe segment {part!r}")
    return key


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of our temporary files (``.name.token.tmp``)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


class Backend(Protocol):
    """What the layers above need from a storage medium."""

    url: str
    supports_append: bool

    def write(self, key: str, data: bytes) -> None:
        """Store `data` under `key` atomically, replacing what was there."""

    def create(self, key: str, data: bytes) -> bool:
        """Write `data` under `key` only if nothing is there; whether it did (exclusive
        across processes on a local disk and on S3, within the process elsewhere)."""

    def read(self, key: str) -> bytes:
        """The bytes under `key`; `NotFoundError` if absent."""

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of `key` (one ranged GET on S3)."""

    def exists(self, key: str) -> bool:
        """Whether `key` holds bytes."""

    def size(self, key: str) -> int:
        """Stored size of `key` in bytes; `NotFoundError` if absent."""

    def list(self, prefix: str) -> Iterator[str]:
        """Every key below the folder `prefix` ("" for the root), temporaries included."""

    def children(self, prefix: str) -> builtins.list[str]:
        """Names directly inside the folder `prefix` (files and folders)."""

    def delete(self, keys: Iterable[str]) -> None:
        """Remove `keys`; absent ones are ignored."""

    def append(self, key: str, data: bytes) -> None:
        """Append `data` (whole lines) to `key`; only where `supports_append`."""

    def sync(self, key: str) -> None:
        """Make earlier appends to `key` durable."""


class LocalBackend:
    """A folder on the local disk: temp file, fsync, rename, fsync the folder."""

    supports_append = True

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root)
        self.fsync = fsync
        self._checked_tails: set[str] = set()

    def _path(self, key: str) -> str:
        # check_key admits only plain segments (no "..", no leading "/" or "."), so the
        # joined path stays under the root lexically; normpath proves it without the
        # syscalls of resolve().
        joined = os.path.normpath(f"{self.url}{os.sep}{check_key(key)}")
        if not joined.startswith(self.url + os.sep):
            raise InvalidInputError(f"invalid storage key {key!r}: leaves the repository root")
        return joined

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        folder, name = os.path.split(path)
        temp = f"{folder}{os.sep}.{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            self._make_folders(folder)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        if self.fsync:
            _fsync_dir(folder)

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        self._make_folders(os.path.dirname(path))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        return True

    def renew(self, key: str) -> bool:
        """Set `key`'s mtime to now; False if it is absent (atomic against `delete_if_older`)."""
        try:
            os.utime(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def delete_if_older(self, key: str, cutoff: float) -> bool | None:
        """Delete `key` unless its mtime is at or after `cutoff`.

        True: deleted; False: kept, as renewed; None: it was not there.

        The file is renamed away first and its mtime read after: a `renew` that came
        before the rename is seen (the file is put back), one after it fails, so the
        renewer writes the file again. There is no moment where both miss.
        """
        path = self._path(key)
        folder, name = os.path.split(path)
        trash = f"{folder}{os.sep}.{name}.gc-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return None
        if os.stat(trash).st_mtime >= cutoff:
            os.replace(trash, path)
            return False
        os.unlink(trash)
        return True

    def delete_temporary(self, key: str) -> bool:
        """Remove a temporary left by an interrupted write (its name fails `check_key`)."""
        folder, name = key.rsplit("/", 1)
        if not is_temp_name(name):
            raise InvalidInputError(f"not a temporary: {key!r}")
        try:
            os.unlink(f"{self._path(folder)}{os.sep}{name}")
        except FileNotFoundError:
            return False
        return True

    def touch(self, key: str) -> None:
        """Create an empty file at `key` if absent, without fsync (for hints only)."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        except FileNotFoundError:
            self._make_folders(os.path.dirname(path))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)

    def read(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as file:
                return file.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"no such key {key!r} in {self.url}") from None

    def read_range(self, key: str, start: int, end: int) -> bytes:
        try:
            with open(self._path(key), "rb") as file:
                file.seek(start)
                return file.read(end - start)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"no such key {key!r} in {self.url}") from None

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def size(self, key: str) -> int:
        try:
            info = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise NotFoundError(f"no such key {key!r} in {self.url}")
        return info.st_size

    def _folder(self, prefix: str) -> str:
        return self._path(prefix) if prefix else self.url

    def list(self, prefix: str) -> Iterator[str]:
        for folder, _dirs, files in os.walk(self._folder(prefix)):
            rel = os.path.relpath(folder, self.url).replace(os.sep, "/")
            for name in files:
                yield name if rel == "." else f"{rel}/{name}"

    def children(self, prefix: str) -> builtins.list[str]:
        try:
            return [entry.name for entry in os.scandir(self._folder(prefix))]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(key))

    def append(self, key: str, data: bytes) -> None:
        path = self._path(key)
        # Read-write: the tail check reads the last byte before the first append.
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            self._make_folders(os.path.dirname(path))
            fd = os.open(path, flags, 0o644)
        try:
            if key not in self._checked_tails:
                _repair_torn_tail(fd)
                self._checked_tails.add(key)
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                _write_all(fd, data)
            except BaseException:
                # A half-written line must not stay in front of the next append.
                self._checked_tails.discard(key)
                with contextlib.suppress(OSError):
                    os.truncate(fd, end)
                raise
        finally:
            os.close(fd)

    def _make_folders(self, folder: str) -> None:
        """Create `folder` and missing parents, each made durable in its parent."""
        missing = []
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(path)
            if self.fsync:
                _fsync_dir(os.path.dirname(path))

    def sync(self, key: str) -> None:
        if not self.fsync:
            return
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(os.path.dirname(path))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _repair_torn_tail(fd: int) -> None:
    """Cut a line a crashed writer left half-written, so the next append starts clean."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return
    block = 1 << 20
    cut = 0
    position = end
    while position > 0:  # backwards, a block at a time, to the last newline
        start = max(0, position - block)
        newline = os.pread(fd, position - start, start).rfind(b"\n")
        if newline >= 0:
            cut = start + newline + 1
            break
        position = start
    os.truncate(fd, cut)


class FsspecBackend:
    """Any fsspec filesystem (memory, S3 through s3fs, …): one PUT per write.

    On S3 every verb is one request (`cas.s3`: no hidden HEADs or LISTs), and
    listings page lazily, `listing_page` keys a request, so a reader can stop early.
    """

    supports_append = False

    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec

        self.fs, root = fsspec.url_to_fs(url, **storage_options)
        self.root = root.rstrip("/")
        self.url = url
        self.s3 = s3.is_s3(self.fs)
        self.listing_page = s3.PAGE if self.s3 else 0  # keys a listing request; 0: one call
        # One GET: a cat_file allowed to read concurrently first HEADs the object's size.
        self._read_options: dict[str, Any] = {"max_concurrency": 1} if self.s3 else {}

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def _folder(self, prefix: str) -> str:
        return self._path(prefix) if prefix else self.root

    def write(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def create(self, key: str, data: bytes) -> bool:
        if self.s3:
            return s3.create(self.fs, self._path(key), data)
        with _CREATE_LOCK:  # memory and the like live in this process: exclusive here
            if self.exists(key):
                return False
            self.write(key, data)
            return True

    def read(self, key: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._path(key), **self._read_options)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"no such key {key!r} in {self.url}") from None
        return data

    def read_range(self, key: str, start: int, end: int) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._path(key), start=start, end=end)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"no such key {key!r} in {self.url}") from None
        return data

    def _info(self, key: str) -> dict[str, Any] | None:
        """The file's info dict, or None if `key` holds no file (on S3 one HEAD)."""
        path = self._path(key)
        if self.s3:
            return s3.head(self.fs, path)
        try:
            info: dict[str, Any] = self.fs.info(path)
        except FileNotFoundError:
            return None
        return info if info.get("type") == "file" else None

    def exists(self, key: str) -> bool:
        return self._info(key) is not None

    def size(self, key: str) -> int:
        info = self._info(key)
        if info is None:
            raise NotFoundError(f"no such key {key!r} in {self.url}")
        return int(info["size"])

    def find(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(key, info)`` of every file below the folder `prefix`, in key order."""
        folder = self._folder(prefix)
        if self.s3:
            found: Iterable[tuple[str, dict[str, Any]]] = (
                (info["name"], info) for info in s3.listing(self.fs, folder, page=self.listing_page)
            )
        else:
            try:
                found = sorted(self.fs.find(folder, detail=True).items())
            except FileNotFoundError:
                return
        for path, info in found:
            if info.get("type", "file") == "file":
                yield _relative(str(path), self.root), info

    def list(self, prefix: str) -> Iterator[str]:
        for key, _info in self.find(prefix):
            yield key

    def children(self, prefix: str) -> builtins.list[str]:
        try:
            if self.s3:
                entries = [
                    e["name"] for e in s3.listing(self.fs, self._folder(prefix), delimiter="/")
                ]
            else:
                entries = self.fs.ls(self._folder(prefix), detail=False)
        except FileNotFoundError:
            return []
        return [str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries]

    def delete(self, keys: Iterable[str]) -> None:
        paths = [self._path(key) for key in keys]
        if not paths:
            return
        try:
            self.fs.rm(paths)  # one batched request per 1,000 keys on S3 (DeleteObjects)
        except FileNotFoundError:
            # Some filesystems (memory) stop at the first absent key: finish one by one.
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)

    def append(self, key: str, data: bytes) -> None:
        raise NotImplementedError(f"{self.url} does not support append")

    def sync(self, key: str) -> None:
        """Each write is already durable (one PUT)."""


def _relative(path: str, root: str) -> str:
    path, root = path.lstrip("/"), root.lstrip("/")
    return path[len(root) + 1 :] if root else path


def refresh(backend: Backend, key: str) -> bool:
    """Whether `key` exists; on a local folder also renew its mtime (a dedup hit, for GC).

    The `os.utime` is the existence check itself, so it is atomic against GC's rename
    of the object: either GC sees the fresh mtime and keeps the object, or the
    utime fails and the caller writes the object again. On object stores renewing
    would cost a COPY per hit; there GC relies on its grace period and re-check
    (docs/design.md §10).
    """
    if isinstance(backend, LocalBackend):
        return backend.renew(key)
    return backend.exists(key)


def list_times(backend: Backend, prefix: str) -> Iterator[tuple[str, float, int]]:
    """``(key, mtime, size)`` of every file below `prefix`: one listing, not a call per key.

    Locally a scandir per folder; on fsspec `FsspecBackend.find` (on S3 paginated
    ListObjectsV2 of the prefix). An mtime that cannot be read is reported as now.
    """
    import time

    if isinstance(backend, LocalBackend):
        for folder, _dirs, _files in os.walk(backend._folder(prefix)):
            rel = os.path.relpath(folder, backend.url).replace(os.sep, "/")
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(folder):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.is_file(follow_symlinks=False):
                            info = entry.stat(follow_symlinks=False)
                            key = entry.name if rel == "." else f"{rel}/{entry.name}"
                            yield key, info.st_mtime, info.st_size
        return
    if isinstance(backend, FsspecBackend):
        for key, found in backend.find(prefix):
            yield key, _info_mtime(found) or time.time(), int(found["size"])
        return
    now = time.time()
    for key in backend.list(prefix):
        yield key, now, backend.size(key)


def modified_at(backend: Backend, key: str) -> float | None:
    """When `key` was last written (seconds since the epoch, by the storage's clock);
    None if it is absent or the storage does not say. On S3 one HEAD."""
    if isinstance(backend, LocalBackend):
        try:
            return os.stat(backend._path(key)).st_mtime
        except FileNotFoundError:
            return None
    if isinstance(backend, FsspecBackend):
        info = backend._info(key)
        return None if info is None else _info_mtime(info)
    return None


def _info_mtime(info: dict[str, Any]) -> float | None:
    """Seconds since the epoch from an fsspec info dict (S3, memory, local, …)."""
    for name in ("LastModified", "mtime", "last_modified", "created"):
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(ValueError, TypeError):
            from datetime import datetime

            return datetime.fromisoformat(str(value)).timestamp()
    return None


def open_backend(url: str, *, fsync: bool = True, **storage_options: Any) -> Backend:
    """A backend for a local path (or ``file://`` URL) or any fsspec URL."""
    if "://" not in url or url.startswith("file://"):
        return LocalBackend(url.removeprefix("file://"), fsync=fsync)
    return FsspecBackend(url, **storage_options)


_codecs = threading.local()


def compress(data: bytes) -> bytes:
    """A zstd frame of `data` (level 1: most of level 3's ratio, faster; one per thread)."""
    import zstandard

    if not hasattr(_codecs, "compressor"):
        _codecs.compressor = zstandard.ZstdCompressor(level=1)
    compressed: bytes = _codecs.compressor.compress(data)
    return compressed


def decompress(data: bytes, digest: Digest, key: str) -> bytes:
    """The bytes in a zstd frame; `IntegrityError` naming `digest` and `key` if it is damaged."""
    import zstandard

    try:
        if not hasattr(_codecs, "decompressor"):
            _codecs.decompressor = zstandard.ZstdDecompressor()
        plain: bytes = _codecs.decompressor.decompress(data)
    except zstandard.ZstdError as error:
        raise IntegrityError(
            f"object {digest.hex} is corrupt: {error}", digest=digest.hex, location=key
        ) from None
    return plain
