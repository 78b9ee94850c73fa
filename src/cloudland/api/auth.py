"""Who is calling: the hook the API runs before every resource request.

Today CloudLand listens on loopback and `TokenAuth(None)` admits everyone;
with a token set, requests must carry `Authorization: Bearer <token>`.  The
auth issue replaces this with real identities and authorization.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import Request

from cloudland.errors import Unauthorized


@dataclass(frozen=True)
class Principal:
    name: str


ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True)
class TokenAuth:
    token: str | None = None

    def __call__(self, request: Request) -> Principal:
        if self.token is None:
            return ANONYMOUS
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.token):
            raise Unauthorized("a valid bearer token is required",
                               hint="the CLI reads it from the CloudLand home; pass --home")
        return Principal("admin")
