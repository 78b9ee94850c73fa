"""Serve a Python web app named "module:attr" on $PORT, in an exec'd instance.

The process driver execs `python -m cloudland.runtime.pyrun --app mod:attr`
for `python: {app: ...}` instances that no zygote forks (the sandbox driver
always; the process driver when it has no ZygotePool).  It imports and serves
the app exactly as a zygote-forked instance does — the same import errors, the
same WSGI/ASGI detection (`runtime/pyserve.py`), uvicorn for both — only
without the warm zygote.
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from cloudland.runtime.pyserve import detect_interface, import_app
from cloudland.runtime.zygote_main import Refused


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cloudland.runtime.pyrun")
    parser.add_argument("--app", required=True, help="module:attr of a WSGI or ASGI app")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # the app is imported from the working dir
    try:
        app = import_app(args.app)
    except Refused as exc:
        print(f"{exc.reason}: {exc.message}\n{exc.detail}".rstrip(), file=sys.stderr)
        raise SystemExit(1) from None
    uvicorn.run(app, host=args.host, port=args.port, lifespan="auto",
                interface=detect_interface(app))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
