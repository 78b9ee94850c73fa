"""The object store engine: buckets, atomic objects, listing, multipart, crash recovery."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudland.storage import objects as objects_module
from cloudland.storage.errors import S3Error, precondition_failed
from cloudland.storage.objects import BlobWriter, ObjectInfo, ObjectStore, _Reaper, prefix_end


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path / "data", inline_max=0)  # bodies as blob files: see test_inline_*
    yield s
    s.close()


def put(store: ObjectStore, bucket: str, key: str, data: bytes = b"x", **kw: object
        ) -> ObjectInfo:
    w = store.writer()
    w.write(data)
    return store.commit(bucket, key, w, **kw)  # type: ignore[arg-type]


def read(store: ObjectStore, info: ObjectInfo) -> bytes:
    with store.open_blob(info) as f:
        return f.read()


def blob_files(store: ObjectStore) -> set[str]:
    store.settle()  # replaced and deleted blobs are unlinked on the store's own thread
    return {p.name for p in store.blobs.glob("*/*")}


def tmp_files(store: ObjectStore) -> list[Path]:
    return list(store.tmp.iterdir())


def code(excinfo: pytest.ExceptionInfo[S3Error]) -> tuple[str, int]:
    return excinfo.value.code, excinfo.value.status


# -- buckets ------------------------------------------------------------------------------


def test_bucket_lifecycle_and_errors(store: ObjectStore) -> None:
    info = store.create_bucket("photos", region="eu-west-1")
    assert info.name == "photos" and info.region == "eu-west-1" and not info.public_read
    assert abs(info.created - time.time()) < 5
    assert store.bucket("photos") == info
    with pytest.raises(S3Error) as e:
        store.create_bucket("photos")
    assert code(e) == ("BucketAlreadyOwnedByYou", 409)
    with pytest.raises(S3Error) as e:
        store.bucket("nope")
    assert code(e) == ("NoSuchBucket", 404)

    store.set_public_read("photos", True)
    assert store.bucket("photos").public_read
    store.set_public_read("photos", False)
    assert not store.bucket("photos").public_read
    with pytest.raises(S3Error) as e:
        store.set_public_read("nope", True)
    assert code(e) == ("NoSuchBucket", 404)

    put(store, "photos", "a")
    with pytest.raises(S3Error) as e:
        store.delete_bucket("photos")
    assert code(e) == ("BucketNotEmpty", 409)
    store.delete("photos", "a")
    upload_id = store.create_upload("photos", "big", content_type="text/plain", metadata={},
                                    headers={})
    with pytest.raises(S3Error) as e:
        store.delete_bucket("photos")
    assert code(e) == ("BucketNotEmpty", 409)
    store.abort_upload(upload_id)
    store.delete_bucket("photos")
    with pytest.raises(S3Error) as e:
        store.delete_bucket("photos")
    assert code(e) == ("NoSuchBucket", 404)
    with pytest.raises(S3Error) as e:
        store.head("photos", "a")
    assert code(e) == ("NoSuchBucket", 404)


def test_list_buckets_pages_by_name(store: ObjectStore) -> None:
    for name in ["c", "a", "b-1", "b-2", "d"]:
        store.create_bucket(name)
    page, truncated = store.list_buckets()
    assert [b.name for b in page] == ["a", "b-1", "b-2", "c", "d"] and not truncated
    page, truncated = store.list_buckets(max_buckets=2)
    assert [b.name for b in page] == ["a", "b-1"] and truncated
    page, truncated = store.list_buckets(start_after="b-1", max_buckets=2)
    assert [b.name for b in page] == ["b-2", "c"] and truncated
    page, truncated = store.list_buckets(start_after="c", max_buckets=2)
    assert [b.name for b in page] == ["d"] and not truncated
    page, truncated = store.list_buckets(prefix="b-")
    assert [b.name for b in page] == ["b-1", "b-2"] and not truncated


# -- objects ------------------------------------------------------------------------------


def test_put_head_get_with_metadata_and_checksums(store: ObjectStore) -> None:
    store.create_bucket("b")
    data = os.urandom(300_000)
    w = store.writer(checksums=("sha256", "crc32", "crc32c"))
    for i in range(0, len(data), 7000):
        w.write(data[i:i + 7000])
    assert w.size == len(data)
    assert w.md5_hex() == hashlib.md5(data).hexdigest()
    assert w.digest("sha256") == base64.b64encode(hashlib.sha256(data).digest()).decode()
    crc = zlib.crc32(data).to_bytes(4, "big")
    assert w.digest("crc32") == base64.b64encode(crc).decode()
    info = store.commit("b", "dir/file.bin", w, content_type="image/png",
                        metadata={"color": "blue"},
                        headers={"cache-control": "no-cache", "content-encoding": "gzip"})
    assert info.size == len(data) and info.etag == hashlib.md5(data).hexdigest()
    assert info.checksums["sha256"] == w.digest("sha256")
    assert set(info.checksums) <= {"sha256", "crc32", "crc32c"}
    assert info.parts == [] and info.version_id == "null"
    head = store.head("b", "dir/file.bin")
    assert head == info
    assert head.content_type == "image/png" and head.metadata == {"color": "blue"}
    assert head.headers == {"cache-control": "no-cache", "content-encoding": "gzip"}
    assert read(store, head) == data
    with store.open_blob(head) as f:  # ranged read
        f.seek(1000)
        assert f.read(10) == data[1000:1010]
    got, f = store.open_object("b", "dir/file.bin")
    with f:
        assert got == info and f.read() == data
    assert tmp_files(store) == []
    with pytest.raises(S3Error) as e:
        store.head("b", "missing")
    assert code(e) == ("NoSuchKey", 404)


def test_checksums_given_by_the_server_are_stored_as_given(store: ObjectStore) -> None:
    store.create_bucket("b")
    info = put(store, "b", "k", b"abc", checksums={"crc32": "NSRBwg=="})
    assert store.head("b", "k").checksums == {"crc32": "NSRBwg=="}
    assert info.content_type == "binary/octet-stream"


def test_overwrite_replaces_and_deletes_old_blob_but_open_readers_keep_it(
        store: ObjectStore) -> None:
    store.create_bucket("b")
    first = put(store, "b", "k", b"first version")
    reader = store.open_blob(first)
    second = put(store, "b", "k", b"second")
    assert first.blob != second.blob
    assert blob_files(store) == {second.blob}
    assert reader.read() == b"first version"  # POSIX: unlinked but still open
    reader.close()
    assert read(store, store.head("b", "k")) == b"second"
    with pytest.raises(S3Error) as e:  # the old blob is gone for new readers
        store.open_blob(first)
    assert code(e) == ("NoSuchKey", 404)


def test_replaced_and_deleted_blobs_are_unlinked_off_the_committing_thread(
        store: ObjectStore, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    store.create_bucket("b")
    release = threading.Event()
    unlink = objects_module._unlink

    def held_up(path: Path | str) -> None:  # the reaper's thread waits to be let go
        if threading.current_thread().name == "s3-reaper":
            assert release.wait(10)
        unlink(path)

    monkeypatch.setattr(objects_module, "_unlink", held_up)
    monkeypatch.setattr(_Reaper, "MAX_QUEUED", 4)
    store._reaper.stop()
    store._reaper = _Reaper()
    infos = [put(store, "b", f"k{i}") for i in range(10)]
    for info in infos:
        assert store.delete("b", info.key) == info  # returns without the reaper
    # One file is with the held-up reaper, four wait in its queue; the queue was full
    # for the other five, so their DELETEs unlinked them on the spot.
    present = {p.name for p in store.blobs.glob("*/*")}
    assert len(present) == 5 and present < {i.blob for i in infos}
    release.set()
    assert blob_files(store) == set()  # settle(): the queued ones are gone too
    # A file the reaper cannot remove is logged (and left to _recover); it goes on.
    stuck = store.blob_path("cd" + "0" * 30)
    stuck.mkdir(parents=True)
    store._unlink_blob(stuck.name)
    last = put(store, "b", "last")
    store.delete("b", "last")
    store.settle()
    assert not store.blob_path(last.blob).exists()
    assert "could not remove" in caplog.text


def test_a_commit_that_ends_after_close_still_removes_what_it_replaced(
        tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "late", inline_max=0)  # a blob file
    store.create_bucket("b")
    info = put(store, "b", "k", b"x" * 10)
    store._reaper.stop()  # what close() does first; a commit on another thread ends after
    assert store.delete("b", "k") == info
    assert info.blob and not store.blob_path(info.blob).exists()
    store.settle()  # returns: nothing is queued for a stopped reaper
    store.close()


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.create_bucket("b")
    info = put(store, "b", "k")
    assert store.delete("b", "k") == info
    assert store.delete("b", "k") is None
    assert blob_files(store) == set()
    with pytest.raises(S3Error) as e:
        store.delete("nope", "k")
    assert code(e) == ("NoSuchBucket", 404)


def test_commit_errors_abort_the_writer(store: ObjectStore) -> None:
    w = store.writer()
    w.write(b"data")
    with pytest.raises(S3Error) as e:
        store.commit("nope", "k", w)
    assert code(e) == ("NoSuchBucket", 404)
    assert tmp_files(store) == [] and blob_files(store) == set()
    store.create_bucket("b")
    w = store.writer()
    w.write(b"data")
    with pytest.raises(S3Error) as e:
        store.commit("b", "k" * 1025, w)
    assert code(e) == ("KeyTooLongError", 400)
    assert tmp_files(store) == [] and blob_files(store) == set()


def test_abort_and_context_manager_remove_the_temp_file(store: ObjectStore) -> None:
    w = store.writer()
    w.write(b"partial")
    assert len(tmp_files(store)) == 1
    w.abort()
    w.abort()  # idempotent
    assert tmp_files(store) == []
    with pytest.raises(RuntimeError), store.writer() as w2:
        w2.write(b"truncated upload")
        raise RuntimeError("client went away")
    assert tmp_files(store) == []
    with pytest.raises(ValueError):
        w2.write(b"more")


def test_check_refusing_keeps_old_object_and_leaves_no_temp_file(store: ObjectStore) -> None:
    store.create_bucket("b")
    old = put(store, "b", "k", b"old")
    seen: list[ObjectInfo | None] = []

    def if_none_match(current: ObjectInfo | None) -> None:
        seen.append(current)
        if current is not None:
            raise precondition_failed("If-None-Match")

    w = store.writer()
    w.write(b"new")
    with pytest.raises(S3Error) as e:
        store.commit("b", "k", w, check=if_none_match)
    assert code(e) == ("PreconditionFailed", 412)
    assert seen == [old]
    assert store.head("b", "k") == old and read(store, old) == b"old"
    assert tmp_files(store) == [] and blob_files(store) == {old.blob}
    # The same check lets a create through.
    created = put(store, "b", "new-key", b"n", check=if_none_match)
    assert seen[-1] is None and store.head("b", "new-key") == created


def test_concurrent_writers_last_complete_write_wins_never_a_mix(store: ObjectStore) -> None:
    store.create_bucket("b")
    size, chunk, writers = 3 * 1024 * 1024, 16 * 1024, 4
    bodies = {i: bytes([i + 1]) * 7 + bytes([0x80 | i]) for i in range(writers)}
    barrier = threading.Barrier(writers)
    committed: list[int] = []  # in commit order: `check` runs inside each transaction
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            w = store.writer()
            pattern = bodies[i] * (chunk // len(bodies[i]))
            barrier.wait()
            for _ in range(size // chunk):
                w.write(pattern)
            store.commit("b", "shared", w, metadata={"writer": str(i)},
                         check=lambda current: committed.append(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(committed) == list(range(writers))
    final = store.head("b", "shared")
    winner = committed[-1]
    assert final.metadata == {"writer": str(winner)}
    data = read(store, final)
    assert data == bodies[winner] * (size // len(bodies[winner]))
    assert blob_files(store) == {final.blob} and tmp_files(store) == []


def test_copy_links_a_new_blob_and_copies_or_replaces_metadata(store: ObjectStore) -> None:
    store.create_bucket("b")
    src = put(store, "b", "src", b"payload", content_type="text/plain",
              metadata={"a": "1"}, headers={"cache-control": "max-age=60"})
    copied = store.copy(src, "b", "dst")
    assert copied.blob != src.blob and copied.etag == src.etag and copied.size == src.size
    assert copied.metadata == {"a": "1"} and copied.content_type == "text/plain"
    assert copied.headers == {"cache-control": "max-age=60"}
    replaced = store.copy(src, "b", "dst2", content_type="application/json",
                          metadata={"b": "2"}, headers={})
    assert replaced.metadata == {"b": "2"} and replaced.content_type == "application/json"
    assert replaced.headers == {}
    # Deleting the source leaves the copies intact (blobs are independent names).
    store.delete("b", "src")
    assert read(store, store.head("b", "dst")) == b"payload"
    # Copy onto itself with new metadata (the REPLACE directive).
    dst = store.head("b", "dst")
    again = store.copy(dst, "b", "dst", metadata={"c": "3"})
    assert store.head("b", "dst") == again and read(store, again) == b"payload"
    assert blob_files(store) == {again.blob, replaced.blob}
    # A stale source (replaced since it was read) is NoSuchKey, not another body.
    with pytest.raises(S3Error) as e:
        store.copy(src, "b", "dst3")
    assert code(e) == ("NoSuchKey", 404)
    # check refuses a copy just like a put.
    def if_match_other(current: ObjectInfo | None) -> None:
        raise precondition_failed("If-Match")

    with pytest.raises(S3Error):
        store.copy(again, "b", "dst", check=if_match_other)
    assert store.head("b", "dst") == again
    assert blob_files(store) == {again.blob, replaced.blob}


# -- listing ------------------------------------------------------------------------------


def keys(page: objects_module.ListPage) -> list[str]:
    return [o.key for o in page.objects]


def test_list_prefix_start_after_and_pagination(store: ObjectStore) -> None:
    store.create_bucket("b")
    names = ["a", "a/1", "a/2", "b", "ba", "c"]
    for k in names:
        put(store, "b", k)
    page = store.list_objects("b")
    assert keys(page) == names and not page.truncated and page.next_after == "c"
    assert keys(store.list_objects("b", prefix="b")) == ["b", "ba"]
    assert keys(store.list_objects("b", start_after="a/1")) == ["a/2", "b", "ba", "c"]
    assert keys(store.list_objects("b", prefix="a/", start_after="a/1")) == ["a/2"]
    assert keys(store.list_objects("b", prefix="zzz")) == []
    empty = store.list_objects("b", max_keys=0)
    assert empty.objects == [] and empty.common_prefixes == [] and not empty.truncated
    got, after = [], ""
    while True:
        page = store.list_objects("b", start_after=after, max_keys=2)
        got += keys(page)
        if not page.truncated:
            break
        after = page.next_after
    assert got == names
    # Exactly max_keys left: not truncated.
    page = store.list_objects("b", start_after="b", max_keys=2)
    assert keys(page) == ["ba", "c"] and not page.truncated
    with pytest.raises(S3Error) as e:
        store.list_objects("nope")
    assert code(e) == ("NoSuchBucket", 404)


def test_list_with_delimiter_rolls_up_nested_keys(store: ObjectStore) -> None:
    store.create_bucket("b")
    for k in ["photos/2024/jan/1.jpg", "photos/2024/jan/2.jpg", "photos/2024/feb/1.jpg",
              "photos/2025/x.jpg", "photos/readme", "photos.txt", "top", "z/z"]:
        put(store, "b", k)
    page = store.list_objects("b", delimiter="/")
    assert keys(page) == ["photos.txt", "top"]
    assert page.common_prefixes == ["photos/", "z/"]
    page = store.list_objects("b", prefix="photos/", delimiter="/")
    assert keys(page) == ["photos/readme"]
    assert page.common_prefixes == ["photos/2024/", "photos/2025/"]
    page = store.list_objects("b", prefix="photos/2024/", delimiter="/")
    assert keys(page) == [] and page.common_prefixes == ["photos/2024/feb/",
                                                         "photos/2024/jan/"]
    # A multi-character delimiter, and one that is not "/".
    page = store.list_objects("b", delimiter="20")
    assert page.common_prefixes == ["photos/20"]
    assert keys(page) == ["photos.txt", "photos/readme", "top", "z/z"]


def test_pagination_across_common_prefixes(store: ObjectStore) -> None:
    store.create_bucket("b")
    for d in "abcde":
        for i in range(3):
            put(store, "b", f"{d}/{i}")
        put(store, "b", f"{d}-file")
    entries: list[str] = []
    after = ""
    pages = 0
    while True:
        page = store.list_objects("b", delimiter="/", start_after=after, max_keys=3)
        pages += 1
        assert len(page.objects) + len(page.common_prefixes) <= 3
        entries += keys(page) + page.common_prefixes
        if not page.truncated:
            break
        assert page.next_after in keys(page) + page.common_prefixes
        after = page.next_after
    assert sorted(entries) == sorted([f"{d}/" for d in "abcde"] + [f"{d}-file" for d in "abcde"])
    assert len(entries) == len(set(entries)) == 10
    assert pages == 4
    # Resuming from a key inside a common prefix does not repeat the prefix.
    page = store.list_objects("b", delimiter="/", start_after="b/0", max_keys=2)
    assert page.common_prefixes == ["c/"] and keys(page) == ["c-file"]


def test_utf8_byte_order_and_long_keys(store: ObjectStore) -> None:
    store.create_bucket("b")
    weird = ["é", "e", "z", "日本", "\U0001f600", "\uffff", "A", "a", "Z~", "é/x"]
    long_key = "k" * 1021 + "é" + "!"  # 1,024 bytes exactly
    assert len(long_key.encode()) == 1024
    for k in [*weird, long_key]:
        put(store, "b", k, k.encode())
    listed = keys(store.list_objects("b"))
    assert listed == sorted([*weird, long_key], key=lambda k: k.encode("utf-8"))
    assert read(store, store.head("b", long_key)) == long_key.encode()
    page = store.list_objects("b", delimiter="/", prefix="é")
    assert keys(page) == ["é"] and page.common_prefixes == ["é/"]
    # start_after between multi-byte keys
    assert keys(store.list_objects("b", start_after="日本")) == ["\uffff", "\U0001f600"]
    w = store.writer()
    with pytest.raises(S3Error) as e:
        store.commit("b", "k" * 1021 + "éé", w)  # 1,025 bytes
    assert code(e) == ("KeyTooLongError", 400)


def test_prefix_end() -> None:
    assert prefix_end("") is None
    assert prefix_end("a/") == "a0"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\ud7ff") == "\ue000"
    assert prefix_end("\U0010ffff") is None


def test_keys_never_become_paths(store: ObjectStore, tmp_path: Path) -> None:
    store.create_bucket("b")
    evil = ["../../etc/passwd", "a/../../b", "/abs/path", "..", ".", "a//b", "\\..\\x",
            "nul\x00byte", "~/x"]
    before = set(tmp_path.rglob("*"))
    for k in evil:
        put(store, "b", k, k.encode())
    listed = keys(store.list_objects("b"))
    assert listed == sorted(evil, key=lambda k: k.encode())
    for k in evil:
        assert read(store, store.head("b", k)) == k.encode()
    created = set(tmp_path.rglob("*")) - before
    assert all(p.resolve().is_relative_to(store.root.resolve()) for p in created)
    assert {p.name for p in created if p.is_file()} <= blob_files(store) | {"objects.db-wal",
                                                                            "objects.db-shm"}
    assert not (tmp_path / "etc").exists() and not (tmp_path.parent / "b").exists()


def test_listing_10000_keys(tmp_path: Path) -> None:
    fast = ObjectStore(tmp_path, sync=False)  # no fsyncs: only the listing is of interest
    try:
        fast.create_bucket("b")
        for i in range(10_000):
            put(fast, "b", f"dir{i % 10}/key-{i:05d}")
        started = time.perf_counter()
        total, after, pages = 0, "", 0
        while True:
            page = fast.list_objects("b", start_after=after, max_keys=1000)
            total += len(page.objects)
            pages += 1
            if not page.truncated:
                break
            after = page.next_after
        flat = time.perf_counter() - started
        started = time.perf_counter()
        rolled = fast.list_objects("b", delimiter="/")
        rolled_time = time.perf_counter() - started
        assert total == 10_000 and pages == 10
        assert rolled.common_prefixes == [f"dir{i}/" for i in range(10)]
        print(f"\nlisting 10,000 keys in {pages} pages: {flat * 1000:.1f} ms; "
              f"with delimiter (10 common prefixes): {rolled_time * 1000:.2f} ms")
    finally:
        fast.close()


# -- small bodies inline -------------------------------------------------------------------


@pytest.fixture
def inline_store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path / "inline", inline_max=1000)
    s.create_bucket("b")
    yield s
    s.close()


def test_inline_small_bodies_live_in_their_rows(inline_store: ObjectStore) -> None:
    store = inline_store
    w = store.writer(("crc32",))
    w.write(b"x" * 600)
    w.write(b"y" * 400)  # exactly inline_max: still inline
    info = store.commit("b", "small", w)
    assert info.blob == "" and info.size == 1000
    assert info.etag == hashlib.md5(b"x" * 600 + b"y" * 400).hexdigest()
    assert info.checksums == {"crc32": base64.b64encode(
        zlib.crc32(b"x" * 600 + b"y" * 400).to_bytes(4, "big")).decode()}
    assert blob_files(store) == set() and tmp_files(store) == []
    got, f = store.open_object("b", "small")
    with f:
        assert f.read() == b"x" * 600 + b"y" * 400 and got == info
    # Listings carry a few columns, never the bodies.
    assert store.list_objects("b").objects == [("small", 1000, info.etag, info.last_modified,
                                                "CRC32 FULL_OBJECT")]

    big = put(store, "b", "big", b"z" * 1001)  # one byte more: a blob file
    assert big.blob and blob_files(store) == {big.blob}
    assert put(store, "b", "empty", b"").blob == ""
    assert read(store, store.head("b", "empty")) == b""


def test_inline_and_file_bodies_replace_each_other(inline_store: ObjectStore) -> None:
    store = inline_store
    as_file = put(store, "b", "k", b"f" * 5000)
    reader = store.open_blob(as_file)
    put(store, "b", "k", b"small")  # file -> inline: the blob goes, the open reader keeps it
    assert blob_files(store) == set()
    assert reader.read() == b"f" * 5000
    reader.close()
    again = put(store, "b", "k", b"g" * 5000)  # inline -> file
    assert blob_files(store) == {again.blob}
    assert read(store, store.head("b", "k")) == b"g" * 5000
    store.delete("b", "k")
    assert blob_files(store) == set()


def test_inline_copy_and_multipart_parts(inline_store: ObjectStore,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = inline_store
    src = put(store, "b", "src", b"tiny", metadata={"a": "1"})
    copied = store.copy(store.head("b", "src"), "b", "dst", metadata={"b": "2"})
    assert copied.blob == "" and copied.etag == src.etag
    store.delete("b", "src")
    assert read(store, store.head("b", "dst")) == b"tiny"
    assert store.head("b", "dst").metadata == {"b": "2"}

    # Parts are joined from files, so even a small part becomes one.
    monkeypatch.setattr(objects_module, "MIN_PART_SIZE", 10)
    upload_id = store.create_upload("b", "mp")
    p1 = upload_part(store, upload_id, 1, b"1" * 20)
    p2 = upload_part(store, upload_id, 2, b"2" * 5)
    assert len(blob_files(store)) == 2
    done = store.complete_upload(upload_id, [(1, p1.etag), (2, p2.etag)])
    assert done.blob and blob_files(store) == {done.blob}
    assert read(store, store.head("b", "mp")) == b"1" * 20 + b"2" * 5


def test_readers_always_get_one_whole_version_while_writers_replace(
        inline_store: ObjectStore) -> None:
    """Reads use their own connection, without the write lock: a reader that read a row
    whose blob a commit then unlinks reads the row again, and never a mix."""
    store = inline_store
    bodies = [bytes([65 + i]) * (3000 if i % 2 else 500) for i in range(6)]  # file, inline
    put(store, "b", "k", bodies[0])
    stop = threading.Event()
    seen: set[bytes] = set()
    errors: list[BaseException] = []

    def read_loop() -> None:
        try:
            while not stop.is_set():
                info, f = store.open_object("b", "k")
                with f:
                    data = f.read()
                assert data in bodies and len(data) == info.size, (len(data), info.size)
                seen.add(data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read_loop) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for n in range(300):
            put(store, "b", "k", bodies[n % len(bodies)])
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    assert not errors, errors[0]
    assert len(seen) > 1


def test_a_store_from_before_inline_bodies_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    root = tmp_path / "old"
    store = ObjectStore(root, inline_max=0)
    store.create_bucket("b")
    old = put(store, "b", "k", b"from before")
    store.close()
    db = sqlite3.connect(root / "objects.db")
    db.execute("ALTER TABLE objects DROP COLUMN data")  # the schema as it was
    db.commit()
    db.close()
    reopened = ObjectStore(root)
    try:
        assert read(reopened, reopened.head("b", "k")) == b"from before"
        assert reopened.head("b", "k").blob == old.blob
        assert put(reopened, "b", "new", b"inline now").blob == ""
    finally:
        reopened.close()


def test_a_store_from_before_listed_checksums_gains_them(tmp_path: Path) -> None:
    import sqlite3

    root = tmp_path / "old"
    store = ObjectStore(root, inline_max=0)
    store.create_bucket("b")
    put(store, "b", "summed", b"abc", checksums={"crc32": "NSRBwg=="})
    put(store, "b", "parts", b"abc", checksums={"sha256": "x" * 43 + "=-2"})
    put(store, "b", "plain", b"abc", checksums={})
    upload_id = store.create_upload("b", "up", checksums_algorithm="CRC32")
    store.close()
    db = sqlite3.connect(root / "objects.db")
    db.execute("ALTER TABLE objects DROP COLUMN checksum_kind")  # the schemas as they were
    db.execute("ALTER TABLE objects DROP COLUMN part_checksums")
    db.execute("ALTER TABLE uploads DROP COLUMN checksum_type")
    db.commit()
    db.close()
    reopened = ObjectStore(root)
    try:
        assert {o.key: o.checksum for o in reopened.list_objects("b").objects} == {
            "parts": "SHA256 COMPOSITE", "plain": "", "summed": "CRC32 FULL_OBJECT"}
        up = reopened.upload(upload_id)
        assert (up.checksums_algorithm, up.checksum_type) == ("crc32", None)
        assert reopened.head("b", "parts").part_checksums == []  # not known for old objects
        put(reopened, "b", "new", b"abc", checksums={"crc32": "NSRBwg=="})
    finally:
        reopened.close()


def test_multipart_full_object_checksum_combines_part_crcs(store: ObjectStore,
                                                           small_parts: int) -> None:
    store.create_bucket("b")
    upload_id = store.create_upload("b", "whole", checksums_algorithm="crc32",
                                    checksum_type="FULL_OBJECT")
    bodies = [os.urandom(2000), os.urandom(1500), os.urandom(3)]
    parts = [upload_part(store, upload_id, n, d, ("crc32",)) for n, d in enumerate(bodies, 1)]
    whole = base64.b64encode(zlib.crc32(b"".join(bodies)).to_bytes(4, "big")).decode()
    with pytest.raises(S3Error) as e:  # what the request says of the object is checked
        store.complete_upload(upload_id, [(p.number, p.etag) for p in parts],
                              expected={"crc32": "AAAAAA=="})
    assert code(e) == ("BadDigest", 400)
    info = store.complete_upload(upload_id, [(p.number, p.etag) for p in parts],
                                 expected={"crc32": whole}, expected_type="FULL_OBJECT")
    assert info.checksums == {"crc32": whole}
    assert [o.checksum for o in store.list_objects("b").objects] == ["CRC32 FULL_OBJECT"]


# -- crash recovery -----------------------------------------------------------------------


def test_reopen_removes_temp_files_and_orphan_blobs(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store = ObjectStore(root, inline_max=0)
    store.create_bucket("b")
    kept = put(store, "b", "kept", b"safe")
    w: BlobWriter = store.writer()
    w.write(b"half an upload")  # never committed: the process "dies" here
    w._file.flush()
    orphan = store.blob_path("ab" + "0" * 30)  # renamed but its row never committed
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"orphan")
    (store.blobs / "stray-file").write_bytes(b"?")
    store.close()
    assert len(tmp_files(store)) == 1

    reopened = ObjectStore(root, inline_max=0)
    try:
        assert tmp_files(reopened) == []
        assert blob_files(reopened) == {kept.blob}
        assert not (reopened.blobs / "stray-file").exists()
        assert read(reopened, reopened.head("b", "kept")) == b"safe"
    finally:
        reopened.close()
    w.abort()


def test_one_store_per_root(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    with pytest.raises(RuntimeError):
        ObjectStore(tmp_path)
    store.close()
    ObjectStore(tmp_path).close()


CRASHER = """
import sys, time
from pathlib import Path
from cloudland.storage.objects import ObjectStore
store = ObjectStore(Path(sys.argv[1]))
store.create_bucket("b")
w = store.writer()
w.write(b"committed")
store.commit("b", "done", w)
w = store.writer()
w.write(b"x" * 1_000_000)
w._file.flush()
print("writing", flush=True)
while True:
    w.write(b"y" * 65536)
    time.sleep(0.001)
