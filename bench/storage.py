"""Object storage (issue 5): CloudLand's S3 server side by side with moto's, both driven by boto3.

One run starts a real `cloudland up` (its S3 server on a free port, an access key
from `cloudland keys create`) and moto's S3 server (`python -m moto.server`, flask
+ werkzeug, objects in memory) on another free port, and drives both with the same
boto3 client code (`signature_version="s3v4"`, path-style addressing):

- 4 KiB PUT+GET: THREADS threads, each with its own boto3 client and its own keys,
  each op a PUT of a 4 KiB object then a GET of it (body read), closed loop for
  SMALL_S seconds after a short warm-up. One op = one PUT + one GET.
- the same with the THREADS boto3 clients spread over PROCESSES processes: one
  process of boto3 clients is held by its GIL near 1 / (boto3's CPU per op).
- the same with a lean client: wrk (C, WRK_CONNECTIONS keep-alive connections)
  replaying SigV4-presigned PUT and GET URLs of KEYS_LEAN keys, alternating PUT and
  GET; op = two requests. boto3 costs ~3 ms of CPU per op, more than either server
  here, so on two cores the boto3 row measures mostly boto3; this one measures the
  servers (each request is still signature-checked by CloudLand, moto checks none).
- 64 MiB PUT / GET MB/s: `put_object` of a 64 MiB file opened from disk, then
  `get_object` streamed (1 MiB chunks) into a sink; best of BIG_RUNS. The second
  baseline is `shutil.copyfile` of the same file in the same temporary directory
  (the daemon's home is there too) followed by fsync of the copy.
- listing 10,000 keys: keys created with threads (not timed), then a
  `list_objects_v2` paginator (10 pages of 1,000), every page read; best of 3.
- RSS while streaming a huge object: the daemon's VmRSS tree (supervisor, Envoy and
  every other child, `tree_rss_kib`) sampled every 100 ms during a single PUT of
  HUGE bytes (a seekable file-like object that repeats one 1 MiB block, so
  the client never holds it) and a GET streamed into a sink; peak minus the idle
  reading just before. boto3 over plain HTTP signs the payload, so it reads the body
  twice (SHA-256, then send) and seeks back in between: the object supports seek.

`python -m bench.storage` runs this suite alone and prints its table.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import html
import http.client
import io
import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from bench.gateway import parse_wrk, wrk_binary
from bench.harness import Daemon, Row, _children, child_env, daemon, failed, tree_rss_kib
from cloudland.runtime.ports import free_port

THREADS = 8
SMALL = 4 * 1024
SMALL_S = 3.0
PROCESSES = 2  # small_ops_spread: THREADS clients over this many processes
SPREAD_START_S = 4.0
WARMUP_S = 0.5
WRK_CONNECTIONS = 8
WRK_S = 5
KEYS_LEAN = 64
BIG = 64 * 1024 * 1024
BIG_RUNS = 3
LIST_KEYS = 10_000
HUGE = int(os.environ.get("BENCH_S3_HUGE_MIB", "2048")) * 1024 * 1024
BLOCK = 1024 * 1024
SAMPLE_S = 0.1
MB = 1_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


# Rows named "ceiling:" hold what no server could pass here, measured in the same run,
# against the row's own target: when a ceiling misses the target, so must every server.
CEILING_NOTE = ("what boto3 reaches against a server that does nothing but HTTP, in the same "
                "run: a ceiling for every server with this client on this machine")


# ---- servers ------------------------------------------------------------------


def tree_cpu_s(pid: int) -> float:
    """User + system CPU-seconds used so far by `pid` and its live descendants."""
    tree = _children()
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(tree.get(current, []))
    return total


@contextlib.contextmanager
def moto_server() -> Iterator[tuple[str, int]]:
    """moto's S3 server (flask/werkzeug, threaded) in its own process group."""
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 -- handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, env=child_env())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"moto.server exited {proc.returncode}: "
                                   f"{log.read()[-1000:].decode(errors='replace')}")
            try:
                with urllib.request.urlopen(url + "/moto-api/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto.server did not answer in 30 s") from None
                time.sleep(0.05)
        yield url, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(5)
        log.close()


def cloudland_s3(server: Daemon) -> tuple[str, str, str]:
    """The daemon's S3 URL and a fresh access key made by the real CLI."""
    state = json.loads((server.home / "state.json").read_text())
    url = state.get("s3") or ((state.get("parts") or {}).get("s3") or {}).get("url")
    if not url:
        raise RuntimeError("state.json names no S3 server")
    out = subprocess.run([sys.executable, "-m", "cloudland", "keys", "create", "-o", "json",
                          "--home", str(server.home)], capture_output=True, text=True,
                         env=child_env(), timeout=60, check=True).stdout
    key = json.loads(out)
    return str(url), key["accessKeyId"], key["secretAccessKey"]


