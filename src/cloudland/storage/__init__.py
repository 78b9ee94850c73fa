"""Object storage: an S3-compatible store whose committed changes emit CloudEvents.

`objects` keeps buckets and objects (blobs on disk, metadata in SQLite), `sigv4`
verifies AWS Signature V4, `server` speaks the S3 REST API over HTTP. The server
never imports controllers; the daemon wires it to the API for access keys.
"""