"""


def test_kill_9_during_upload_leaves_no_object_and_no_temp_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(root)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(list((root / "tmp").iterdir())) == 1  # the torn upload
    store = ObjectStore(root)
    try:
        assert tmp_files(store) == []
        page = store.list_objects("b")
        assert keys(page) == ["done"]
        assert read(store, store.head("b", "done")) == b"committed"
        assert blob_files(store) == set()  # "committed" is small: it lives in its row
    finally:
        store.close()


# -- multipart ----------------------------------------------------------------------------


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(objects_module, "MIN_PART_SIZE", 1024)
    return 1024


def upload_part(store: ObjectStore, upload_id: str, number: int, data: bytes,
                checksums: tuple[str, ...] = ()) -> objects_module.PartInfo:
    w = store.writer(checksums)
    w.write(data)
    return store.put_part(upload_id, number, w)


def test_multipart_complete(store: ObjectStore, small_parts: int) -> None:
    store.create_bucket("b")
    upload_id = store.create_upload("b", "big", content_type="video/mp4",
                                    metadata={"owner": "me"},
                                    headers={"content-disposition": "attachment"},
                                    checksums_algorithm="SHA256")
    up = store.upload(upload_id)
    assert (up.bucket, up.key, up.content_type, up.metadata) == ("b", "big", "video/mp4",
                                                                 {"owner": "me"})
    assert up.checksums_algorithm == "sha256"
    bodies = [os.urandom(3000), os.urandom(2048), os.urandom(10)]
    parts = [upload_part(store, upload_id, n, d, ("sha256",))
             for n, d in zip([1, 3, 7], bodies, strict=True)]
    assert parts[0].etag == hashlib.md5(bodies[0]).hexdigest() and parts[0].size == 3000
    # Replacing a part number replaces its blob.
    old_blobs = blob_files(store)
    replaced = upload_part(store, upload_id, 3, bodies[1], ("sha256",))
    assert len(blob_files(store)) == len(old_blobs)
    parts[1] = replaced

    listed = [(1, parts[0].etag), (3, f'"{parts[1].etag}"'), (7, parts[2].etag)]
    sums = [base64.b64encode(hashlib.sha256(b).digest()).decode() for b in bodies]
    with pytest.raises(S3Error) as missing:  # a COMPOSITE upload names every part's checksum
        store.complete_upload(upload_id, listed, part_checksums={
            1: {"sha256": sums[0]}, 3: {"sha256": sums[1]}})
    assert (missing.value.code, missing.value.message) == (
        "InvalidRequest", "The upload was created using a sha256 checksum. The complete request "
        "must include the checksum for each part. It was missing for part 7 in the request.")
    info = store.complete_upload(upload_id, listed, part_checksums={
        n: {"sha256": c} for n, c in zip([1, 3, 7], sums, strict=True)})
    assert info.part_checksums == sums
    md5s = b"".join(hashlib.md5(b).digest() for b in bodies)
    assert info.etag == hashlib.md5(md5s).hexdigest() + "-3"
    assert info.parts == [3000, 2048, 10] and info.size == 5058
    assert info.content_type == "video/mp4" and info.metadata == {"owner": "me"}
    assert info.headers == {"content-disposition": "attachment"}
    composite = hashlib.sha256(b"".join(hashlib.sha256(b).digest() for b in bodies)).digest()
    assert info.checksums == {"sha256": base64.b64encode(composite).decode() + "-3"}
    assert store.head("b", "big") == info
    assert read(store, info) == b"".join(bodies)
    assert blob_files(store) == {info.blob} and tmp_files(store) == []
    with pytest.raises(S3Error) as e:
        store.upload(upload_id)
    assert code(e) == ("NoSuchUpload", 404)
    with pytest.raises(S3Error) as e:
        store.complete_upload(upload_id, [(1, parts[0].etag)])
    assert code(e) == ("NoSuchUpload", 404)


def test_multipart_errors(store: ObjectStore, small_parts: int) -> None:
    store.create_bucket("b")
    upload_id = store.create_upload("b", "k", content_type="x", metadata={}, headers={})
    p1 = upload_part(store, upload_id, 1, b"a" * 2000)
    p2 = upload_part(store, upload_id, 2, b"b" * 100)
    p3 = upload_part(store, upload_id, 3, b"c" * 2000)

    def refused(parts: list[tuple[int, str]]) -> tuple[str, int]:
        with pytest.raises(S3Error) as e:
            store.complete_upload(upload_id, parts)
        return code(e)

    assert refused([(2, p2.etag), (1, p1.etag)]) == ("InvalidPartOrder", 400)
    assert refused([(1, p1.etag), (1, p1.etag)]) == ("InvalidPartOrder", 400)
    assert refused([(1, p1.etag), (4, p1.etag)]) == ("InvalidPart", 400)
    assert refused([(1, p2.etag)]) == ("InvalidPart", 400)
    assert refused([(1, p1.etag), (2, p2.etag), (3, p3.etag)]) == ("EntityTooSmall", 400)
    assert refused([]) == ("MalformedXML", 400)
    with pytest.raises(S3Error) as e:
        upload_part(store, upload_id, 10_001, b"x")
    assert code(e) == ("InvalidArgument", 400)
    with pytest.raises(S3Error) as e:
        upload_part(store, "no-such-upload", 1, b"x")
    assert code(e) == ("NoSuchUpload", 404)
    assert tmp_files(store) == []
    # The upload survives refusals; a small last part is fine; unlisted parts are dropped.
    info = store.complete_upload(upload_id, [(1, p1.etag), (2, p2.etag)])
    assert info.size == 2100 and read(store, info) == b"a" * 2000 + b"b" * 100
    assert blob_files(store) == {info.blob}
    # A refusing check keeps the upload, so the client can retry.
    upload_id = store.create_upload("b", "k", content_type="x", metadata={}, headers={})
    p = upload_part(store, upload_id, 1, b"z")

    def refuse(current: ObjectInfo | None) -> None:
        assert current == info
        raise precondition_failed("If-None-Match")

    with pytest.raises(S3Error):
        store.complete_upload(upload_id, [(1, p.etag)], check=refuse)
    assert store.head("b", "k") == info and store.upload(upload_id).key == "k"
    assert len(blob_files(store)) == 2 and tmp_files(store) == []
    with pytest.raises(S3Error) as e:
        store.create_upload("nope", "k", content_type="x", metadata={}, headers={})
    assert code(e) == ("NoSuchBucket", 404)


def test_abort_upload_removes_its_blobs(store: ObjectStore, small_parts: int) -> None:
    store.create_bucket("b")
    upload_id = store.create_upload("b", "k", content_type="x", metadata={}, headers={})
    for n in range(1, 4):
        upload_part(store, upload_id, n, b"p" * 2000)
    assert len(blob_files(store)) == 3
    store.abort_upload(upload_id)
    assert blob_files(store) == set()
    with pytest.raises(S3Error) as e:
        store.abort_upload(upload_id)
    assert code(e) == ("NoSuchUpload", 404)
    with pytest.raises(S3Error) as e:
        store.list_parts(upload_id)
    assert code(e) == ("NoSuchUpload", 404)
    store.delete_bucket("b")


def test_list_uploads_and_parts_pagination(store: ObjectStore) -> None:
    store.create_bucket("b")
    store.create_bucket("other")
    store.create_upload("other", "a", content_type="x", metadata={}, headers={})
    ids: list[tuple[str, str]] = []
    for key in ["b", "a", "c/1", "a", "c/2"]:
        ids.append((key, store.create_upload("b", key, content_type="x", metadata={},
                                             headers={})))
    expected = sorted(ids, key=lambda kv: kv[0])  # stable: same key by initiation order
    ups, truncated = store.list_uploads("b")
    assert [(u.key, u.id) for u in ups] == expected and not truncated
    got: list[tuple[str, str]] = []
    key_marker = id_marker = ""
    while True:
        ups, truncated = store.list_uploads("b", key_marker=key_marker,
                                            upload_id_marker=id_marker, max_uploads=2)
        got += [(u.key, u.id) for u in ups]
        if not truncated:
            break
        key_marker, id_marker = ups[-1].key, ups[-1].id
    assert got == expected
    ups, _ = store.list_uploads("b", key_marker="a")  # without an id marker: after the key
    assert [u.key for u in ups] == ["b", "c/1", "c/2"]
    ups, _ = store.list_uploads("b", prefix="c/")
    assert [u.key for u in ups] == ["c/1", "c/2"]
    with pytest.raises(S3Error) as e:
        store.list_uploads("nope")
    assert code(e) == ("NoSuchBucket", 404)

    upload_id = expected[0][1]
    for n in [5, 1, 3, 2, 4]:
        upload_part(store, upload_id, n, bytes([n]) * n)
    parts, truncated = store.list_parts(upload_id)
    assert [p.number for p in parts] == [1, 2, 3, 4, 5] and not truncated
    assert [p.size for p in parts] == [1, 2, 3, 4, 5]
    parts, truncated = store.list_parts(upload_id, max_parts=2)
    assert [p.number for p in parts] == [1, 2] and truncated
    parts, truncated = store.list_parts(upload_id, part_number_marker=2, max_parts=2)
    assert [p.number for p in parts] == [3, 4] and truncated
    parts, truncated = store.list_parts(upload_id, part_number_marker=4, max_parts=2)
    assert [p.number for p in parts] == [5] and not truncated


def test_large_multipart_is_streamed(store: ObjectStore, small_parts: int) -> None:
    store.create_bucket("b")
    upload_id = store.create_upload("b", "k", content_type="x", metadata={}, headers={})
    chunk = os.urandom(64 * 1024)
    etags = []
    for n in (1, 2):
        w = store.writer()
        for _ in range(64):  # 4 MiB per part, written in 64 KiB chunks
            w.write(chunk)
        etags.append((n, store.put_part(upload_id, n, w).etag))
    info = store.complete_upload(upload_id, etags)
    assert info.size == 8 * 1024 * 1024
    digest = hashlib.md5()
    with store.open_blob(info) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == hashlib.md5(chunk * 128).hexdigest()


# -- review fixes ----------------------------------------------------------------------


def test_many_small_pieces_are_written_whole(store: ObjectStore) -> None:
    """A slow or chunked upload arrives in many pieces: more than one writev takes."""
    store.create_bucket("b")
    w = store.writer()
    pieces = [bytes([i % 251]) * 500 for i in range(objects_module._IOV_MAX + 77)]
    w.store(pieces)
    w.hash(pieces)
    info = store.commit("b", "k", w)
    assert read(store, info) == b"".join(pieces)
    assert info.etag == hashlib.md5(b"".join(pieces)).hexdigest()


def test_abort_waits_for_a_write_in_progress(store: ObjectStore,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler cancelled mid-upload aborts its writer while a thread may still be
    writing: the abort waits, so the write never lands in a descriptor reused later."""
    real = objects_module._write_pieces
    writing = threading.Event()

    def slow(fd: int, pieces: list[bytes]) -> None:
        writing.set()
        time.sleep(0.3)
        real(fd, pieces)

    monkeypatch.setattr(objects_module, "_write_pieces", slow)
    w = store.writer()
    w.spill()  # a file from the start
    t = threading.Thread(target=w.store, args=([b"x" * 1000],))
    t.start()
    assert writing.wait(5)
    w.abort()  # returns only once the write is done
    victim = store.tmp.parent / "victim"
    with open(victim, "wb") as f:
        f.write(b"")
    t.join(5)
    assert victim.read_bytes() == b"" and tmp_files(store) == []
    with pytest.raises(ValueError):
        w.store([b"late"])


