"""The resource model: envelope, metadata, every kind's spec and status, schemas.

Imports nothing of CloudLand but `errors`, so every layer (store, API, controllers,
client, CLI) can share it.
"""

from cloudland.model.kinds import KINDS, KindInfo, kind_info
from cloudland.model.validate import parse_object

__all__ = ["KINDS", "KindInfo", "kind_info", "parse_object"]
