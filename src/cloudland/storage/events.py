"""CloudEvents from the object store, following the CloudEvents AWS S3 adapter.

Every committed change becomes one CloudEvent per matching notification rule:

    type     com.amazonaws.s3.<eventName>       (com.amazonaws.s3.ObjectCreated:Put)
    source   cloudland:s3.<region>.<bucket>     (the adapter's eventSource.region.bucket)
    id       <request id>.<bucket sequence>     (x-amz-request-id . x-amz-id-2's role)
    subject  the object key
    time     when the change was committed
    data     the S3 event record (eventVersion, eventName, s3.bucket, s3.object ...)

`S3Events.publish` only queues (the S3 response never waits for delivery); one
background task per sink delivers to it: an HTTP URL in CloudEvents binary mode
today, the broker when it lands. Delivery retries with back-off; each sink's queue
is bounded, and when it is full the oldest event is dropped and counted. Events are
kept in memory: the durable log is the broker's job (a later issue).
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from cloudland.storage.objects import ObjectInfo
from cloudland.storage.s3xml import iso8601

log = logging.getLogger("cloudland.s3.events")

QUEUE_LIMIT = 10_000
ATTEMPTS = 5
FIRST_BACKOFF = 0.2  # seconds, doubling


@dataclass(frozen=True)
class Rule:
    """One notification of a Bucket: which events, which keys, where to."""

    events: tuple[str, ...]  # "s3:ObjectCreated:*", "s3:ObjectRemoved:Delete", ...
    prefix: str
    suffix: str
    uri: str | None  # an HTTP CloudEvents sink
    broker: str | None = None  # delivered by the broker once it exists
    id: str = ""

    def matches(self, event_name: str, key: str) -> bool:
        wanted = f"s3:{event_name}"
        return (any(fnmatch.fnmatchcase(wanted, pattern) for pattern in self.events)
                and key.startswith(self.prefix) and key.endswith(self.suffix))


RuleSource = Callable[[str], list[Rule]]  # bucket name -> its notification rules


def rules_from_spec(spec: dict[str, Any], bucket: str) -> list[Rule]:
    """A Bucket resource's `spec.notifications` as rules."""
    found = []
    for index, note in enumerate(spec.get("notifications") or []):
        flt, sink = note.get("filter") or {}, note.get("sink") or {}
        found.append(Rule(tuple(note.get("events") or ("s3:ObjectCreated:*",)),
                          flt.get("prefix", ""), flt.get("suffix", ""), sink.get("uri"),
                          sink.get("broker"), id=f"{bucket}-{index}"))
    return found


def s3_record(event_name: str, info: ObjectInfo, *, region: str, request_id: str,
              source_ip: str, sequencer: str, rule_id: str) -> dict[str, Any]:
    """The record S3 itself sends for a change (one element of its `Records`)."""
    obj: dict[str, Any] = {"key": urllib.parse.quote_plus(info.key, safe="/"),
                           "sequencer": sequencer}
    if event_name.startswith("ObjectCreated"):
        obj.update(size=info.size, eTag=info.etag, versionId=info.version_id)
    elif event_name.startswith("ObjectTagging"):  # S3 names the version tagged, no size
        obj.update(eTag=info.etag, versionId=info.version_id)
    return {
        "eventVersion": "2.1", "eventSource": "cloudland:s3", "awsRegion": region,
        "eventTime": iso8601(info.last_modified), "eventName": event_name,
        "userIdentity": {"principalId": "cloudland"},
        "requestParameters": {"sourceIPAddress": source_ip},
        "responseElements": {"x-amz-request-id": request_id, "x-amz-id-2": sequencer},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": rule_id,
               "bucket": {"name": info.bucket, "ownerIdentity": {"principalId": "cloudland"},
                          "arn": f"arn:aws:s3:::{info.bucket}"},
               "object": obj},
    }


def cloud_event(event_name: str, info: ObjectInfo, record: dict[str, Any],
                region: str) -> CloudEvent:
    return CloudEvent({
        "id": f"{record['responseElements']['x-amz-request-id']}."
              f"{record['responseElements']['x-amz-id-2']}",
        "source": f"cloudland:s3.{region}.{info.bucket}",
        "specversion": "1.0",
        "type": f"com.amazonaws.s3.{event_name}",
        "subject": info.key,
        "time": datetime.fromtimestamp(info.last_modified, UTC),
        "datacontenttype": "application/json",
    }, record)


@dataclass
class S3Events:
    """Queues CloudEvents for the sinks of matching rules and delivers them in the
    background: one queue and one delivery task per sink, so a slow or dead sink
    holds up only its own events."""

    rules: RuleSource
    region: str = "us-east-1"
    queue_limit: int = QUEUE_LIMIT
    dropped: int = 0
    delivered: int = 0
    failed: int = 0
    _queues: dict[str, asyncio.Queue[CloudEvent]] = field(default_factory=dict, init=False)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False)
    _sequence: itertools.count[int] = field(default_factory=itertools.count, init=False)

    def publish(self, kind: str, info: ObjectInfo, *, request_id: str, source_ip: str) -> None:
        for rule in self.rules(info.bucket):
            if rule.uri is None or not rule.matches(kind, info.key):
                continue  # broker sinks: delivered once the broker lands
            sequencer = f"{next(self._sequence):016X}"
            record = s3_record(kind, info, region=self.region, request_id=request_id,
                               source_ip=source_ip, sequencer=sequencer, rule_id=rule.id)
            self._put(rule.uri, cloud_event(kind, info, record, self.region))

    def pending(self) -> int:
        return sum(q.qsize() for q in self._queues.values())

    def _put(self, uri: str, event: CloudEvent) -> None:
        queue = self._queues.get(uri)
        if queue is None:
            queue = self._queues[uri] = asyncio.Queue(maxsize=self.queue_limit)
            self._tasks[uri] = asyncio.create_task(self._deliver(uri, queue),
                                                   name=f"s3 events to {uri}")
        while True:
            try:
                queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                queue.get_nowait()
                self.dropped += 1

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10, sock_connect=2)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(self, uri: str, queue: asyncio.Queue[CloudEvent]) -> None:
        while True:
            event = await queue.get()
            try:
                ok = await self._send(uri, event)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end delivery to this sink
                log.exception("delivering CloudEvent %s to %s failed", event.get_id(), uri)
                ok = False
            if ok:
                self.delivered += 1
            else:
                self.failed += 1

    async def _send(self, uri: str, event: CloudEvent) -> bool:
        if self._session is None:
            return False
        message = to_binary_event(event)
        delay, why = FIRST_BACKOFF, ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._session.post(uri, data=message.body,
                                              headers=message.headers) as resp:
                    if resp.status < 300:
                        return True
                    why = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break  # the sink refuses it; retrying will not help
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                why = repr(exc)
            if attempt < ATTEMPTS:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning("CloudEvent %s to %s not delivered: %s", event.get_id(), uri, why)
        return False