def make_client(url: str, key: str, secret: str) -> Any:
    # A session per client: boto3's default session is not thread-safe to create from.
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=url, aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1, "mode": "standard"},
                      max_pool_connections=THREADS * 2))


# ---- bodies -------------------------------------------------------------------


class Repeating(io.RawIOBase):
    """A seekable, read-only file of `size` bytes that repeats one block: no big buffer."""

    def __init__(self, size: int, block: bytes) -> None:
        self.size, self.block, self.pos = size, block, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, min(self.size, base + offset))
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.size - self.pos)
        done = 0
        while done < n:
            at = (self.pos + done) % len(self.block)
            take = min(n - done, len(self.block) - at)
            view[done:done + take] = self.block[at:at + take]
            done += take
        self.pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self.pos
        buf = bytearray(min(size, self.size - self.pos))
        n = self.readinto(buf)
        return bytes(buf[:n])

    def __len__(self) -> int:
        return self.size


def drain(body: Any) -> int:
    got = 0
    for chunk in body.iter_chunks(BLOCK):
        got += len(chunk)
    return got


# ---- measurements -------------------------------------------------------------


def small_ops(url: str, key: str, secret: str, bucket: str,
              server_pid: int) -> tuple[float, float, float]:
    """PUT+GET pairs per second with THREADS clients; the client's CPU per second;
    the server's CPU-ms per op."""
    clients = [make_client(url, key, secret) for _ in range(THREADS)]
    body = os.urandom(SMALL)
    stop = threading.Event()
    counting = threading.Event()
    counts = [0] * THREADS
    errors: list[str] = []

    def worker(i: int) -> None:
        c, n = clients[i], 0
        try:
            while not stop.is_set():
                k = f"small/{i}/{n % 64}"
                c.put_object(Bucket=bucket, Key=k, Body=body)
                got = c.get_object(Bucket=bucket, Key=k)["Body"].read()
                if len(got) != SMALL:
                    raise RuntimeError(f"GET returned {len(got)} bytes")
                n += 1
                if counting.is_set():
                    counts[i] += 1
        except Exception as exc:  # report on the row, stop the others
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            stop.set()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(WARMUP_S)
    cpu0, server0, start = time.process_time(), tree_cpu_s(server_pid), time.perf_counter()
    counting.set()
    time.sleep(SMALL_S)
    counting.clear()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    server_cpu = tree_cpu_s(server_pid) - server0
    stop.set()
    for t in threads:
        t.join(30)
    if errors:
        raise RuntimeError(errors[0])
    ops = sum(counts)
    return ops / elapsed, cpu / elapsed, 1000 * server_cpu / max(ops, 1)


def _client_process(target: tuple[str, str, str], bucket: str, threads: int, tag: str,
                    window: tuple[float, float], results: Any) -> None:
    """One process of `small_ops_spread`: `threads` boto3 clients in a closed loop until
    the window's end; puts the ops completed inside the window (wall clock) on
    `results` with the CPU-seconds this process used meanwhile, or the first error."""
    clients = [make_client(*target) for _ in range(threads)]
    body = os.urandom(SMALL)
    counts = [0] * threads
    errors: list[str] = []

    def worker(i: int) -> None:
        c, n = clients[i], 0
        try:
            while time.time() < window[1]:
                k = f"spread/{tag}/{i}/{n % 64}"
                c.put_object(Bucket=bucket, Key=k, Body=body)
                if len(c.get_object(Bucket=bucket, Key=k)["Body"].read()) != SMALL:
                    raise RuntimeError("GET returned a short body")
                n += 1
                counts[i] += window[0] <= time.time() <= window[1]
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    time.sleep(max(0.0, window[0] - time.time()))
    cpu0 = time.process_time()
    time.sleep(max(0.0, window[1] - time.time()))
    cpu = time.process_time() - cpu0
    for t in pool:
        t.join()
    results.put(errors[0] if errors else (sum(counts), cpu))


