"""One error hierarchy for every layer: what went wrong, where, and what to do.

Each error carries an HTTP status and a machine-readable reason so the API can
render it in one shape (`to_dict`) and the client can rebuild it on the other
side (`from_dict`).  Raise these at the boundary where the problem is known;
catch broad exceptions only at request and reconcile boundaries.
"""

from __future__ import annotations

from typing import Any


class CloudLandError(Exception):
    status = 500
    reason = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        hint: str | None = None,
        causes: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint
        self.causes = causes or []

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.status,
            "reason": self.reason,
            "message": self.message,
        }
        if self.field:
            body["field"] = self.field
        if self.hint:
            body["hint"] = self.hint
        if self.causes:
            body["causes"] = self.causes
        return body

    @staticmethod
    def from_dict(body: dict[str, Any]) -> CloudLandError:
        cls = _BY_REASON.get(str(body.get("reason")), CloudLandError)
        err = cls(
            str(body.get("message", "unknown error")),
            field=body.get("field"),
            hint=body.get("hint"),
            causes=body.get("causes"),
        )
        if cls is CloudLandError:
            err.status = int(body.get("code", 500))
            err.reason = str(body.get("reason", "InternalError"))
        return err

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field and self.field not in self.message else ""
        return where + self.message


class BadRequest(CloudLandError):
    status = 400
    reason = "BadRequest"


class Unauthorized(CloudLandError):
    status = 401
    reason = "Unauthorized"


class Forbidden(CloudLandError):
    status = 403
    reason = "Forbidden"


class NotFound(CloudLandError):
    status = 404
    reason = "NotFound"

    @classmethod
    def object(cls, kind: str, namespace: str, name: str, *,
               hint: str | None = None) -> NotFound:
        """'service "web" not found in namespace "default"', as kubectl words it."""
        return cls(f'{kind.lower()} "{name}" not found in namespace "{namespace}"', hint=hint)


class AlreadyExists(CloudLandError):
    status = 409
    reason = "AlreadyExists"


class Conflict(CloudLandError):
    """A write based on a stale resourceVersion: re-read and try again."""

    status = 409
    reason = "Conflict"


class Gone(CloudLandError):
    """A watch asked for history that has been compacted away: re-list."""

    status = 410
    reason = "Expired"


class TooLarge(CloudLandError):
    status = 413
    reason = "RequestEntityTooLarge"


class UnsupportedMediaType(CloudLandError):
    status = 415
    reason = "UnsupportedMediaType"


class Invalid(CloudLandError):
    """The object does not match its schema; `causes` lists every bad field."""

    status = 422
    reason = "Invalid"


class Unavailable(CloudLandError):
    status = 503
    reason = "ServiceUnavailable"


_BY_REASON: dict[str, type[CloudLandError]] = {
    c.reason: c
    for c in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        AlreadyExists,
        Conflict,
        Gone,
        TooLarge,
        UnsupportedMediaType,
        Invalid,
        Unavailable,
    )
}
