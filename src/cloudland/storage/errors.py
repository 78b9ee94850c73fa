"""S3's errors: a code every S3 client knows, its HTTP status, and a message.

Raised anywhere in `storage`; the server turns one into the S3 XML error body
(`<Error><Code>NoSuchKey</Code><Message>...</Message>...`).
"""

from __future__ import annotations


class S3Error(Exception):
    """An S3 error response: `code` as AWS spells it, `status` its HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400, *,
                 resource: str | None = None, **extra: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.resource = resource
        self.extra = extra  # more elements of the error body (BucketName, Key, ...)


def no_such_bucket(bucket: str) -> S3Error:
    return S3Error("NoSuchBucket", "The specified bucket does not exist", 404,
                   BucketName=bucket)


def no_such_key(key: str) -> S3Error:
    return S3Error("NoSuchKey", "The specified key does not exist.", 404, Key=key)


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", "The specified multipart upload does not exist. The upload "
                   "ID may be invalid, or the upload may have been aborted or completed.", 404,
                   UploadId=upload_id)


def invalid_argument(message: str, name: str | None = None,
                     value: str | None = None) -> S3Error:
    extra = {}
    if name is not None:
        extra["ArgumentName"] = name
    if value is not None:
        extra["ArgumentValue"] = value
    return S3Error("InvalidArgument", message, 400, **extra)


def precondition_failed(condition: str) -> S3Error:
    return S3Error("PreconditionFailed", "At least one of the pre-conditions you specified "
                   "did not hold", 412, Condition=condition)


def invalid_request(message: str) -> S3Error:
    return S3Error("InvalidRequest", message, 400)
