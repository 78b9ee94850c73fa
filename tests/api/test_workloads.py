"""The log streams of `api.workloads` on their own: a directory not tied to a Service
(the gateway's access log) streams its backlog, then, when following, what is appended."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cloudland.api.workloads import STREAMS, LogQuery, dir_log_stream


def test_a_log_directory_streams_its_backlog_then_follows(tmp_path: Path) -> None:
    (tmp_path / "stdout.log").write_text("before\n")
    query = LogQuery(instance=None, follow=True, previous=False, since=None, tail=None,
                     streams=STREAMS)

    async def main() -> list[dict[str, object]]:
        stream = dir_log_stream(tmp_path, query, "gateway")
        try:
            first = await asyncio.wait_for(anext(stream), 5)
            with (tmp_path / "stdout.log").open("a") as f:
                f.write("appended\n")
            second = await asyncio.wait_for(anext(stream), 5)
        finally:
            await stream.aclose()
        return [json.loads(line) for line in (first + second).splitlines()]

    records = asyncio.run(main())
    assert [(r["instance"], r["stream"], r["line"]) for r in records] == [
        ("gateway", "stdout", "before"), ("gateway", "stdout", "appended")]