def test_a_row_whose_file_is_gone_is_an_error_not_a_spin(store: ObjectStore) -> None:
    store.create_bucket("b")
    info = put(store, "b", "k", b"data")
    os.unlink(store.blob_path(info.blob))  # e.g. lost with sync=False and a power cut
    with pytest.raises(S3Error) as e:
        store.open_object("b", "k")
    assert code(e) == ("InternalError", 500) and info.blob in e.value.message


def test_reader_connections_end_with_their_threads(inline_store: ObjectStore) -> None:
    import gc

    def read_once() -> None:
        inline_store.list_buckets()

    for _ in range(20):
        t = threading.Thread(target=read_once)
        t.start()
        t.join()
    gc.collect()
    assert len(inline_store._readers) <= 1  # at most this thread's


def test_copy_without_hard_links_copies_the_bytes(store: ObjectStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "no hard links here")

    store.create_bucket("b")
    src = put(store, "b", "src", b"bytes to copy" * 1000)
    monkeypatch.setattr(objects_module.os, "link", no_links)
    copied = store.copy(store.head("b", "src"), "b", "dst")
    assert copied.blob != src.blob and copied.etag == src.etag
    assert read(store, store.head("b", "dst")) == b"bytes to copy" * 1000
    assert blob_files(store) == {src.blob, copied.blob} and tmp_files(store) == []
    os.unlink(store.blob_path(src.blob))  # the source gone meanwhile: NoSuchKey
    with pytest.raises(S3Error) as e:
        store.copy(src, "b", "again")
    assert code(e) == ("NoSuchKey", 404)


