"""The shop: a storefront (two versions, canaried by a Route) that calls a payments
Service through the mesh. Payments requires mutual TLS; the storefront never sees
a certificate, because its calls go through Envoy, which holds the mesh's own."""

import os
import urllib.request


def payments(environ, start_response):
    body = b"payment accepted"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def storefront(environ, start_response):
    # PAYMENTS_URL is the payments Service's stable mesh address (an Envoy listener).
    with urllib.request.urlopen(os.environ["PAYMENTS_URL"] + "/charge", timeout=5) as resp:
        paid = resp.read().decode()
    body = f"storefront {os.environ['VERSION']}: {paid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