def small_ops_spread(target: tuple[str, str, str], bucket: str,
                     server_pid: int) -> tuple[float, float, float]:
    """The 4 KiB PUT+GET op with the same THREADS boto3 clients spread over PROCESSES
    processes, so no one interpreter's GIL caps the load; op/s, the server's CPU-ms
    per op and the clients' CPU-ms per op."""
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    start = time.time() + SPREAD_START_S  # after the processes imported boto3
    window = (start, start + SMALL_S)
    procs = [spawn.Process(target=_client_process, args=(
        target, bucket, THREADS // PROCESSES, str(p), window, results), daemon=True)
        for p in range(PROCESSES)]
    for proc in procs:
        proc.start()
    try:
        time.sleep(max(0.0, window[0] - time.time()))
        server0 = tree_cpu_s(server_pid)
        time.sleep(max(0.0, window[1] - time.time()))
        server_cpu = tree_cpu_s(server_pid) - server0
        got = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    if any(isinstance(g, str) for g in got):
        raise RuntimeError(next(g for g in got if isinstance(g, str)))
    ops = sum(count for count, _ in got)
    client_cpu = sum(cpu for _, cpu in got)
    return (ops / SMALL_S, 1000 * server_cpu / max(ops, 1),
            1000 * client_cpu / max(ops, 1))


# wrk replays the presigned requests listed in a file, one "METHOD PATH" per line,
# cycling through them; every PUT sends the same 4 KiB body.
WRK_SCRIPT = """
local requests = {}
local i = 0
local body = string.rep("b", SIZE)
function init(args)
  for line in io.lines(args[1]) do table.insert(requests, line) end
end
function request()
  i = i % #requests + 1
  local method, path = requests[i]:match("(%S+) (%S+)")
  if method == "PUT" then
    return wrk.format("PUT", path, {["Content-Length"] = "SIZE"}, body)
  end
  return wrk.format("GET", path)
end
""".replace("SIZE", str(SMALL))


def lean_small_ops(client: Any, bucket: str, server_pid: int) -> tuple[float, float, str]:
    """PUT+GET pairs per second driven by wrk over presigned URLs; server CPU-ms per op;
    wrk's latency line."""
    lines = []
    for n in range(KEYS_LEAN):
        key = f"lean/{n}"
        client.put_object(Bucket=bucket, Key=key, Body=b"b" * SMALL)  # GETs never miss
        for method, op in (("PUT", "put_object"), ("GET", "get_object")):
            url = urllib.parse.urlsplit(client.generate_presigned_url(
                op, Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600))
            lines.append(f"{method} {url.path}?{url.query}")
    endpoint = client.meta.endpoint_url
    with tempfile.TemporaryDirectory(prefix="bench-s3-wrk-") as tmp:
        (Path(tmp) / "requests").write_text("\n".join(lines) + "\n")
        (Path(tmp) / "script.lua").write_text(WRK_SCRIPT)

        def run(seconds: float) -> tuple[Any, float, float]:
            cpu0, start = tree_cpu_s(server_pid), time.perf_counter()
            proc = subprocess.run(
                [wrk_binary(), "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency",
                 "-s", f"{tmp}/script.lua", endpoint, "--", f"{tmp}/requests"],
                capture_output=True, text=True, timeout=seconds + 30)
            if proc.returncode != 0:
                raise RuntimeError(f"wrk exited {proc.returncode}: {proc.stderr[-300:]}")
            return (parse_wrk(proc.stdout), time.perf_counter() - start,
                    tree_cpu_s(server_pid) - cpu0)

        run(1)  # warm-up
        load, _, cpu = run(WRK_S)
    if load.errors:
        raise RuntimeError(f"wrk saw failures: {load.errors}")
    ops = load.requests / 2
    return (load.rps / 2, 1000 * cpu / max(ops, 1),
            f"p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms per request")


def big_put_get(client: Any, bucket: str, path: Path) -> tuple[float, float]:
    """Best PUT and GET MB/s of the 64 MiB file over BIG_RUNS."""
    puts, gets = [], []
    for i in range(BIG_RUNS):
        with open(path, "rb") as f:
            start = time.perf_counter()
            client.put_object(Bucket=bucket, Key=f"big/{i}", Body=f)
            puts.append(time.perf_counter() - start)
        start = time.perf_counter()
        got = drain(client.get_object(Bucket=bucket, Key=f"big/{i}")["Body"])
        gets.append(time.perf_counter() - start)
        if got != BIG:
            raise RuntimeError(f"GET returned {got} bytes, not {BIG}")
        client.delete_object(Bucket=bucket, Key=f"big/{i}")
    return BIG / min(puts) / MB, BIG / min(gets) / MB


def raw_put_get(client: Any, bucket: str, path: Path) -> tuple[float, float]:
    """Best PUT and GET MB/s of the file through presigned URLs with http.client (1 MiB
    blocks): PUT is UNSIGNED-PAYLOAD, so nothing hashes the body on the client side and
    nothing parses on GET; the server and HTTP alone."""
    puts, gets = [], []
    for i in range(BIG_RUNS):
        key = f"raw/{i}"
        put = urllib.parse.urlsplit(client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300))
        conn = http.client.HTTPConnection(put.hostname, put.port, timeout=60, blocksize=BLOCK)
        try:
            with open(path, "rb") as f:
                start = time.perf_counter()
                conn.request("PUT", f"{put.path}?{put.query}", body=f,
                             headers={"Content-Length": str(BIG)})
                response = conn.getresponse()
                response.read()
                puts.append(time.perf_counter() - start)
            if response.status != 200:
                raise RuntimeError(f"presigned PUT answered {response.status}")
            get = urllib.parse.urlsplit(client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300))
            start = time.perf_counter()
            conn.request("GET", f"{get.path}?{get.query}")
            response = conn.getresponse()
            got = 0
            while chunk := response.read(BLOCK):
                got += len(chunk)
            gets.append(time.perf_counter() - start)
            if response.status != 200 or got != BIG:
                raise RuntimeError(f"presigned GET answered {response.status}, {got} bytes")
        finally:
            conn.close()
        client.delete_object(Bucket=bucket, Key=key)
    return BIG / min(puts) / MB, BIG / min(gets) / MB


