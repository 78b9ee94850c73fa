"""The gateway's certificate keeper: issues what the mesh needs, prunes what it no
longer does (the periodic check), and keeps the CA across keepers."""

from __future__ import annotations

from pathlib import Path

from cloudland.daemon.gateway import Certificates


def names(directory: Path, stem: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(stem + "."))


def test_keep_issues_and_the_periodic_check_prunes(tmp_path: Path) -> None:
    keeper = Certificates(tmp_path / "ca", tmp_path / "run")
    mesh, pay, cart = ("cloudland-system", "mesh"), ("default", "pay"), ("default", "cart")
    assert keeper.keep([mesh, pay, cart])
    assert keeper.ready([mesh, pay, cart]) and not keeper.ready([("default", "new")])
    assert len(names(keeper.sds_dir, "cart.default")) == 3  # certificate, key, SDS document
    assert keeper.keep([mesh, pay])  # a render: nothing removed yet
    assert names(keeper.sds_dir, "cart.default")
    assert keeper.keep([mesh, pay], prunable=set(keeper.kept))  # the periodic check
    assert names(keeper.sds_dir, "cart.default") == []
    assert names(keeper.sds_dir, "pay.default") and (keeper.sds_dir / "ca.sds.json").exists()
    assert not keeper.ready([mesh, pay, cart]) and keeper.ready([mesh, pay])
    ca = (tmp_path / "ca" / "ca.crt").read_bytes()
    assert Certificates(tmp_path / "ca", tmp_path / "run2").keep([mesh])
    assert (tmp_path / "ca" / "ca.crt").read_bytes() == ca  # one CA, reused
