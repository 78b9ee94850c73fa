"""Upload a photo to CloudLand's S3 and print the CloudEvent it causes.

Run after `cloudland apply -f examples/storage`; it creates an access key with the
CLI, listens for the Bucket's notification on 127.0.0.1:8099 (SINK_PORT to change
it), uploads images/cat.jpg with boto3, and prints the event when it arrives. Then
it uploads the way a web page on http://localhost:5173 would with fetch() and a
presigned URL: the CORS preflight first, then the PUT carrying its Origin.
"""

import json
import os
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from botocore.config import Config

received = threading.Event()
ORIGIN = "http://localhost:5173"  # the web app the Bucket's cors rule allows


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(f"CloudEvent {self.headers['ce-type']} about {self.headers['ce-subject']}:")
        record = json.loads(body)
        print(f"  bucket {record['s3']['bucket']['name']}, size {record['s3']['object']['size']}")
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        received.set()

    def log_message(self, *args):
        pass


def cloudland(*args):
    out = subprocess.run([sys.executable, "-m", "cloudland", *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    sink = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("SINK_PORT", "8099"))), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = cloudland("status", "-o", "json")["addresses"]["s3"]
    key = cloudland("keys", "create", "--description", "examples/storage", "-o", "json")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=key["accessKeyId"],
                      aws_secret_access_key=key["secretAccessKey"],
                      config=Config(signature_version="s3v4"))
    s3.put_object(Bucket="uploads", Key="images/cat.jpg", Body=b"\xff\xd8 not really a jpeg",
                  ContentType="image/jpeg")
    print("uploaded s3://uploads/images/cat.jpg")
    if not received.wait(10):
        sys.exit("no CloudEvent within 10 s")
    sink.shutdown()
    browser_upload(s3)


def browser_upload(s3):
    """What a page's fetch(url, {method: "PUT", body}) does with a presigned URL."""
    url = s3.generate_presigned_url("put_object", ExpiresIn=300, Params={
        "Bucket": "uploads", "Key": "browser/hello.txt", "ContentType": "text/plain"})
    preflight = urllib.request.Request(url, method="OPTIONS", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type"})
    with urllib.request.urlopen(preflight) as answer:
        allowed = answer.headers["Access-Control-Allow-Origin"]
    put = urllib.request.Request(url, method="PUT", data=b"hello from a web page",
                                 headers={"Origin": ORIGIN, "Content-Type": "text/plain"})
    with urllib.request.urlopen(put) as answer:
        print(f"a page on {allowed} uploaded browser/hello.txt (HTTP {answer.status}); "
              f"it may read {answer.headers['Access-Control-Expose-Headers']}")


if __name__ == "__main__":
    main()