def file_copy_mbs(path: Path) -> float:
    """shutil.copyfile of the 64 MiB file in the same directory, with fsync; best of 3."""
    times = []
    for _ in range(3):
        dest = path.with_name("copy.bin")
        start = time.perf_counter()
        shutil.copyfile(path, dest)
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        times.append(time.perf_counter() - start)
        dest.unlink()
    return BIG / min(times) / MB


def fill(url: str, key: str, secret: str, bucket: str, n: int) -> float:
    """Create n empty-ish keys with THREADS clients (not part of a row); seconds taken."""
    clients = [make_client(url, key, secret) for _ in range(THREADS)]
    start = time.perf_counter()

    def part(i: int) -> None:
        c = clients[i]
        for j in range(i, n, THREADS):
            c.put_object(Bucket=bucket, Key=f"list/{j:06d}", Body=b"x")

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(part, range(THREADS)))
    return time.perf_counter() - start


def list_time(client: Any, bucket: str, n: int) -> float:
    """Best of 3 full listings of the prefix with the paginator (10 pages of 1,000)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        seen = pages = 0
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix="list/", PaginationConfig={"PageSize": 1000}):
            seen += len(page.get("Contents", []))
            pages += 1
        best = min(best, time.perf_counter() - start)
        if seen != n:
            raise RuntimeError(f"listed {seen} keys in {pages} pages, not {n}")
    return best


def raw_list_time(client: Any, bucket: str, n: int) -> tuple[float, list[bytes]]:
    """The same 10 pages as presigned GETs on one keep-alive connection, bodies read but
    not parsed (only the continuation token is picked out): the server and HTTP without
    botocore's XML parsing; best of 3. Also the pages themselves."""
    best = float("inf")
    pages: list[bytes] = []
    for _ in range(3):
        conn: http.client.HTTPConnection | None = None
        start = time.perf_counter()
        token, seen = None, 0
        pages = []
        while True:
            params = {"Bucket": bucket, "Prefix": "list/", "MaxKeys": 1000}
            if token:
                params["ContinuationToken"] = token
            url = urllib.parse.urlsplit(client.generate_presigned_url(
                "list_objects_v2", Params=params, ExpiresIn=300))
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            conn.request("GET", f"{url.path}?{url.query}")
            response = conn.getresponse()
            body = response.read()
            pages.append(body)
            if response.status != 200:
                raise RuntimeError(f"presigned list answered {response.status}: {body[:200]!r}")
            seen += body.count(b"<Key>")
            found = re.search(rb"<NextContinuationToken>([^<]*)<", body)
            if not found:
                break
            token = html.unescape(found.group(1).decode())
        best = min(best, time.perf_counter() - start)
        if conn is not None:
            conn.close()
        if seen != n:
            raise RuntimeError(f"presigned listing saw {seen} keys, not {n}")
    return best, pages


def botocore_parse_s(client: Any, pages: list[bytes]) -> float:
    """botocore's own work on these list pages, no HTTP at all (what any server's
    listing costs the stock client at least): the check it runs on every 200 answer
    of S3 (the whole body parsed once to see whether it is an <Error>), then the
    parse into the result; best of 3."""
    from botocore import handlers
    from botocore.parsers import create_parser

    parser = create_parser("rest-xml")
    shape = client.meta.service_model.operation_model("ListObjectsV2").output_shape
    looks_like_error = getattr(handlers, "_looks_like_special_case_error",
                               lambda status, body: False)  # private: older botocores
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for body in pages:
            looks_like_error(200, body)
            parser.parse({"body": body, "headers": {}, "status_code": 200}, shape)
        best = min(best, time.perf_counter() - start)
    return best


