"""The resource store: SQLite (WAL), versioned CRUD, a change log for watch.

Only `cloudland.api` writes through it; nothing else imports sqlite3.
"""

from cloudland.store.store import Change, Store

__all__ = ["Change", "Store"]
