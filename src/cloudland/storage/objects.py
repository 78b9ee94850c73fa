"""The object store engine: buckets and objects, blobs on disk, metadata in SQLite.

Layout under `root`:

- `objects.db` — SQLite (WAL): buckets, objects, multipart uploads and their parts.
- `blobs/ab/<id>` — one immutable file per object body or uploaded part, named by a
  random hex id (`ab` = its first two characters). Keys never become paths, so no key
  (`../../etc/passwd` included) can reach outside `root`.
- `tmp/` — bodies being received. A `BlobWriter` fills one; `commit` flushes, fsyncs
  and renames it into `blobs/`, then replaces the object's row in one transaction and
  unlinks the blob it replaced. Readers that already opened the old blob keep reading
  it (POSIX unlink semantics).

Small bodies (at most `inline_max` bytes, 128 KiB by default) never become files: the
writer keeps them in memory and the commit stores them in the object's row (as MinIO
keeps small objects inline in their metadata). One write, one fsync (SQLite's) instead
of a temp file, its fsync, a rename, a directory fsync and the commit.

Crash safety: a body is visible only once its row commits, and the row names a blob
that was fsynced and renamed before. A crash before the rename leaves a file in `tmp/`;
a crash between rename and commit (or between commit and unlinking the replaced blob)
leaves a blob no row references. Opening the store empties `tmp/` and deletes those
orphans, so after a kill -9 there is no object, no torn object and no stray file.

Concurrency: writes go through one SQLite connection guarded by a lock; every call
holds it only for a few indexed statements (never while streaming bytes). Reads use a
connection of their own per thread (WAL: a reader sees the last commit and never waits
for a commit's fsync). Concurrent writers on one key each fill their own temp file;
commits are serialized, so the last complete write wins and no object ever mixes two
bodies. One `ObjectStore` per root at a time (an flock on
`root/lock` enforces it), since opening cleans files a live store may be writing.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import io
import itertools
import logging
import os
import queue
import secrets
import shutil
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import orjson

from cloudland.storage import checksums as sums
from cloudland.storage import cors
from cloudland.storage.cors import Rule as CorsRule
from cloudland.storage.errors import (
    S3Error,
    invalid_argument,
    invalid_request,
    no_such_bucket,
    no_such_key,
    no_such_upload,
)

MIN_PART_SIZE = 5 * 1024 * 1024
"""Every part of a multipart upload but the last must be at least this big (S3: 5 MiB)."""
MAX_PART_NUMBER = 10_000
MAX_KEY_BYTES = 1024
COPY_CHUNK = 1024 * 1024
INLINE_MAX = 128 * 1024
"""Bodies up to this size are stored in their object's row instead of a blob file."""

SUPPORTED_CHECKSUMS: frozenset[str] = sums.ALGORITHMS
"""Checksum algorithms a BlobWriter can compute (lowercase, as in x-amz-checksum-<name>)."""

Check = Callable[["ObjectInfo | None"], None]

log = logging.getLogger("cloudland.storage")


@dataclass(frozen=True)
class BucketInfo:
    name: str
    created: float
    region: str
    public_read: bool
    cors: tuple[CorsRule, ...] | None = None  # its CORS rules; None: no configuration


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str  # without quotes: hex md5, or "<md5 of part md5s>-N" for multipart
    last_modified: float
    content_type: str
    metadata: dict[str, str]
    headers: dict[str, str]
    checksums: dict[str, str]
    parts: list[int]  # each part's size, for an object made by a multipart upload
    blob: str  # "" when the body is inline
    version_id: str = "null"
    # A COMPOSITE checksum's parts: each part's checksum of the object's algorithm (S3
    # answers them for GET ?partNumber and GetObjectAttributes); [] for any other object.
    part_checksums: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # its tag set (at most 10), in order
    # The body itself when it is stored in the row (small objects): read along with a
    # single object (head, open_object), never by listings.
    inline: bytes | None = field(default=None, repr=False, compare=False)


class Listed(NamedTuple):
    """An object as a listing shows it: made by the thousand, so a tuple of the few
    columns a listing needs (no metadata to decode, no body)."""

    key: str
    size: int
    etag: str
    last_modified: float
    checksum: str  # listed_checksum() of the object's checksums: "CRC32 COMPOSITE", ""


@dataclass(frozen=True)
class ListPage:
    objects: list[Listed]
    common_prefixes: list[str]
    truncated: bool
    next_after: str  # the last key or common prefix returned ("" if none)


@dataclass(frozen=True)
class Upload:
    id: str
    bucket: str
    key: str
    initiated: float
    content_type: str
    metadata: dict[str, str]
    headers: dict[str, str]
    checksums_algorithm: str | None = None
    checksum_type: str | None = None  # FULL_OBJECT or COMPOSITE, with an algorithm
    tags: dict[str, str] = field(default_factory=dict)  # given to the object at completion


@dataclass(frozen=True)
class PartInfo:
    number: int
    etag: str  # hex md5, without quotes
    size: int
    last_modified: float
    checksums: dict[str, str] = field(default_factory=dict)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Linux), to start writing a blob back while it arrives."""
    try:  # pragma: no cover - platform dependent
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):  # pragma: no cover
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_EVERY = 8 * 1024 * 1024
"""A blob being written (by a store that fsyncs) is handed to writeback this often, so
the disk works while the body arrives and the commit's fsync finds little left to do."""


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
"""The most buffers one writev takes (a slow or chunked upload arrives in many pieces)."""


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view.nbytes:
        view = view[os.write(fd, view):]


