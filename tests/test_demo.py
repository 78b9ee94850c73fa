"""The README's demo command works: it starts CloudLand and applies the park."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from cloudland.client import Client
from cloudland.home import Home
from tests.conftest import run_cli, wait_for


def test_demo_starts_cloudland_and_applies_the_park(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "cloudland", "demo", "--home", str(home)],
                            capture_output=True, text=True, timeout=120)
    try:
        assert result.returncode == 0, result.stderr
        assert "park: 10 objects applied" in result.stdout
        assert "hello: " in result.stdout
        state = Home.resolve(home).running_state()
        assert state is not None
        with Client(state["api"]) as client:
            route = client.get("Route", "default", "gate")
            assert route["metadata"]["labels"]["cloudland.io/stack"] == "park"
            # The controllers looked at it: its backend exists, so it is not NotReady.
            def reconciled() -> bool:
                status = client.get("Route", "default", "gate").get("status") or {}
                return status.get("observedGeneration") == 1
            wait_for(reconciled, message="the route to be reconciled")
            # The wait-time board and hello world run and answer.
            for name in ("wait-times", "hello"):
                status = client.get("Service", "default", name)["status"]
                assert status["readyReplicas"] == status["replicas"] > 0, name
                answer = httpx.get(f"http://{status['endpoints'][0]}/")
                assert answer.status_code == 200, name
        # The demo's own files match what runs: no changes planned.
        park = Path(__file__).resolve().parent.parent / "examples" / "park"
        plan = run_cli("plan", "-f", str(park), "--home", str(home), "--detailed-exitcode")
        assert plan.exit_code == 0, plan.output
    finally:
        run_cli("down", "--home", str(home))
