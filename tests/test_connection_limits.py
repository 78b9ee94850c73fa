"""Clients that open connections and keep them idle cannot use up CloudLand's
descriptors: the supervisor raises its open-files limit, S3 answers past its share
with 503 SlowDown, and the API and S3 keep working."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError

from cloudland.daemon.supervisor import HEADER_TIMEOUT_S
from tests.conftest import Running, start_cloudland, wait_for
from tests.storage.conftest import client

SOFT, HARD = 256, 512  # the supervisor raises 256 to 512; each server may hold 512 // 4
SHARE = HARD // 4


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_cloudland(tmp_path_factory.mktemp("limits") / "home",
                              open_files=(SOFT, HARD))
    try:
        yield running
    finally:
        running.stop()


def soft_open_files(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text()
    found = re.search(r"^Max open files\s+(\d+)", limits, re.MULTILINE)
    assert found, limits
    return int(found.group(1))


def test_the_supervisor_raises_its_soft_open_files_limit(limited: Running) -> None:
    assert soft_open_files(int(limited.state["pid"])) == HARD


def test_idle_connections_past_the_share_get_slowdown_and_the_rest_keeps_working(
        limited: Running) -> None:
    key = limited.cli("keys", "create", "-o", "json").json()
    s3 = client(limited, (key["accessKeyId"], key["secretAccessKey"]))
    s3.create_bucket(Bucket="limits")
    address = urlsplit(str(limited.state["s3"]))
    idle: list[socket.socket] = []
    with contextlib.ExitStack() as closing:
        for _ in range(SHARE + 8):  # the share, then some: these never send a byte
            conn = closing.enter_context(
                socket.create_connection((address.hostname, address.port), timeout=10))
            idle.append(conn)
        # s3's pooled connection and the first idle ones fill the share; the ones
        # past it were answered at once, and closed.
        answers = []
        for conn in idle[SHARE - 1:]:
            conn.settimeout(10)
            answers.append(conn.recv(4096))
        assert all(answer.startswith(b"HTTP/1.1 503 ") and b"<Code>SlowDown</Code>" in answer
                   for answer in answers), answers
        fresh = client(limited, (key["accessKeyId"], key["secretAccessKey"]))
        with pytest.raises(ClientError) as slow:  # boto3 would back off and retry
            fresh.list_objects_v2(Bucket="limits")
        assert slow.value.response["Error"]["Code"] == "SlowDown"
        s3.put_object(Bucket="limits", Key="held", Body=b"ok")  # a held connection serves
        # The rest of CloudLand is untouched.
        assert httpx.get(f"{limited.api}/healthz", timeout=10).status_code == 200
        assert limited.cli("get", "buckets").exit_code == 0
    # Once the idle ones are gone, S3 serves again.

    def serves() -> bool:
        try:
            client(limited, (key["accessKeyId"], key["secretAccessKey"])).put_object(
                Bucket="limits", Key="after", Body=b"ok")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "SlowDown", exc.response
            return False
        return True

    wait_for(serves, timeout=10, message="S3 to serve again once the idle connections closed")
    assert s3.get_object(Bucket="limits", Key="after")["Body"].read() == b"ok"


def test_the_api_answers_503_past_its_share_and_recovers(limited: Running) -> None:
    address = urlsplit(limited.api)
    with contextlib.ExitStack() as closing:
        for _ in range(SHARE + 2):
            closing.enter_context(
                socket.create_connection((address.hostname, address.port), timeout=10))
        answer = httpx.get(f"{limited.api}/healthz", timeout=10)
        assert answer.status_code == 503, answer.text
        busy = limited.cli("get", "configmaps")
        assert busy.exit_code != 0
        assert "connection limit" in busy.output and "retry in a moment" in busy.output, \
            busy.output

    def healthy() -> bool:
        return httpx.get(f"{limited.api}/healthz", timeout=10).status_code == 200

    wait_for(healthy, timeout=10, message="the API to serve again once the idle ones closed")


def whole_answer(conn: socket.socket) -> bytes:
    """One HTTP response with a Content-Length, read to its last byte."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?i)content-length: *(\d+)", head)
    assert found, head
    length = int(found.group(1))
    while len(body) < length:
        body += conn.recv(4096)
    return data


def closed_by_server(conn: socket.socket, timeout: float) -> bool:
    """Whether the server closes `conn` (EOF) within `timeout`, without it answering."""
    conn.settimeout(timeout)
    try:
        return conn.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_the_api_closes_connections_that_send_no_request_in_time(limited: Running) -> None:
    """Idle-from-start and half-sent requests are closed after HEADER_TIMEOUT_S, so a
    client that leaks them cannot hold the API at 503; a streaming watch stays."""
    address = urlsplit(limited.api)
    with contextlib.ExitStack() as closing, limited.http() as api:
        watch = closing.enter_context(api.stream(
            "GET", "/apis/cloudland/v1/namespaces/default/configmaps?watch=true",
            timeout=HEADER_TIMEOUT_S * 4))
        # One that was answered, then starts its next request and stalls: uvicorn's own
        # keep-alive timer stops at the first byte, the header deadline does not.
        answered = closing.enter_context(socket.create_connection(
            (address.hostname, address.port), timeout=10))
        answered.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert whole_answer(answered).startswith(b"HTTP/1.1 200 ")
        answered.sendall(b"GET /healthz HTTP/1.1\r\n")
        idle = [closing.enter_context(socket.create_connection(
            (address.hostname, address.port), timeout=10)) for _ in range(SHARE + 2)]
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert httpx.get(f"{limited.api}/healthz", timeout=10).status_code == 503
        # The client keeps them all open; the server lets them go.
        assert all(closed_by_server(conn, HEADER_TIMEOUT_S * 3) for conn in [*idle, answered])
        assert httpx.get(f"{limited.api}/healthz", timeout=10).status_code == 200
        # The watch, whose request was whole, was left alone: it still delivers.
        api.post("/apis/cloudland/v1/namespaces/default/configmaps", json={
            "apiVersion": "cloudland/v1", "kind": "ConfigMap",
            "metadata": {"name": "after-idle"}, "data": {}}).raise_for_status()
        events = watch.iter_lines()
        assert any('"after-idle"' in line for line in events)