def _write_pieces(fd: int, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
    """All of `pieces` (at most _IOV_MAX) to `fd`, with one writev if the kernel takes it."""
    if len(pieces) == 1:
        _write_all(fd, pieces[0])
        return
    done = os.writev(fd, pieces)
    for p in pieces:  # a short writev: the rest one piece at a time
        size = p.nbytes if isinstance(p, memoryview) else len(p)
        if done >= size:
            done -= size
            continue
        _write_all(fd, memoryview(p)[done:])
        done = 0


def _unlink(path: Path | str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _Reaper:
    """Unlinks files no committed row names any more, off the committing thread:
    unlinking a 64 MiB file takes ~12 ms here, which a PUT that replaces it or a
    DELETE need not wait for. At most MAX_QUEUED wait; beyond that the caller unlinks
    itself (a delete storm cannot grow the queue). A crash before a file is unlinked
    leaves an orphan blob, which `ObjectStore._recover` removes at the next start."""

    MAX_QUEUED = 1024

    def __init__(self) -> None:
        self._queue: queue.Queue[Path | None] = queue.Queue(self.MAX_QUEUED)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="s3-reaper", daemon=True)
        self._thread.start()

    def discard(self, path: Path) -> None:
        if self._stopped:  # a commit that finished after close(): nobody reads the queue
            _unlink(path)
            return
        try:
            self._queue.put_nowait(path)
        except queue.Full:
            _unlink(path)

    def settle(self) -> None:
        """Wait until every file handed over so far is unlinked."""
        if not self._stopped:
            self._queue.join()

    def stop(self) -> None:
        """Unlink what is queued and end the thread; later discards unlink at once."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            try:
                if path is None:
                    return
                _unlink(path)
            except OSError as exc:  # an orphan blob: _recover retries at the next start
                log.warning("could not remove %s: %s", path, exc)
            finally:
                self._queue.task_done()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(file: BinaryIO, path: Path) -> None:
    with contextlib.suppress(OSError):
        file.close()
    _unlink(path)


class BlobWriter:
    """An object body (or part) being received; from `writer()`.

    Up to `inline_max` bytes it stays in memory; past that it spills to a temporary
    file. Hashes as it goes: md5 always, plus the checksums asked for (those in
    SUPPORTED_CHECKSUMS; others are skipped silently — `digest` raises KeyError).
    Hand it to `commit`/`put_part`, or `abort` it. Use it as a context manager to
    abort on error. If it is dropped without either, its temp file is removed when
    it is garbage-collected (and at the next open after a crash).
    """

    def __init__(self, tmp_dir: Path, checksums: tuple[str, ...] = (), *,
                 inline_max: int = 0, writeback: bool = False) -> None:
        self._tmp_dir = tmp_dir
        self.size = 0
        self._writeback = writeback and _sync_file_range is not None
        self._written_back = 0
        self._inline_max = inline_max
        self._memory: bytearray | None = bytearray() if inline_max > 0 else None
        self._file: BinaryIO | None = None if inline_max > 0 else self._open()
        self._md5 = hashlib.md5()
        self._hashes = {name.lower(): sums.hasher(name.lower()) for name in checksums
                        if name.lower() in SUPPORTED_CHECKSUMS}
        self._closed = False
        # Held while bytes go to the file: closing it (abort) waits for a write in
        # another thread, so no write can land in a descriptor reused meanwhile.
        self._io = threading.Lock()

    @functools.cached_property
    def id(self) -> str:
        """The blob's name, once it needs a file (a body kept inline never does)."""
        return secrets.token_hex(16)

    @functools.cached_property
    def path(self) -> Path:
        return self._tmp_dir / self.id

    def _open(self) -> BinaryIO:
        # Unbuffered: writes are big (blocks of a request body) and go straight to the fd.
        file: BinaryIO = open(self.path, "xb", buffering=0)  # noqa: SIM115
        self._finalizer = weakref.finalize(self, _discard, file, self.path)
        return file

    @property
    def inline(self) -> bytes | None:
        """The body, if it is small enough to have stayed in memory."""
        return bytes(self._memory) if self._memory is not None else None

    def spill(self) -> None:
        """Move a body held in memory to the temporary file (parts need files)."""
        if self._memory is not None:
            self._file = self._open()
            _write_all(self._file.fileno(), self._memory)
            self._memory = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.store([data])
        self.hash([data])

    def store(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        """The bytes half of `write`, for several pieces at once (one writev): kept in
        memory or written to the file, counted in `size`. Together with `hash` of the
        same pieces it is `write`; the two may run at once in different threads (each
        in order), so writing the file and hashing overlap."""
        n = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in pieces)
        with self._io:
            if self._closed:
                raise ValueError("write to a finished or aborted BlobWriter")
            if self._memory is not None and self.size + n > self._inline_max:
                self.spill()
            if self._memory is not None:
                for p in pieces:
                    self._memory += p
            else:
                assert self._file is not None
                fd = self._file.fileno()
                for at in range(0, len(pieces), _IOV_MAX):
                    _write_pieces(fd, pieces[at:at + _IOV_MAX])
            self.size += n
            if self._writeback and self.size - self._written_back >= WRITEBACK_EVERY \
                    and self._file is not None:
                assert _sync_file_range is not None
                # Start (not wait for) writeback of what arrived since the last time.
                _sync_file_range(self._file.fileno(), self._written_back,
                                 self.size - self._written_back, _SYNC_FILE_RANGE_WRITE)
                self._written_back = self.size

    def hash(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        """The hashing half of `write` (see `store`): md5 and the checksums asked for."""
        md5 = self._md5
        for p in pieces:
            md5.update(p)
            for h in self._hashes.values():
                h.update(p)

    def md5_hex(self) -> str:
        return self._md5.hexdigest()

    def md5_bytes(self) -> bytes:
        return self._md5.digest()

    def digest(self, name: str) -> str:
        """Base64 of checksum `name` ("crc32", "sha256", ...) of what was written so far."""
        return base64.b64encode(self._hashes[name.lower()].digest()).decode()

    def digests(self) -> dict[str, str]:
        return {name: self.digest(name) for name in self._hashes}

    def abort(self) -> None:
        """Delete the temp file (idempotent; a no-op once committed)."""
        with self._io:
            self._closed = True
            self._memory = None
            if self._file is not None:
                self._finalizer()

    def _finish(self, sync: bool) -> None:
        """Flush and fsync; the file stays in tmp/ until `_install`."""
        if self._closed:
            raise ValueError("BlobWriter already finished or aborted")
        self._closed = True
        if self._file is None:
            return
        if sync:
            os.fsync(self._file.fileno())
        self._file.close()

    def _detach(self) -> None:
        if self._file is not None:
            self._finalizer.detach()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL,
    region TEXT NOT NULL,
    public_read INTEGER NOT NULL DEFAULT 0,
    cors TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified REAL NOT NULL,
    content_type TEXT NOT NULL,
    metadata TEXT NOT NULL,
    headers TEXT NOT NULL,
    checksums TEXT NOT NULL,
    parts TEXT NOT NULL,
    blob TEXT NOT NULL,
    data BLOB,
    checksum_kind TEXT NOT NULL DEFAULT '',
    part_checksums TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_blob ON objects (blob);
CREATE TABLE IF NOT EXISTS uploads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    initiated REAL NOT NULL,
    content_type TEXT NOT NULL,
    metadata TEXT NOT NULL,
    headers TEXT NOT NULL,
    checksums_algorithm TEXT,
    checksum_type TEXT,
    tags TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, seq);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    last_modified REAL NOT NULL,
    checksums TEXT NOT NULL,
    blob TEXT NOT NULL,
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parts_blob ON parts (blob);
"""

# Columns later CloudLands added, as (table, column, declaration): `_migrate` adds the
# ones a store made earlier lacks.
_ADDED_COLUMNS = (
    ("objects", "data", "BLOB"),  # bodies inline in their row
    ("objects", "checksum_kind", "TEXT NOT NULL DEFAULT ''"),  # listings name checksums
    ("objects", "part_checksums", "TEXT NOT NULL DEFAULT '[]'"),  # a COMPOSITE's parts'
    ("objects", "tags", "TEXT NOT NULL DEFAULT '{}'"),
    ("uploads", "checksum_type", "TEXT"),
    ("uploads", "tags", "TEXT NOT NULL DEFAULT '{}'"),
    ("buckets", "cors", "TEXT"),
)
_OBJECT_COLUMNS = ("bucket, key, size, etag, last_modified, content_type, metadata, headers, "
                   "checksums, parts, blob, part_checksums, tags")
_LISTED_COLUMNS = "key, size, etag, last_modified, checksum_kind"  # Listed's, in order
_UPLOAD_COLUMNS = ("id, bucket, key, initiated, content_type, metadata, headers, "
                   "checksums_algorithm, checksum_type, tags")


def _loads(text: str) -> Any:
    # Most objects have no metadata, headers or parts: skip the JSON decoder for those.
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return orjson.loads(text)


def _object(row: tuple[Any, ...]) -> ObjectInfo:
    """A row of _OBJECT_COLUMNS, optionally followed by the inline body."""
    return ObjectInfo(bucket=row[0], key=row[1], size=row[2], etag=row[3],
                      last_modified=row[4], content_type=row[5],
                      metadata=_loads(row[6]), headers=_loads(row[7]),
                      checksums=_loads(row[8]), parts=_loads(row[9]), blob=row[10],
                      part_checksums=_loads(row[11]), tags=_loads(row[12]),
                      inline=row[13] if len(row) > 13 else None)


@dataclass(eq=False)
class _Reader:
    """A thread's read connection (a holder: sqlite3 connections take no weak refs)."""

    db: sqlite3.Connection


@dataclass
class _Write:
    """An object row waiting for the next group commit, and what became of it."""

    info: ObjectInfo
    check: Check | None
    done: bool = False
    replaced: ObjectInfo | None = None
    error: BaseException | None = None


def _bucket(row: tuple[Any, ...]) -> BucketInfo:
    return BucketInfo(name=row[0], created=row[1], region=row[2], public_read=bool(row[3]),
                      cors=cors.loads(row[4]))


def _upload(row: tuple[Any, ...]) -> Upload:
    return Upload(id=row[0], bucket=row[1], key=row[2], initiated=row[3], content_type=row[4],
                  metadata=_loads(row[5]), headers=_loads(row[6]),
                  checksums_algorithm=row[7], checksum_type=row[8], tags=_loads(row[9]))


def _part(row: tuple[Any, ...]) -> PartInfo:
    return PartInfo(number=row[0], etag=row[1], size=row[2], last_modified=row[3],
                    checksums=_loads(row[4]))


def listed_checksum(checksums: dict[str, str]) -> str:
    """What a listing says of an object's checksums: the algorithms (uppercase, as S3
    names them) and then the type, space-separated; "" for none. Kept in a column of
    its own so that a listing never decodes the checksums' JSON."""
    if not checksums:
        return ""
    kind = sums.checksum_type(next(iter(checksums.values())))
    return " ".join([*sorted(name.upper() for name in checksums), kind])


def _dumps(value: object) -> str:
    if not value and isinstance(value, dict | list):  # the usual case: skip the encoder
        return "[]" if isinstance(value, list) else "{}"
    return orjson.dumps(value).decode()


def _prefix_range(column: str, prefix: str) -> tuple[str, list[Any]]:
    """SQL (and its arguments) keeping the rows whose `column` starts with `prefix`,
    as an indexed range: prefix <= column < prefix_end(prefix)."""
    if not prefix:
        return "", []
    sql, args = f" AND {column} >= ?", [prefix]
    end = prefix_end(prefix)
    if end is not None:
        sql += f" AND {column} < ?"
        args.append(end)
    return sql, args


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix`.

    Code point order is UTF-8 byte order (and SQLite's BINARY collation on TEXT), so
    `prefix <= key < prefix_end(prefix)` selects exactly the keys with that prefix.
    None when there is no such string (empty prefix, or only U+10FFFF characters).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:  # surrogates are not valid in UTF-8: skip them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def _upload_checksum(algorithm: str | None,
                     kind: str | None) -> tuple[str | None, str | None]:
    """(algorithm, type) of a new multipart upload, as S3 allows them (InvalidRequest)."""
    if algorithm is None:
        if kind is not None:
            raise invalid_request("The x-amz-checksum-type header can only be used with the "
                                  "x-amz-checksum-algorithm header.")
        return None, None
    name = sums.named(algorithm)
    kind = kind.strip().upper() if kind is not None else sums.default_type(name)
    if not sums.allowed_type(name, kind):
        raise invalid_request(f"The {kind} checksum type cannot be used with the {name} "
                              "checksum algorithm.")
    return name, kind


def _object_checksums(upload: Upload, parts: list[PartInfo], expected: dict[str, str] | None,
                      expected_type: str | None) -> dict[str, str]:
    """The checksum a completed upload's object gets, made of its parts' (none when the
    upload named no algorithm or a part has no checksum of it), checked against what
    the CompleteMultipartUpload request says."""
    algorithm, kind = upload.checksums_algorithm, upload.checksum_type
    kind = kind or (sums.default_type(algorithm) if algorithm else None)
    if expected_type is not None and expected_type.strip().upper() != kind:
        raise invalid_request(f"The upload was created using the {kind or 'null'} checksum "
                              "mode. The complete request must use the same checksum mode.")
    if algorithm not in sums.ALGORITHMS or not all(algorithm in p.checksums for p in parts):
        value = None
    elif kind == sums.FULL_OBJECT:
        value = sums.full_object(algorithm, [(p.checksums[algorithm], p.size) for p in parts])
    else:
        value = sums.composite(algorithm, [p.checksums[algorithm] for p in parts])
    for name, claimed in (expected or {}).items():
        # S3 takes a composite value with or without its "-N".
        if value is None or name != algorithm or claimed.strip() not in (
                value, value.partition("-")[0]):
            raise S3Error("BadDigest", f"The {name} you specified did not match the "
                          "calculated checksum.", 400)
    return {algorithm: value} if algorithm is not None and value is not None else {}


def _require_part_checksum(upload: Upload, number: int, claimed: dict[str, str]) -> None:
    """A CompleteMultipartUpload of a COMPOSITE upload must name each part's checksum
    (the object's is made of them), as S3 requires; a FULL_OBJECT one may leave them out.
    `claimed` is what the request says part `number`'s checksums are."""
    algorithm = upload.checksums_algorithm
    if not algorithm or algorithm in claimed or \
            (upload.checksum_type or sums.default_type(algorithm)) != sums.COMPOSITE:
        return
    if claimed:  # another algorithm's: S3 takes it for a wrong value of the part
        raise S3Error("BadDigest", f"The {next(iter(claimed))} you specified for part "
                      f"{number} did not match what we received.", 400)
    raise invalid_request(f"The upload was created using a {algorithm} checksum. The complete "
                          "request must include the checksum for each part. It was missing "
                          f"for part {number} in the request.")


def _part_checksums(checksums: dict[str, str], parts: list[PartInfo]) -> list[str]:
    """What a completed upload's object keeps of its parts' checksums: each part's, when
    the object's checksum is COMPOSITE (made of them); none for FULL_OBJECT (as S3)."""
    for name, value in checksums.items():
        if sums.checksum_type(value) == sums.COMPOSITE:
            return [p.checksums[name] for p in parts]
    return []


def check_key(key: str) -> str:
    """`key` if S3 accepts it: not empty, valid UTF-8, at most 1,024 bytes of it."""
    if not key:
        raise invalid_argument("Object key must not be empty", "key", key)
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise invalid_argument("Object key is not valid UTF-8", "key") from None
    if size > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long (the limit is 1,024 bytes "
                      "of UTF-8)", 400, MaxSizeAllowed=str(MAX_KEY_BYTES), Size=str(size))
    return key


class ObjectStore:
    """Buckets, objects and multipart uploads under `root` (see the module docstring).

    Every method is synchronous and short (a few SQLite statements, a rename, an
    fsync); streaming happens in `BlobWriter.write` and reads of `open_blob` files,
    which the caller does outside the store's lock. `complete_upload` and `copy` may
    copy bytes (copy_file_range) and belong in a worker thread.

    `sync=True` (the default) fsyncs each blob, its directory and each commit
    (SQLite synchronous=FULL), so a power loss cannot lose a blob a row names.
    `sync=False` keeps crash safety against a kill -9 (what reaches the OS survives
    it) and is faster. Bodies up to `inline_max` bytes live in their rows (0: never).
    """

    def __init__(self, root: Path, *, sync: bool = True, inline_max: int = INLINE_MAX) -> None:
        self.root = Path(root)
        self.sync = sync
        self.inline_max = inline_max
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        for d in (self.root, self.blobs, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._lockfile = open(self.root / "lock", "a+b")  # noqa: SIM115
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise RuntimeError(f"{self.root} is in use by another ObjectStore") from None
        self._lock = threading.RLock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Write] = []
        self._made_dirs: set[str] = set()
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if sync else 'NORMAL'}")
        with self._tx():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._migrate()
        self._local = threading.local()
        # Each thread's reader connection lives as long as the thread (then it is freed,
        # which closes it); this set only lets close() reach those still alive.
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._readers_lock = threading.Lock()
        self._buckets = {row[0]: _bucket(row) for row in self._db.execute(
            "SELECT name, created, region, public_read, cors FROM buckets")}
        self._recover()
        self._reaper = _Reaper()

    # -- plumbing ---------------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring a store made by an earlier CloudLand up to this schema (in _tx)."""
        db = self._db
        for table, column, declaration in _ADDED_COLUMNS:
            if column in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                continue
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            if column == "checksum_kind":  # listings read it: fill it in for old rows
                rows = db.execute("SELECT bucket, key, checksums FROM objects "
                                  "WHERE checksums != '{}'").fetchall()
                db.executemany(
                    "UPDATE objects SET checksum_kind = ? WHERE bucket = ? AND key = ?",
                    [(listed_checksum(_loads(c)), b, k) for b, k, c in rows])

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / "objects.db", isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection for reads (made on first use).

        Reads never take the write lock: under WAL a reader sees the last commit
        without waiting for the fsync of one in progress (the event loop reads too).
        """
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = _Reader(self._connect())
            with self._readers_lock:
                self._readers.add(reader)
        return reader.db

    def close(self) -> None:
        self._reaper.stop()
        with self._lock:
            with self._readers_lock:
                for reader in list(self._readers):
                    reader.db.close()
            self._db.close()
            self._lockfile.close()

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """The lock plus one IMMEDIATE transaction; rolled back on any exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except BaseException:  # e.g. a full disk: never leave the transaction open
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def blob_path(self, blob: str) -> Path:
        return self.blobs / blob[:2] / blob

    def _install(self, tmp_path: Path, blob: str) -> Path:
        """Rename a finished (fsynced) temp file into blobs/; return its new path."""
        sub = blob[:2]
        directory = self.blobs / sub
        if sub not in self._made_dirs:
            directory.mkdir(exist_ok=True)
            self._made_dirs.add(sub)
        path = directory / blob
        os.rename(tmp_path, path)
        if self.sync:
            _fsync_dir(directory)
        return path

    def _recover(self) -> None:
        """Empty tmp/ and delete blobs no row references (leftovers of a crash)."""
        for entry in os.scandir(self.tmp):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                _unlink(entry.path)
        for sub in os.scandir(self.blobs):
            if not sub.is_dir(follow_symlinks=False):
                _unlink(sub.path)
                continue
            names = {e.name for e in os.scandir(sub.path)}
            if not names:
                continue
            lo, hi = sub.name, prefix_end(sub.name) or "\U0010ffff"
            with self._lock:
                used = {r[0] for r in self._db.execute(
                    "SELECT blob FROM objects WHERE blob >= ? AND blob < ? "
                    "UNION SELECT blob FROM parts WHERE blob >= ? AND blob < ?",
                    (lo, hi, lo, hi))}
            for name in names - used:
                _unlink(os.path.join(sub.path, name))

    def _require_bucket(self, db: sqlite3.Connection, bucket: str) -> None:
        if db.execute("SELECT 1 FROM buckets WHERE name = ?", (bucket,)).fetchone() is None:
            raise no_such_bucket(bucket)

    def _get_object(self, db: sqlite3.Connection, bucket: str, key: str, *,
                    body: bool = True) -> ObjectInfo | None:
        columns = f"{_OBJECT_COLUMNS}, data" if body else _OBJECT_COLUMNS
        row = db.execute(f"SELECT {columns} FROM objects WHERE bucket = ? AND key = ?",
                         (bucket, key)).fetchone()
        return _object(row) if row else None

    def _put_object(self, db: sqlite3.Connection, info: ObjectInfo) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO objects ({_OBJECT_COLUMNS}, data, checksum_kind) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (info.bucket, info.key, info.size, info.etag, info.last_modified,
             info.content_type, _dumps(info.metadata), _dumps(info.headers),
             _dumps(info.checksums), _dumps(info.parts), info.blob,
             _dumps(info.part_checksums), _dumps(info.tags), info.inline,
             listed_checksum(info.checksums)))

    def _keep_blob(self, writer: BlobWriter, precheck: Callable[[], object], *,
                   inline: bool = False) -> bytes | None:
        """`precheck`, then the body: returned if it may stay inline and is small
        enough, else fsynced and moved into blobs/ as `writer.id`. On any error the
        writer's bytes are discarded."""
        try:
            precheck()
            body = writer.inline
            if inline and body is not None and len(body) <= self.inline_max:
                writer._finish(self.sync)
                return body
            writer.spill()
            writer._finish(self.sync)
            self._install(writer.path, writer.id)
            writer._detach()
            return None
        except BaseException:
            writer.abort()
            raise

    def _unlink_blob(self, blob: str) -> None:
        """Unlink a blob no committed row names (soon, on the reaper's thread)."""
        if blob:  # "" for an inline body
            self._reaper.discard(self.blob_path(blob))

    def settle(self) -> None:
        """Wait until the blobs of replaced and deleted objects are unlinked."""
        self._reaper.settle()

    def _replace(self, info: ObjectInfo, check: Check | None) -> ObjectInfo:
        """Check and write `info`'s row, committed durably; unlink the replaced blob.

        Group commit: writes that queue up while another commit is in progress are
        committed together by the next thread to take the lock, in one transaction and
        one fsync, each in a savepoint of its own so that one refused write (its
        `check` raising) leaves the others in. On any error the new blob is unlinked
        (its row was never committed).
        """
        write = _Write(info, check)
        with self._queue_lock:
            self._queue.append(write)
        with self._lock:
            if not write.done:
                self._commit_queued()
        if write.error is not None:
            self._unlink_blob(info.blob)
            raise write.error
        # After COMMIT and outside the lock (unlinking a big file takes a while): a
        # reader that read the old row before the commit and opens the blob after this
        # finds it gone and reads the row again (open_object).
        current = write.replaced
        if current is not None and current.blob != info.blob:
            self._unlink_blob(current.blob)
        return info

    def _commit_queued(self) -> None:
        """Commit every queued write in one transaction (the caller holds the lock)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        try:
            with self._tx() as db:
                for write in batch:
                    db.execute("SAVEPOINT write")
                    try:
                        self._require_bucket(db, write.info.bucket)
                        write.replaced = self._get_object(db, write.info.bucket,
                                                          write.info.key)
                        if write.check is not None:
                            write.check(write.replaced)
                        self._put_object(db, write.info)
                    except Exception as exc:
                        db.execute("ROLLBACK TO write")
                        write.error = exc
                    db.execute("RELEASE write")
        except BaseException as exc:  # the COMMIT itself failed: nothing of the batch is in
            for write in batch:
                write.error = write.error or exc
        finally:
            for write in batch:
                write.done = True

    # -- buckets ----------------------------------------------------------------------

    # Buckets are few and change rarely, and only through this store (one per root), so
    # they are also kept in memory: `bucket`, asked on every request, reads no database.
    # The dict is replaced on every change, never changed in place, so readers on other
    # threads need no lock.

    def create_bucket(self, name: str, region: str = "us-east-1") -> BucketInfo:
        info = BucketInfo(name=name, created=time.time(), region=region, public_read=False)
        with self._lock:
            with self._tx() as db:
                if db.execute("SELECT 1 FROM buckets WHERE name = ?", (name,)).fetchone():
                    raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create "
                                  "the named bucket succeeded and you already own it.", 409,
                                  BucketName=name)
                db.execute("INSERT INTO buckets (name, created, region) VALUES (?, ?, ?)",
                           (name, info.created, region))
            self._buckets = {**self._buckets, name: info}
        return info

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            with self._tx() as db:
                self._require_bucket(db, name)
                if (db.execute("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1",
                               (name,)).fetchone()
                        or db.execute("SELECT 1 FROM uploads WHERE bucket = ? LIMIT 1",
                                      (name,)).fetchone()):
                    raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not "
                                  "empty", 409, BucketName=name)
                db.execute("DELETE FROM buckets WHERE name = ?", (name,))
            self._buckets = {n: b for n, b in self._buckets.items() if n != name}

    def bucket(self, name: str) -> BucketInfo:
        info = self._buckets.get(name)
        if info is None:
            raise no_such_bucket(name)
        return info

    def list_buckets(self, *, prefix: str = "", start_after: str = "",
                     max_buckets: int = 10000) -> tuple[list[BucketInfo], bool]:
        """From memory (every bucket is kept there): no query on the caller's thread."""
        if max_buckets <= 0:
            return [], False
        chosen = sorted((b for b in self._buckets.values()
                         if b.name > start_after and b.name.startswith(prefix)),
                        key=lambda b: b.name)  # names are ASCII: str order is byte order
        return chosen[:max_buckets], len(chosen) > max_buckets

    def set_public_read(self, name: str, public: bool) -> None:
        self._set_bucket(name, "public_read", int(public), public_read=public)

    def set_cors(self, name: str, rules: tuple[CorsRule, ...] | None) -> None:
        """Replace the bucket's CORS rules (None: remove its configuration)."""
        self._set_bucket(name, "cors", cors.dumps(rules), cors=rules)

    def _set_bucket(self, name: str, column: str, value: object, **changed: Any) -> None:
        with self._lock:
            with self._tx() as db:
                if db.execute(f"UPDATE buckets SET {column} = ? WHERE name = ?",
                              (value, name)).rowcount == 0:
                    raise no_such_bucket(name)
            self._buckets = {**self._buckets,
                             name: dataclasses.replace(self._buckets[name], **changed)}

    # -- objects ----------------------------------------------------------------------

    def writer(self, checksums: tuple[str, ...] = ()) -> BlobWriter:
        return BlobWriter(self.tmp, checksums, inline_max=self.inline_max,
                          writeback=self.sync)

    def commit(self, bucket: str, key: str, writer: BlobWriter, *,
               content_type: str = "binary/octet-stream",
               metadata: dict[str, str] | None = None,
               headers: dict[str, str] | None = None,
               checksums: dict[str, str] | None = None,
               tags: dict[str, str] | None = None,
               check: Check | None = None) -> ObjectInfo:
        """Make what `writer` holds the object `bucket/key` (last complete commit wins).

        `check(current)` runs inside the transaction, against the object it would
        replace (None if absent); raising refuses the write. `checksums` are stored as
        given (the server verified them); when None, those the writer computed are kept.
        On any error the writer's bytes are discarded.
        """
        body = self._keep_blob(writer, lambda: check_key(key), inline=True)
        info = ObjectInfo(
            bucket=bucket, key=key, size=writer.size, etag=writer.md5_hex(),
            last_modified=time.time(), content_type=content_type,
            metadata=dict(metadata or {}), headers=dict(headers or {}),
            checksums=dict(checksums) if checksums is not None else writer.digests(),
            parts=[], blob="" if body is not None else writer.id, inline=body,
            tags=dict(tags or {}))
        return self._replace(info, check)

    def head(self, bucket: str, key: str, *, body: bool = True) -> ObjectInfo:
        """The object's row; with its inline body unless `body=False` (a HEAD)."""
        db = self._reader()
        info = self._get_object(db, bucket, key, body=body)
        if info is None:
            self._require_bucket(db, bucket)
            raise no_such_key(key)
        return info

    def open_blob(self, info: ObjectInfo) -> BinaryIO:
        """Open `info`'s body for reading (seek for ranges). Stays readable while open,
        even if the object is replaced or deleted meanwhile. NoSuchKey if the blob was
        already replaced before this call: prefer `open_object`, which cannot race."""
        if info.inline is not None:
            return io.BytesIO(info.inline)
        if not info.blob:
            raise ValueError(f"{info.bucket}/{info.key} is stored inline: open it with an "
                             "ObjectInfo from head() or open_object(), not head(body=False)")
        try:
            return open(self.blob_path(info.blob), "rb")
        except FileNotFoundError:
            raise no_such_key(info.key) from None

    def open_object(self, bucket: str, key: str) -> tuple[ObjectInfo, BinaryIO]:
        """`head` and `open_blob` at once, consistent with writers: the row and the
        body opened are of one and the same version."""
        info = self.head(bucket, key)
        while True:
            try:
                return info, self.open_blob(info)
            except S3Error:
                # Replaced (and its blob unlinked) between reading the row and opening
                # the file: the row read now names the new version.
                again = self.head(bucket, key)
                if again.blob == info.blob:  # the same row, and its file is gone
                    raise S3Error("InternalError", f"The data of {bucket}/{key} is missing "
                                  f"from the store (blob {info.blob})", 500) from None
                info = again

    def delete(self, bucket: str, key: str) -> ObjectInfo | None:
        with self._lock, self._tx() as db:
            self._require_bucket(db, bucket)
            info = self._get_object(db, bucket, key)
            if info is None:
                return None
            db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
        self._unlink_blob(info.blob)  # after COMMIT, outside the lock (see _replace)
        return info

    def set_tags(self, bucket: str, key: str, tags: dict[str, str]) -> ObjectInfo:
        """Replace the object's tag set ({} removes it); its body, ETag and Last-Modified
        stay as they are (as in S3). The object as it now is (for its event);
        NoSuchBucket or NoSuchKey if there is no object."""
        with self._tx() as db:  # no UPDATE ... RETURNING: SQLite before 3.35 lacks it
            if db.execute("UPDATE objects SET tags = ? WHERE bucket = ? AND key = ?",
                          (_dumps(tags), bucket, key)).rowcount == 0:
                self._require_bucket(db, bucket)
                raise no_such_key(key)
            row = db.execute(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? "
                             "AND key = ?", (bucket, key)).fetchone()
        return _object(row)

    def copy(self, src: ObjectInfo, bucket: str, key: str, *,
             content_type: str | None = None,
             metadata: dict[str, str] | None = None,
             headers: dict[str, str] | None = None,
             checksums: dict[str, str] | None = None,
             tags: dict[str, str] | None = None,
             check: Check | None = None) -> ObjectInfo:
        """Copy `src` (as read by head) to `bucket/key`: a new blob hard-linked to the
        source's (blobs are immutable), same size, etag, parts and checksums. Each of
        content_type, metadata, headers, checksums and tags is replaced when given, else
        copied.
        NoSuchKey if `src` was replaced or deleted since it was read."""
        check_key(key)
        blob = "" if src.inline is not None else self._link_copy(src)
        info = ObjectInfo(
            bucket=bucket, key=key, size=src.size, etag=src.etag, last_modified=time.time(),
            content_type=src.content_type if content_type is None else content_type,
            metadata=dict(src.metadata if metadata is None else metadata),
            headers=dict(src.headers if headers is None else headers),
            checksums=dict(src.checksums if checksums is None else checksums),
            parts=list(src.parts), blob=blob, inline=src.inline,
            part_checksums=list(src.part_checksums) if checksums is None else [],
            tags=dict(src.tags if tags is None else tags))
        return self._replace(info, check)

    def _link_copy(self, src: ObjectInfo) -> str:
        """A new blob with `src`'s bytes (a hard link where possible); its id."""
        blob = secrets.token_hex(16)
        sub = self.blobs / blob[:2]
        sub.mkdir(exist_ok=True)
        try:
            os.link(self.blob_path(src.blob), sub / blob)
        except FileNotFoundError:  # replaced or deleted since it was read
            raise no_such_key(src.key) from None
        except OSError:  # no hard links here: copy the bytes
            try:
                with open(self.blob_path(src.blob), "rb") as f:
                    return self._assemble([(f, src.size)])
            except FileNotFoundError:
                raise no_such_key(src.key) from None
        if self.sync:
            _fsync_dir(sub)
        return blob

    def _assemble(self, sources: list[tuple[BinaryIO, int]]) -> str:
        """A new blob of the first `size` bytes of each open file in turn (copied in
        the kernel where possible), fsynced and moved into blobs/; its id."""
        blob = secrets.token_hex(16)
        tmp = self.tmp / blob
        try:
            with open(tmp, "xb") as out:
                for f, size in sources:
                    _append(f.fileno(), out.fileno(), size)
                if self.sync:
                    os.fsync(out.fileno())
            self._install(tmp, blob)
        except BaseException:
            _unlink(tmp)
            raise
        return blob

    def list_objects(self, bucket: str, *, prefix: str = "", delimiter: str = "",
                     start_after: str = "", max_keys: int = 1000) -> ListPage:
        """One page of keys > start_after starting with prefix, in UTF-8 byte order.

        With a delimiter, keys whose remainder after the prefix contains it roll up into
        one common prefix (counted once toward max_keys); the keys under a common prefix
        are skipped with one indexed query. A common prefix <= start_after is not
        repeated (a continuation from it, or from a key inside it, resumes after it).
        """
        db = self._reader()
        self._require_bucket(db, bucket)
        if max_keys <= 0:
            return ListPage([], [], False, "")
        upper = prefix_end(prefix) if prefix else None
        # The cursor: keys > after (or >= after when inclusive).
        after, inclusive = start_after, False
        if prefix > start_after:
            after, inclusive = prefix, True
        objects: list[Listed] = []
        prefixes: list[str] = []
        last = ""
        count = 0
        while True:
            sql = (f"SELECT {_LISTED_COLUMNS} FROM objects WHERE bucket = ? AND key "
                   f"{'>=' if inclusive else '>'} ?")
            args: list[Any] = [bucket, after]
            if upper is not None:
                sql += " AND key < ?"
                args.append(upper)
            sql += " ORDER BY key LIMIT ?"
            args.append(max_keys - count + 1)  # one more row says "truncated"
            cursor = db.execute(sql, args)
            jumped = False
            for row in cursor:
                if count == max_keys:
                    cursor.close()
                    return ListPage(objects, prefixes, True, last)
                key: str = row[0]
                if delimiter:
                    i = key.find(delimiter, len(prefix))
                    if i >= 0:
                        common = key[:i + len(delimiter)]
                        if common > start_after:
                            prefixes.append(common)
                            last = common
                            count += 1
                        cursor.close()
                        end = prefix_end(common)
                        if end is None:
                            return ListPage(objects, prefixes, False, last)
                        # Skip every key under the common prefix with one seek.
                        after, inclusive, jumped = end, True, True
                        break
                objects.append(Listed._make(row))
                last = key
                count += 1
                after, inclusive = key, False
            if not jumped:  # fewer rows than the LIMIT: nothing more
                return ListPage(objects, prefixes, False, last)

    # -- multipart uploads --------------------------------------------------------------

    def create_upload(self, bucket: str, key: str, *, content_type: str = "binary/octet-stream",
                      metadata: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None,
                      checksums_algorithm: str | None = None,
                      checksum_type: str | None = None,
                      tags: dict[str, str] | None = None) -> str:
        """A new multipart upload. With `checksums_algorithm`, the object gets that
        checksum made of its parts' (`checksum_type` COMPOSITE or FULL_OBJECT; S3's
        default for the algorithm when None). The object gets `tags` when completed."""
        check_key(key)
        algorithm, kind = _upload_checksum(checksums_algorithm, checksum_type)
        upload_id = secrets.token_urlsafe(24)
        with self._tx() as db:
            self._require_bucket(db, bucket)
            db.execute(f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (upload_id, bucket, key, time.time(), content_type,
                        _dumps(metadata or {}), _dumps(headers or {}), algorithm, kind,
                        _dumps(tags or {})))
        return upload_id

    def _get_upload(self, db: sqlite3.Connection, upload_id: str) -> Upload:
        row = db.execute(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = ?",
                         (upload_id,)).fetchone()
        if row is None:
            raise no_such_upload(upload_id)
        return _upload(row)

    def upload(self, upload_id: str) -> Upload:
        return self._get_upload(self._reader(), upload_id)

    def put_part(self, upload_id: str, number: int, writer: BlobWriter, *,
                 checksums: dict[str, str] | None = None) -> PartInfo:
        """Store `writer`'s bytes as part `number` (1..10000), replacing an earlier one."""
        def precheck() -> None:
            if not 1 <= number <= MAX_PART_NUMBER:
                raise invalid_argument(f"Part number must be an integer between 1 and "
                                       f"{MAX_PART_NUMBER}, inclusive", "partNumber",
                                       str(number))
            self.upload(upload_id)  # fail early, before the fsync

        self._keep_blob(writer, precheck)
        part = PartInfo(number=number, etag=writer.md5_hex(), size=writer.size,
                        last_modified=time.time(),
                        checksums=dict(checksums) if checksums is not None
                        else writer.digests())
        try:
            with self._tx() as db:
                self._get_upload(db, upload_id)
                old = db.execute("SELECT blob FROM parts WHERE upload_id = ? AND number = ?",
                                 (upload_id, number)).fetchone()
                db.execute("INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (upload_id, number, part.etag, part.size, part.last_modified,
                            _dumps(part.checksums), writer.id))
        except BaseException:
            _unlink(self.blob_path(writer.id))
            raise
        if old is not None:  # after COMMIT; complete_upload already holds an fd if reading
            self._unlink_blob(old[0])
        return part

    def complete_upload(self, upload_id: str, parts: list[tuple[int, str]], *,
                        check: Check | None = None,
                        part_checksums: dict[int, dict[str, str]] | None = None,
                        expected: dict[str, str] | None = None,
                        expected_type: str | None = None) -> ObjectInfo:
        """Join the listed parts into the object (streaming, copy_file_range) and commit
        it like `commit`; the upload and all its parts are then gone.

        `part_checksums` are what the request says each part's checksums are (InvalidPart
        unless they match what the part was stored with; a COMPOSITE upload's must name
        every part's, `_require_part_checksum`); `expected` the object's own
        checksum, as the request says it (BadDigest unless the checksum made of the
        parts' matches); `expected_type` its type (InvalidRequest unless the upload's)."""
        if not parts:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed or did "
                          "not validate against our published schema", 400)
        numbers = [n for n, _ in parts]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. "
                          "The parts list must be specified in order by part number.", 400,
                          UploadId=upload_id)
        files: list[BinaryIO] = []
        try:
            with self._lock:
                upload = self._get_upload(self._db, upload_id)
                stored = {r[0]: (_part(r[:5]), r[5]) for r in self._db.execute(
                    "SELECT number, etag, size, last_modified, checksums, blob FROM parts "
                    "WHERE upload_id = ?", (upload_id,))}
                chosen: list[PartInfo] = []
                for i, (number, etag) in enumerate(parts):
                    found = stored.get(number)
                    if found is None or found[0].etag.lower() != etag.strip('"').lower():
                        raise S3Error("InvalidPart", "One or more of the specified parts could "
                                      "not be found. The part may not have been uploaded, or "
                                      "the specified entity tag may not match the part's "
                                      "entity tag.", 400, UploadId=upload_id,
                                      PartNumber=str(number), ETag=etag)
                    part = found[0]
                    claimed = (part_checksums or {}).get(number, {})
                    _require_part_checksum(upload, number, claimed)
                    if any(part.checksums.get(a) != v for a, v in claimed.items()):
                        raise S3Error("InvalidPart", "One or more of the specified parts could "
                                      "not be found. The part may not have been uploaded, or "
                                      "the specified checksum may not match the part's "
                                      "checksum.", 400, UploadId=upload_id,
                                      PartNumber=str(number))
                    if i < len(parts) - 1 and part.size < MIN_PART_SIZE:
                        raise S3Error("EntityTooSmall", "Your proposed upload is smaller than "
                                      "the minimum allowed object size.", 400,
                                      ProposedSize=str(part.size),
                                      MinSizeAllowed=str(MIN_PART_SIZE),
                                      PartNumber=str(number), ETag=part.etag)
                    chosen.append(part)
                # Open every part now: a concurrent put_part or abort may unlink them.
                for number, _ in parts:
                    files.append(open(self.blob_path(stored[number][1]), "rb"))  # noqa: SIM115
            blob = self._assemble([(f, part.size)
                                   for part, f in zip(chosen, files, strict=True)])
        finally:
            for f in files:
                f.close()
        md5s = b"".join(bytes.fromhex(p.etag) for p in chosen)
        checksums = _object_checksums(upload, chosen, expected, expected_type)
        info = ObjectInfo(
            bucket=upload.bucket, key=upload.key, size=sum(p.size for p in chosen),
            etag=f"{hashlib.md5(md5s).hexdigest()}-{len(chosen)}", last_modified=time.time(),
            content_type=upload.content_type, metadata=upload.metadata,
            headers=upload.headers, checksums=checksums, parts=[p.size for p in chosen],
            part_checksums=_part_checksums(checksums, chosen), blob=blob, tags=upload.tags)

        def check_and_finish(current: ObjectInfo | None) -> None:
            # Same transaction as the object's row: the upload must still exist.
            self._get_upload(self._db, upload_id)
            if check is not None:
                check(current)
            part_blobs = [r[0] for r in self._db.execute(
                "SELECT blob FROM parts WHERE upload_id = ?", (upload_id,))]
            self._db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            self._db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
            finished.extend(part_blobs)

        finished: list[str] = []
        result = self._replace(info, check_and_finish)
        for b in finished:
            self._unlink_blob(b)
        return result

    def abort_upload(self, upload_id: str) -> None:
        with self._tx() as db:
            self._get_upload(db, upload_id)
            blobs = [r[0] for r in db.execute("SELECT blob FROM parts WHERE upload_id = ?",
                                              (upload_id,))]
            db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
        for b in blobs:
            self._unlink_blob(b)

    def list_uploads(self, bucket: str, *, prefix: str = "", key_marker: str = "",
                     upload_id_marker: str = "",
                     max_uploads: int = 1000) -> tuple[list[Upload], bool]:
        """In-progress uploads sorted by key, then by initiation; S3 marker semantics:
        after key_marker, or (with upload_id_marker) after that upload of key_marker."""
        db = self._reader()
        self._require_bucket(db, bucket)
        if max_uploads <= 0:
            return [], False
        seq = None
        if key_marker and upload_id_marker:
            row = db.execute("SELECT seq FROM uploads WHERE id = ? AND bucket = ? AND key = ?",
                             (upload_id_marker, bucket, key_marker)).fetchone()
            seq = row[0] if row else None
        if seq is not None:
            where = "(key > ? OR (key = ? AND seq > ?))"
            args: list[Any] = [key_marker, key_marker, seq]
        else:
            where, args = "key > ?", [key_marker]
        sql = f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE bucket = ? AND {where}"
        args.insert(0, bucket)
        within, bounds = _prefix_range("key", prefix)
        sql += within
        args += bounds
        sql += " ORDER BY key, seq LIMIT ?"
        args.append(max_uploads + 1)
        rows = db.execute(sql, args).fetchall()
        return [_upload(r) for r in rows[:max_uploads]], len(rows) > max_uploads

    def list_parts(self, upload_id: str, *, part_number_marker: int = 0,
                   max_parts: int = 1000) -> tuple[list[PartInfo], bool]:
        db = self._reader()
        self._get_upload(db, upload_id)
        if max_parts <= 0:
            return [], False
        rows = db.execute(
            "SELECT number, etag, size, last_modified, checksums FROM parts "
            "WHERE upload_id = ? AND number > ? ORDER BY number LIMIT ?",
            (upload_id, part_number_marker, max_parts + 1)).fetchall()
        return [_part(r) for r in rows[:max_parts]], len(rows) > max_parts


def _append(src_fd: int, dst_fd: int, size: int) -> None:
    """Append `size` bytes of src (from its offset 0) to dst, in the kernel if possible."""
    offset = 0
    copy_range = getattr(os, "copy_file_range", None)
    while offset < size and copy_range is not None:
        try:
            n = copy_range(src_fd, dst_fd, size - offset, offset)
        except OSError:
            copy_range = None
            break
        if n == 0:
            break
        offset += n
    while offset < size:
        data = os.pread(src_fd, min(COPY_CHUNK, size - offset), offset)
        if not data:
            raise OSError(f"part blob shorter than recorded ({offset} < {size} bytes)")
        view = memoryview(data)
        while view:
            view = view[os.write(dst_fd, view):]
        offset += len(data)