def timestamp_us(pages: list[bytes]) -> float:
    """What botocore spends turning one listed LastModified into a datetime (it runs
    dateutil's general parser on each), in µs; best of 3 rounds of 1,000."""
    from botocore.utils import parse_timestamp

    found = re.search(rb"<LastModified>([^<]+)</LastModified>", pages[0]) if pages else None
    if found is None:
        return float("nan")
    value = found.group(1).decode()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(1000):
            parse_timestamp(value)
        best = min(best, time.perf_counter() - start)
    return best / 1000 * 1e6  # µs per call


def md5_mbs(path: Path) -> float:
    """hashlib's MD5 over the 64 MiB file in memory, best of 3: S3's ETag of a plain PUT is
    the body's MD5, so no PUT can be faster than this one core computing it."""
    data = path.read_bytes()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        hashlib.md5(data).digest()
        best = min(best, time.perf_counter() - start)
    return BIG / best / MB


def loopback_mbs(path: Path) -> float:
    """The most this machine moves over one loopback TCP connection: the file sent with
    sendfile (no copy in user space) by one thread, received with recv_into into one
    reused buffer by another; best of 3. No HTTP server can serve a GET faster."""
    listener = socket.create_server(("127.0.0.1", 0))
    best = float("inf")
    with listener, open(path, "rb") as f:
        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                while conn.recv(1):
                    offset = 0
                    while offset < BIG:
                        offset += os.sendfile(conn.fileno(), f.fileno(), offset, BIG - offset)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        buffer = memoryview(bytearray(BLOCK))
        with socket.create_connection(listener.getsockname(), timeout=30) as sock:
            for _ in range(3):
                start = time.perf_counter()
                sock.sendall(b"g")
                got = 0
                while got < BIG:
                    got += sock.recv_into(buffer)
                best = min(best, time.perf_counter() - start)
        server.join(5)
    return BIG / best / MB


# What every answer of S3's carries besides the body's own headers (see null_s3).
LAST_MODIFIED = "Mon, 07 Dec 2026 11:31:26 GMT"
S3_HEADERS = (f"x-amz-request-id: 6AB5319C00000003\r\nDate: {LAST_MODIFIED}\r\n"
              "Server: AmazonS3\r\n")


@contextlib.contextmanager
def null_s3(path: Path) -> Iterator[str]:
    """An "S3 server" that does nothing but HTTP: a PUT's body is read into a reused
    buffer and dropped, a GET sends `path` with sendfile, a DELETE answers 204. boto3's
    PUT and GET against it are the client's own ceiling on this machine.

    A GET answers with the object's CRC32 when the client asks for it, as S3 (and
    CloudLand and moto) do: boto3 asks by default and then checks the CRC32 of every
    byte it reads, which is part of what a download costs it. Answers carry the headers
    every S3 answer has (request id, Date, Server; a GET's Last-Modified and
    Accept-Ranges): botocore parses each of them (Last-Modified with dateutil), work a
    bare answer would leave out of the client's cost."""
    listener = socket.create_server(("127.0.0.1", 0))
    size = path.stat().st_size
    crc32 = 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            crc32 = zlib.crc32(block, crc32)
    checksum = base64.b64encode(crc32.to_bytes(4, "big")).decode()

    def serve(conn: socket.socket) -> None:
        # Headers and body leave in two writes: without NODELAY, Nagle holds the body
        # until the client's delayed ACK (~40 ms) comes back.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = memoryview(bytearray(BLOCK))
        with conn, open(path, "rb") as body:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ", 1)[0]
                fields = {k.strip().lower(): v.strip() for k, _, v in
                          (line.partition(":") for line in lines[1:])}
                if method == "GET":
                    asked = fields.get("x-amz-checksum-mode", "").upper() == "ENABLED"
                    extra = f"x-amz-checksum-crc32: {checksum}\r\n" if asked else ""
                    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n{extra}"
                                 f'ETag: "0"\r\nContent-Type: binary/octet-stream\r\n'
                                 f"{S3_HEADERS}Last-Modified: {LAST_MODIFIED}\r\n"
                                 "Accept-Ranges: bytes\r\n\r\n".encode())
                    conn.sendfile(body, 0, size)
                    continue
                if fields.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                left = int(fields.get("content-length", "0")) - len(pending)
                pending = b""
                while left > 0:
                    left -= conn.recv_into(buffer, min(left, BLOCK))
                status = "204 No Content" if method == "DELETE" else "200 OK"
                conn.sendall(f'HTTP/1.1 {status}\r\nContent-Length: 0\r\nETag: "0"\r\n'
                             f"{S3_HEADERS}\r\n".encode())

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the bench is done
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def client_ceiling(path: Path) -> tuple[float, float]:
    """boto3's best PUT and GET MB/s of the file against `null_s3`: what no server can
    beat with this client here."""
    with null_s3(path) as url:
        return big_put_get(make_client(url, "null", "null"), "null", path)


