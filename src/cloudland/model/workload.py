"""What runs: commands, Python apps, env, probes and limits shared by Service, Job, Function."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cloudland.model.meta import Duration, Strict


class KeyRef(Strict):
    name: str
    key: str
    optional: bool = False


class EnvSource(Strict):
    secretKeyRef: KeyRef | None = None
    configMapKeyRef: KeyRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvSource:
        if (self.secretKeyRef is None) == (self.configMapKeyRef is None):
            raise ValueError("set exactly one of secretKeyRef or configMapKeyRef")
        return self


class EnvVar(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str | None = None
    valueFrom: EnvSource | None = None

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value is not None and self.valueFrom is not None:
            raise ValueError(f"env '{self.name}': set value or valueFrom, not both")
        return self


class PythonApp(Strict):
    """A Python workload CloudLand can fork from a warm zygote."""

    app: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    module: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*$")
    script: str | None = None

    @model_validator(mode="after")
    def _one_entry(self) -> PythonApp:
        if sum(x is not None for x in (self.app, self.module, self.script)) != 1:
            raise ValueError("set exactly one of app ('module:attr'), module or script")
        return self


class HTTPGet(Strict):
    path: str = "/"
    port: int | None = Field(None, ge=1, le=65535)


class TCPSocket(Strict):
    port: int | None = Field(None, ge=1, le=65535)


class ExecAction(Strict):
    command: list[str] = Field(min_length=1)


class Probe(Strict):
    httpGet: HTTPGet | None = None
    tcpSocket: TCPSocket | None = None
    exec: ExecAction | None = None
    initialDelaySeconds: float = Field(0, ge=0)
    periodSeconds: float = Field(10, gt=0)
    timeoutSeconds: float = Field(1, gt=0)
    failureThreshold: int = Field(3, ge=1)
    successThreshold: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_handler(self) -> Probe:
        if sum(x is not None for x in (self.httpGet, self.tcpSocket, self.exec)) != 1:
            raise ValueError("a probe needs exactly one of httpGet, tcpSocket or exec")
        return self


_MEMORY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_CPU = re.compile(r"^(\d+m|\d+(\.\d+)?)$")


class ResourceList(Strict):
    cpu: str | float | None = None
    memory: str | int | None = None
    pids: int | None = Field(None, ge=1)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | int | None) -> str | int | None:
        if value is not None and not _MEMORY.match(str(value)):
            raise ValueError(f"'{value}' is not a memory quantity; write it like 64Mi or 1Gi")
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str | float | None) -> str | float | None:
        if value is not None and not _CPU.match(str(value)):
            raise ValueError(f"'{value}' is not a CPU quantity; write it like 500m or 2")
        return value


class Resources(Strict):
    limits: ResourceList = Field(default_factory=ResourceList)
    requests: ResourceList = Field(default_factory=ResourceList)


Runtime = Literal["process", "sandbox", "container"]


class Workload(Strict):
    """One runnable thing: exactly one of command, image or python."""

    command: list[str] | None = None
    args: list[str] = Field(default_factory=list)
    image: str | None = None
    python: PythonApp | None = None
    workingDir: str | None = None
    env: list[EnvVar] = Field(default_factory=list)
    runtime: Runtime = "process"
    resources: Resources = Field(default_factory=Resources)
    terminationGracePeriodSeconds: float = Field(30, ge=0)

    @model_validator(mode="after")
    def _one_entry(self) -> Workload:
        given = [n for n in ("command", "image", "python") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of command, image or python"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.image is not None and self.runtime == "process":
            self.runtime = "container"
        return self


class RollingUpdate(Strict):
    maxSurge: int | str = "25%"
    maxUnavailable: int | str = 0


class Strategy(Strict):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rollingUpdate: RollingUpdate = Field(default_factory=RollingUpdate)


class Autoscale(Strict):
    minReplicas: int = Field(1, ge=0)
    maxReplicas: int = Field(10, ge=1)
    targetConcurrency: int = Field(10, ge=1)
    window: Duration = "60s"