def test_cors_rules_are_kept_with_the_bucket_across_a_reopen(tmp_path: Path) -> None:
    import sqlite3

    from cloudland.storage.cors import Rule

    root = tmp_path / "old"
    store = ObjectStore(root)
    store.create_bucket("plain")
    store.create_bucket("web")
    store.close()
    db = sqlite3.connect(root / "objects.db")
    db.execute("ALTER TABLE buckets DROP COLUMN cors")  # the schema before CORS
    db.commit()
    db.close()
    rules = (Rule(origins=("https://app.example",), methods=("GET", "PUT"), headers=("*",),
                  expose=("ETag",), max_age=600, id="app"),
             Rule(origins=("*",), methods=("GET",)))
    store = ObjectStore(root)  # gains the column; no bucket has a configuration yet
    try:
        assert store.bucket("web").cors is None
        store.set_cors("web", rules)
        assert store.bucket("web").cors == rules
        with pytest.raises(S3Error) as e:
            store.set_cors("missing", rules)
        assert code(e) == ("NoSuchBucket", 404)
    finally:
        store.close()
    reopened = ObjectStore(root)
    try:
        assert reopened.bucket("web").cors == rules and reopened.bucket("plain").cors is None
        reopened.set_cors("web", None)
    finally:
        reopened.close()
    again = ObjectStore(root)
    try:
        assert again.bucket("web").cors is None
    finally:
        again.close()