def small_ceiling() -> float:
    """`small_ops_spread`'s op/s against `null_s3` serving a 4 KiB object: the boto3
    clients' own ceiling for the 4 KiB op here."""
    with tempfile.TemporaryDirectory(prefix="bench-s3-null-") as scratch:
        path = Path(scratch) / "small.bin"
        path.write_bytes(os.urandom(SMALL))
        with null_s3(path) as url:
            ops, _, _ = small_ops_spread((url, "null", "null"), "null", os.getpid())
    return ops


def client_hash_s(path: Path) -> float:
    """What boto3 does to a PUT body before sending it over plain HTTP: SHA-256 (the
    signed payload) and CRC32 (its default checksum), each a full read; best of 3."""
    data = path.read_bytes()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        zlib.crc32(data)
        best = min(best, time.perf_counter() - start)
    return best


def huge_rss(server: Daemon, client: Any, bucket: str) -> tuple[float, float, float, str]:
    """Peak growth (MiB) of the daemon tree's RSS during a HUGE PUT, then GET; idle MiB."""
    pid = server.proc.pid
    idle = tree_rss_kib(pid)[0]
    peaks = {"put": idle, "get": idle}
    phase = ["put"]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peaks[phase[0]] = max(peaks[phase[0]], tree_rss_kib(pid)[0])
            done.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        start = time.perf_counter()
        client.put_object(Bucket=bucket, Key="huge", Body=Repeating(HUGE, os.urandom(BLOCK)))
        put_s = time.perf_counter() - start
        phase[0] = "get"
        start = time.perf_counter()
        got = drain(client.get_object(Bucket=bucket, Key="huge")["Body"])
        get_s = time.perf_counter() - start
    finally:
        done.set()
        sampler.join(5)
    if got != HUGE:
        raise RuntimeError(f"GET returned {got} bytes, not {HUGE}")
    client.delete_object(Bucket=bucket, Key="huge")
    note = (f"{HUGE // 2**20} MiB object: PUT {put_s:.1f} s ({HUGE / put_s / MB:.0f} MB/s, "
            f"client hashes it first), GET {get_s:.1f} s ({HUGE / get_s / MB:.0f} MB/s); "
            f"peak growth PUT {(peaks['put'] - idle) / 1024:.1f} MiB, "
            f"GET {(peaks['get'] - idle) / 1024:.1f} MiB; idle tree {idle / 1024:.0f} MiB")
    return (max(peaks.values()) - idle) / 1024, put_s, get_s, note


# ---- the suite ----------------------------------------------------------------


def _try(rows: list[Row], metric: str, unit: str, fn: Callable[[], list[Row]]) -> None:
    try:
        rows.extend(fn())
    except Exception as exc:  # one broken row must not hide the others
        rows.append(failed(metric, unit, f"{type(exc).__name__}: {exc}"[:300]))


