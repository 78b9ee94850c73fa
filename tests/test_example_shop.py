"""examples/mesh: a canary behind the gateway calling a strict-mTLS Service through
the mesh, applied with the CLI exactly as docs/gateway.md shows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx

from cloudland.client import Client
from tests.conftest import Running, wait_for
from tests.test_services import ready_count

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mesh"


def test_the_shop_example_serves_its_canary_through_the_mesh(cloudland: Running) -> None:
    result = cloudland.cli("apply", "-f", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    with Client(cloudland.api) as client:
        for name, replicas in (("payments", 2), ("storefront-v1", 2), ("storefront-v2", 1)):
            wait_for(lambda n=name, r=replicas: ready_count(client, n, r), timeout=30,
                     message=f"{name} ready")
    gateway = cloudland.state["gateway"]
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=gateway, headers={"Host": "shop.localhost"}, timeout=5) as http:
        wait_for(lambda: http.get("/api/buy").status_code == 200, timeout=10,
                 message="the shop to answer")
        for _ in range(300):
            r = http.get("/api/buy")
            assert r.status_code == 200, r.text
            assert r.text.endswith(": payment accepted\n") and r.headers["x-shop"] == "cloudland"
            seen[r.text.split(":")[0]] += 1
    assert set(seen) == {"storefront v1", "storefront v2"}
    assert 0.03 <= seen["storefront v2"] / 300 <= 0.2  # weight 10 of 100
    assert "shop#0" in cloudland.cli("routes").stdout
