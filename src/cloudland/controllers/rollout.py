"""Pure rollout arithmetic for Services: template hashes, surge/unavailable, the plan.

Nothing here touches processes or the store, so every rule of a rolling update
is tested as a plain function (tests/controllers/test_rollout.py).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

# Spec fields that do not change what an instance runs: editing them scales or
# reconfigures the rollout, it does not start a new revision.
NOT_TEMPLATE = ("replicas", "strategy", "autoscale")
HISTORY_LIMIT = 10


def template_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in NOT_TEMPLATE}


def template_hash(spec: dict[str, Any], env: dict[str, str] | None = None) -> str:
    """Short content hash of what instances run (resolved env included, so a
    changed ConfigMap value rolls the Service like a changed spec does)."""
    blob = json.dumps([template_of(spec), env or {}], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def resolve_bound(value: int | str, desired: int, *, round_up: bool) -> int:
    """maxSurge / maxUnavailable: an int, or a percentage of the desired replicas."""
    if isinstance(value, int):
        return max(value, 0)
    text = value.strip()
    if text.endswith("%"):
        share = float(text[:-1]) / 100 * desired
        return max(math.ceil(share) if round_up else math.floor(share), 0)
    return max(int(text), 0)


def surge_and_unavailable(strategy: dict[str, Any], desired: int) -> tuple[int, int]:
    if strategy.get("type") == "Recreate":
        return 0, max(desired, 1)
    rolling = strategy.get("rollingUpdate") or {}
    surge = resolve_bound(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = resolve_bound(rolling.get("maxUnavailable", 0), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # as Kubernetes: a rollout must be able to make progress
    return surge, unavailable


@dataclass(frozen=True)
class Member:
    """What the planner needs to know about one live instance."""

    id: str
    current: bool  # runs the current template
    ready: bool
    index: int


@dataclass
class Plan:
    start: int = 0  # new instances of the current template to start
    stop: list[str] = field(default_factory=list)  # instance ids to drain and stop


def plan(members: list[Member], desired: int, surge: int, unavailable: int, *,
         recreate: bool = False) -> Plan:
    """One step of a rolling update, as Kubernetes' deployment controller does it:
    never more than desired+surge instances, never fewer than desired-unavailable
    ready ones (counting only ready instances), old ones go first."""
    new = [m for m in members if m.current]
    old = [m for m in members if not m.current]
    out = Plan()
    # Too many of the current template (scale down): drop unready, then highest index.
    if len(new) > desired:
        extra = sorted(new, key=lambda m: (m.ready, -m.index))[: len(new) - desired]
        out.stop += [m.id for m in extra]
        new = [m for m in new if m.id not in out.stop]
    room = desired + surge - len(new) - len(old)
    out.start = max(0, min(desired - len(new), room))
    # Old instances: unready ones can always go; ready ones while enough stay ready.
    min_ready = max(desired - unavailable, 0)
    ready_now = sum(m.ready for m in new) + sum(m.ready for m in old)
    for m in sorted(old, key=lambda m: (m.ready, -m.index)):
        if not m.ready:
            out.stop.append(m.id)
        elif ready_now - 1 >= min_ready:
            out.stop.append(m.id)
            ready_now -= 1
    # With no surge room, make room by stopping old ones before starting new ones.
    if out.start == 0 and len(new) < desired and room <= 0:
        freed = sum(1 for m in old if m.id in out.stop)
        out.start = max(0, min(desired - len(new), room + freed))
    if recreate and old:
        out.start = 0  # Recreate: every old instance is gone before a new one starts
    return out


def record_revision(history: list[dict[str, Any]], thash: str, template: dict[str, Any],
                    now: str) -> tuple[list[dict[str, Any]], int]:
    """History with `thash` as the newest revision; returns it and its number."""
    for entry in history:
        if entry["templateHash"] == thash:
            if entry is history[-1]:
                return history, int(entry["revision"])
            # Rolling back to an older template makes it the newest revision again.
            number = max(int(e["revision"]) for e in history) + 1
            rest = [e for e in history if e is not entry]
            return [*rest, {**entry, "revision": number, "createdAt": now}][-HISTORY_LIMIT:], \
                number
    number = max((int(e["revision"]) for e in history), default=0) + 1
    entry = {"revision": number, "templateHash": thash, "template": template, "createdAt": now}
    return [*history, entry][-HISTORY_LIMIT:], number