def measure() -> list[Row]:
    rows: list[Row] = []
    with daemon() as server, moto_server() as (moto_url, moto_pid):
        cl_url, key, secret = cloudland_s3(server)
        targets = {"cloudland": (cl_url, key, secret), "moto": (moto_url, "bench", "bench")}
        pids = {"cloudland": server.proc.pid, "moto": moto_pid}
        clients = {name: make_client(*t) for name, t in targets.items()}
        for c in clients.values():
            c.create_bucket(Bucket="bench")

        def small() -> list[Row]:
            cl, cl_client, cl_cpu = small_ops(*targets["cloudland"], "bench", pids["cloudland"])
            mo, mo_client, mo_cpu = small_ops(*targets["moto"], "bench", pids["moto"])
            note = (f"{THREADS} threads in one process, one boto3 client each, "
                    f"{SMALL_S:.0f} s closed loop; op = PUT + GET; the bench process (all "
                    f"boto3 clients) used {cl_client:.2f} CPU/s against CloudLand "
                    f"({1000 * cl_client / cl:.1f} ms per op), {mo_client:.2f} against moto "
                    f"({1000 * mo_client / mo:.1f} ms per op)")
            return [Row("S3 4 KiB PUT+GET (8 clients)", cl, "op/s", mo, "moto", 5 * mo, "min",
                        note),
                    Row("  server CPU per 4 KiB op", cl_cpu, "ms", mo_cpu, "moto", None, "max",
                        note)]
        _try(rows, "S3 4 KiB PUT+GET", "op/s", small)

        def spread() -> list[Row]:
            cl, cl_cpu, cl_client = small_ops_spread(targets["cloudland"], "bench",
                                                     pids["cloudland"])
            mo, mo_cpu, mo_client = small_ops_spread(targets["moto"], "bench", pids["moto"])
            ceiling = small_ceiling()
            note = (f"the same {THREADS} boto3 clients and op, {THREADS // PROCESSES} "
                    f"threads in each of {PROCESSES} processes, so no one interpreter's GIL "
                    f"caps the load; {SMALL_S:.0f} s counted; CPU per op: server "
                    f"{cl_cpu:.2f} ms CloudLand, {mo_cpu:.2f} ms moto; the boto3 processes "
                    f"{cl_client:.2f} ms against CloudLand, {mo_client:.2f} ms against moto "
                    f"(two cores pass at most 2 / (client + server) ops per second)")
            ceiling_note = ("the same processes and op against a server that does only "
                            "HTTP (in the bench process, which is otherwise idle): the "
                            "most these boto3 clients can do on this machine, whatever "
                            "the server")
            return [Row(f"S3 4 KiB PUT+GET (boto3, {PROCESSES} processes)", cl, "op/s", mo,
                        "moto", 5 * mo, "min", note),
                    Row("  4 KiB vs boto3 alone", cl, "op/s", ceiling, "null server", None,
                        "min", ceiling_note),
                    Row("  ceiling: boto3 + null server", ceiling, "op/s", mo, "moto", 5 * mo,
                        "min", CEILING_NOTE)]
        _try(rows, "S3 4 KiB PUT+GET (boto3 processes)", "op/s", spread)

        def lean() -> list[Row]:
            cl, cl_cpu, cl_lat = lean_small_ops(clients["cloudland"], "bench", pids["cloudland"])
            mo, mo_cpu, mo_lat = lean_small_ops(clients["moto"], "bench", pids["moto"])
            note = (f"wrk -t1 -c{WRK_CONNECTIONS}, {WRK_S} s after a 1 s warm-up, replaying "
                    f"presigned PUT and GET URLs of {KEYS_LEAN} keys of 4 KiB; op = PUT + GET; "
                    f"CloudLand {cl_lat}, moto {mo_lat}")
            return [Row("S3 4 KiB PUT+GET (wrk, presigned)", cl, "op/s", mo, "moto", 5 * mo,
                        "min", note),
                    Row("  server CPU per op (wrk)", cl_cpu, "ms", mo_cpu, "moto", None, "max",
                        note)]
        _try(rows, "S3 4 KiB PUT+GET (wrk)", "op/s", lean)

        def big() -> list[Row]:
            workdir = Path(tempfile.mkdtemp(prefix="bench-s3-", dir=server.home.parent))
            try:
                src = workdir / "src.bin"
                with open(src, "wb") as f:
                    for _ in range(BIG // BLOCK):
                        f.write(os.urandom(BLOCK))
                copy = file_copy_mbs(src)
                hashing = client_hash_s(src)
                md5, loopback = md5_mbs(src), loopback_mbs(src)
                cl_put, cl_get = big_put_get(clients["cloudland"], "bench", src)
                mo_put, mo_get = big_put_get(clients["moto"], "bench", src)
                ceiling_put, ceiling_get = client_ceiling(src)
                cl_rput, cl_rget = raw_put_get(clients["cloudland"], "bench", src)
                mo_rput, mo_rget = raw_put_get(clients["moto"], "bench", src)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            note = (f"best of {BIG_RUNS}; put_object of the file, get_object streamed into a "
                    f"sink; file copy = shutil.copyfile + fsync in {workdir.parent}, best of 3; "
                    f"boto3 reads a PUT body twice before sending its first byte (SHA-256 "
                    f"for the signature, CRC32 checksum): {1000 * hashing:.0f} ms for 64 MiB "
                    f"here, so even a server taking no time could not exceed "
                    f"{BIG / hashing / MB:.0f} MB/s")
            ceiling_note = ("the same boto3 calls against a server that does only HTTP "
                            "(a PUT's body read and dropped, a GET sent with sendfile "
                            "and the CRC32 header boto3 then checks, as S3 sends), "
                            f"best of {BIG_RUNS}: the client's own cost here. Not a "
                            "ceiling: the null server shares the bench process (and its "
                            "GIL) with the client, and one loopback download's speed "
                            "swings from run to run (see the loopback row)")
            raw_note = ("presigned URLs driven by http.client in 1 MiB blocks, best of "
                        f"{BIG_RUNS}: PUT with UNSIGNED-PAYLOAD (no client hashing), GET "
                        "read into a sink: the servers without boto3's costs")
            return [
                Row("S3 64 MiB PUT", cl_put, "MB/s", mo_put, "moto", 3 * mo_put, "min", note),
                Row("S3 64 MiB GET", cl_get, "MB/s", mo_get, "moto", 3 * mo_get, "min", note),
                Row("  PUT, server + HTTP (presigned)", cl_rput, "MB/s", mo_rput, "moto",
                    3 * mo_rput, "min", raw_note),
                Row("  GET, server + HTTP (presigned)", cl_rget, "MB/s", mo_rget, "moto",
                    3 * mo_rget, "min", raw_note),
                Row("  PUT vs boto3 alone", cl_put, "MB/s", ceiling_put, "null server",
                    None, "min", ceiling_note),
                Row("  GET vs boto3 alone", cl_get, "MB/s", ceiling_get, "null server",
                    None, "min", ceiling_note),
                Row("S3 64 MiB PUT vs file copy", cl_put, "MB/s", copy, "copy+fsync",
                    0.5 * copy, "min", note),
                Row("S3 64 MiB GET vs file copy", cl_get, "MB/s", copy, "copy+fsync",
                    0.5 * copy, "min", note),
                Row("  PUT, server + HTTP vs file copy", cl_rput, "MB/s", copy, "copy+fsync",
                    0.5 * copy, "min", raw_note),
                # The machine's own limits, measured in this run: what no server can beat.
                Row("  PUT, server + HTTP vs MD5 alone", cl_rput, "MB/s", md5, "hashlib md5",
                    None, "min", "the ETag of a plain PUT is the body's MD5: one core "
                    "hashing 64 MiB in memory, nothing else, best of 3"),
                Row("  ceiling: MD5 alone vs file copy", md5, "MB/s", copy, "copy+fsync",
                    0.5 * copy, "min", "a plain PUT answers with the body's MD5, which one "
                    "core computes in order: no S3 server's PUT is faster than this"),
                Row("  GET, server + HTTP vs loopback", cl_rget, "MB/s", loopback,
                    "sendfile→recv_into", None, "min", "one loopback TCP connection: "
                    "sendfile in one thread, recv_into a reused buffer in another, no HTTP, "
                    "best of 3"),
            ]
        _try(rows, "S3 64 MiB PUT/GET", "MB/s", big)

        def listing() -> list[Row]:
            fills = {name: fill(*t, "bench", LIST_KEYS) for name, t in targets.items()}
            cl = list_time(clients["cloudland"], "bench", LIST_KEYS)
            mo = list_time(clients["moto"], "bench", LIST_KEYS)
            cl_raw, pages = raw_list_time(clients["cloudland"], "bench", LIST_KEYS)
            mo_raw, _ = raw_list_time(clients["moto"], "bench", LIST_KEYS)
            parsing = botocore_parse_s(clients["cloudland"], pages)
            note = (f"list_objects_v2 paginator, 10 pages of 1,000, best of 3; creating the "
                    f"keys (untimed) took {fills['cloudland']:.1f} s on CloudLand, "
                    f"{fills['moto']:.1f} s on moto ({THREADS} threads)")
            raw_note = ("the same 10 pages as presigned GETs on one keep-alive connection, "
                        "bodies read, not parsed: the server and HTTP alone; the rest of "
                        "the row above is botocore parsing the XML")
            return [Row("S3 list 10,000 keys (boto3)", cl, "s", mo, "moto", 0.5, "max", note),
                    Row("  of which server + HTTP", cl_raw, "s", mo_raw, "moto", None, "max",
                        raw_note),
                    Row("  ceiling: botocore parsing the 10 pages", parsing, "s", None, "", 0.5,
                        "max", "botocore over CloudLand's 10 pages in memory, no HTTP, best "
                        "of 3: its check of every 200 answer for an S3 <Error> (a whole "
                        "XML parse) and its rest-xml parser (each LastModified goes "
                        f"through dateutil: {timestamp_us(pages):.0f} µs a key here): the "
                        "floor for any server with the stock client")]
        _try(rows, "S3 list 10,000 keys", "s", listing)

        def rss() -> list[Row]:
            growth, _, _, note = huge_rss(server, clients["cloudland"], "bench")
            idle = tree_rss_kib(server.proc.pid)[0] / 1024
            return [Row(f"S3 RSS growth, {HUGE // 2**20} MiB PUT+GET", growth, "MiB", idle,
                        "idle daemon tree", 64, "max", note)]
        _try(rows, "S3 RSS growth streaming", "MiB", rss)
    return rows


if __name__ == "__main__":
    from rich.console import Console

    from bench.__main__ import _busy_seconds, _our_seconds, render

    started = time.perf_counter()
    busy0, ours0 = _busy_seconds(), _our_seconds()
    result = measure()
    others = (_busy_seconds() - busy0) - (_our_seconds() - ours0)
    console = Console() if sys.stdout.isatty() else Console(width=130)
    render(result, console)
    console.print(f"[dim]total {time.perf_counter() - started:.0f} s; other processes used "
                  f"{max(others, 0):.1f} CPU-s meanwhile[/]")
