"""Hello world as a WSGI app: the smallest thing CloudLand can run 500 times."""

import os


def app(environ, start_response):
    body = f"Hello from CloudLand instance on port {os.environ.get('PORT')}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