def test_tags_ride_in_the_object_row_and_old_stores_gain_them(tmp_path: Path) -> None:
    import sqlite3

    root = tmp_path / "old"
    store = ObjectStore(root)
    store.create_bucket("b")
    put(store, "b", "small", b"inline")
    upload_id = store.create_upload("b", "up")
    store.close()
    db = sqlite3.connect(root / "objects.db")
    db.execute("ALTER TABLE objects DROP COLUMN tags")  # the schemas before tags
    db.execute("ALTER TABLE uploads DROP COLUMN tags")
    db.commit()
    db.close()
    store = ObjectStore(root, inline_max=0)
    try:
        assert store.head("b", "small").tags == {} and store.upload(upload_id).tags == {}
        tagged = put(store, "b", "file", b"blob", tags={"z": "1", "a": ""})
        assert store.head("b", "file").tags == {"z": "1", "a": ""}  # order kept
        store.set_tags("b", "small", {"k": "v"})
        small = store.head("b", "small")
        assert small.tags == {"k": "v"} and read(store, small) == b"inline"
        assert store.copy(tagged, "b", "copy").tags == tagged.tags
        assert store.copy(tagged, "b", "retagged", tags={}).tags == {}
        with pytest.raises(S3Error) as e:
            store.set_tags("b", "missing", {})
        assert code(e) == ("NoSuchKey", 404)
        with pytest.raises(S3Error) as e:
            store.set_tags("nope", "k", {})
        assert code(e) == ("NoSuchBucket", 404)
        later = store.create_upload("b", "multi", tags={"from": "upload"})
        part = upload_part(store, later, 1, b"p")
        assert store.complete_upload(later, [(1, part.etag)]).tags == {"from": "upload"}
    finally:
        store.close()
    reopened = ObjectStore(root)
    try:
        assert reopened.head("b", "small", body=False).tags == {"k": "v"}
        assert reopened.head("b", "multi").tags == {"from": "upload"}
        assert [o.key for o in reopened.list_objects("b").objects] == [
            "copy", "file", "multi", "retagged", "small"]
    finally:
        reopened.close()
