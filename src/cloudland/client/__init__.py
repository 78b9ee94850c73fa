"""Typed HTTP client for the CloudLand API; the CLI is built on it alone."""

from cloudland.client.client import Client, plural_of

__all__ = ["Client", "plural_of"]
