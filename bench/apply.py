"""`cloudland apply` of 1,000 resources in one command (target: <= 3 s).

The real CLI runs end to end as a subprocess against a fresh daemon, on a
directory of 1,000 manifest files (ConfigMaps and Services, half each).  The
baseline is the floor for storing the same documents: inserting them into a
fresh SQLite WAL database in one transaction with the stdlib.  Extra rows show
where the time goes: the CLI's bare startup, reading the manifests, and the
server's share (the same apply posted straight to the API).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.harness import ROOT, Daemon, Row, child_env, failed, median, time_command

TIMEOUT = 120.0


def manifests(count: int, namespace: str = "default") -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for i in range(count):
        meta = {"name": f"r{i:04d}", "namespace": namespace, "labels": {"tier": "bench"}}
        if i % 2 == 0:
            docs.append({"apiVersion": "cloudland/v1", "kind": "ConfigMap", "metadata": meta,
                         "data": {"index": str(i), "greeting": "hello from the park"}})
        else:
            docs.append({"apiVersion": "cloudland/v1", "kind": "Service", "metadata": meta,
                         "spec": {"command": ["sleep", "3600"], "replicas": 1}})
    return docs


def write_dir(docs: list[dict[str, Any]], where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        path = where / f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def sqlite_floor(docs: list[dict[str, Any]], runs: int = 3) -> float:
    """Median seconds to insert the documents into a fresh WAL database, one transaction."""
    times = []
    for _ in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="cloudland-bench-sqlite-"))
        try:
            start = time.perf_counter()
            db = sqlite3.connect(tmp / "floor.db", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE resources (kind TEXT, namespace TEXT, name TEXT, "
                       "rv INTEGER, body TEXT, PRIMARY KEY (kind, namespace, name))")
            db.execute("BEGIN IMMEDIATE")
            for rv, doc in enumerate(docs, 1):
                meta = doc["metadata"]
                db.execute("INSERT INTO resources VALUES (?, ?, ?, ?, ?)",
                           (doc["kind"], meta["namespace"], meta["name"], rv,
                            json.dumps(doc, separators=(",", ":"), sort_keys=True)))
            db.execute("COMMIT")
            db.close()
            times.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return median(times)


def cli_startup() -> float:
    return time_command([sys.executable, "-m", "cloudland", "--version"], runs=3,
                        env=child_env(), cwd=ROOT)


def load_time(where: Path) -> float:
    """Seconds for the CLI's own manifest loader to read the directory (in process)."""
    from cloudland.cli.manifests import load

    start = time.perf_counter()
    load([str(where)], recursive=False)
    return time.perf_counter() - start


def post_apply(server: Daemon, docs: list[dict[str, Any]]) -> float:
    """Seconds for the API alone to apply the documents (one POST, no CLI)."""
    from bench.httpclient import Connection, run

    body = json.dumps({"items": docs, "stack": "bench-direct", "prune": False}).encode()

    async def go() -> float:
        host, port = server.host_port
        conn = await Connection.open(host, port)
        try:
            start = time.perf_counter()
            status, answer = await conn.request("POST", "/apis/cloudland/v1/apply", body)
            took = time.perf_counter() - start
        finally:
            conn.close()
        if status != 200:
            raise RuntimeError(f"POST /apply: HTTP {status}: {answer[:300]!r}")
        return took

    return float(run(go()))


def measure(server: Daemon, *, count: int = 1000) -> list[Row]:
    docs = manifests(count)
    floor = sqlite_floor(docs)
    work = Path(tempfile.mkdtemp(prefix="cloudland-bench-apply-"))
    rows: list[Row] = []
    try:
        write_dir(docs, work / "stack")
        cmd = [sys.executable, "-m", "cloudland", "apply", "-f", str(work / "stack"),
               "--home", str(server.home)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, env=child_env(),
                              cwd=ROOT, check=False)
        took = time.perf_counter() - start
        floor_label = "stdlib SQLite insert"
        if proc.returncode != 0:
            rows.append(failed(f"apply {count:,} resources (CLI)", "s",
                               f"exit {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace')[-300:]}", target=3.0))
        else:
            summary = re.search(rb"Apply complete:\s*(\d+) created", proc.stdout)
            created = summary.group(1).decode() if summary else "?"
            rows.append(Row(f"apply {count:,} resources (CLI)", took, "s", floor, floor_label,
                            target=3.0, note=f"{created} created, {count // 2} of them Services"))
        rows.append(Row("  of which: CLI startup (--version)", cli_startup(), "s", floor,
                        floor_label))
        rows.append(Row("  of which: read manifests", load_time(work / "stack"), "s", floor,
                        floor_label))
        direct = [dict(d, metadata={**d["metadata"], "namespace": "bench-direct"})
                  for d in docs]
        rows.append(Row("  server: POST /apply (no CLI)", post_apply(server, direct), "s",
                        floor, floor_label, note="same documents, another namespace"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows
