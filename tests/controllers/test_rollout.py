"""Rolling-update arithmetic: bounds, order, scale up and down, Recreate, history."""

from __future__ import annotations

from cloudland.controllers.rollout import (
    Member,
    plan,
    record_revision,
    resolve_bound,
    surge_and_unavailable,
    template_hash,
)


def members(old_ready: int = 0, new_ready: int = 0, new_unready: int = 0,
            old_unready: int = 0) -> list[Member]:
    out, n = [], 0
    for count, current, ready in ((old_ready, False, True), (old_unready, False, False),
                                  (new_ready, True, True), (new_unready, True, False)):
        for _ in range(count):
            out.append(Member(f"i{n}", current, ready, n))
            n += 1
    return out


def test_bounds_follow_kubernetes_rounding() -> None:
    assert resolve_bound("25%", 10, round_up=True) == 3
    assert resolve_bound("25%", 10, round_up=False) == 2
    assert resolve_bound(2, 10, round_up=True) == 2
    assert surge_and_unavailable({}, 4) == (1, 0)
    assert surge_and_unavailable({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}},
                                 4) == (0, 1)
    assert surge_and_unavailable({"type": "Recreate"}, 4) == (0, 4)


def test_scale_up_and_down() -> None:
    assert plan([], 500, 125, 0).start == 500
    down = plan(members(new_ready=5), 2, 1, 0)
    assert down.start == 0 and len(down.stop) == 3
    assert set(down.stop) == {"i2", "i3", "i4"}  # highest indexes go first
    unready_first = plan(members(new_ready=2, new_unready=1), 2, 1, 0)
    assert unready_first.stop == ["i2"]


def test_rolling_update_never_drops_below_desired_ready() -> None:
    """Simulate a rollout of 3 replicas with maxSurge 1, maxUnavailable 0."""
    old, new_ready, new_unready = 3, 0, 0
    steps = 0
    while old or new_ready < 3:
        step = plan(members(old_ready=old, new_ready=new_ready, new_unready=new_unready),
                    3, 1, 0)
        stopped = len(step.stop)
        assert old + new_ready + new_unready + step.start <= 3 + 1 + stopped
        assert old - stopped + new_ready >= 3 or stopped == 0
        old -= stopped
        new_ready += new_unready  # what was starting became ready
        new_unready = step.start
        steps += 1
        assert steps < 20
    assert (old, new_ready) == (0, 3)


def test_unready_old_instances_go_at_once_and_recreate_waits() -> None:
    step = plan(members(old_ready=2, old_unready=1), 3, 1, 0)
    assert "i2" in step.stop
    recreate = plan(members(old_ready=3), 3, 0, 3, recreate=True)
    assert len(recreate.stop) == 3 and recreate.start == 0
    assert plan([], 3, 0, 3, recreate=True).start == 3


def test_template_hash_ignores_scaling_and_history_dedupes() -> None:
    spec = {"command": ["a"], "replicas": 1}
    assert template_hash(spec) == template_hash({**spec, "replicas": 9})
    assert template_hash(spec) != template_hash({**spec, "command": ["b"]})
    assert template_hash(spec, {"X": "1"}) != template_hash(spec, {"X": "2"})
    history, rev = record_revision([], "aaa", {}, "t1")
    history, rev2 = record_revision(history, "bbb", {}, "t2")
    same, rev3 = record_revision(history, "bbb", {}, "t3")
    assert (rev, rev2, rev3) == (1, 2, 2) and same == history
    back, rev4 = record_revision(history, "aaa", {}, "t4")  # an undo
    assert rev4 == 3 and [e["templateHash"] for e in back] == ["bbb", "aaa"]
