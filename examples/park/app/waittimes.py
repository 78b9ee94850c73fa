"""The ride wait-time board: a WSGI app answering JSON."""

import json
import os
import random

RIDES = ["Container Coaster", "Kubernetes Carousel", "Serverless Swings", "Mesh Maze"]


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/healthz":
        body = b"ok\n"
        ctype = "text/plain"
    else:
        board = {ride: random.randint(0, 45) for ride in RIDES}
        body = json.dumps({"park": os.environ.get("PARK_NAME", "CloudLand"),
                           "waitMinutes": board}).encode()
        ctype = "application/json"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
