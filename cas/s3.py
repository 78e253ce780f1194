"""The S3 requests behind `cas.objects.FsspecBackend` on s3fs: one request per verb.

Several s3fs calls send requests their names do not suggest: ``cat_file`` sends a
HEAD before its GET (to decide on a concurrent ranged read), ``info``/``exists``/
``isfile`` follow a missing key's HEAD with a LIST (is it a folder?), ``ls`` of an
empty folder lists the parent too, and ``find`` of an empty prefix adds a HEAD and
a LIST. These helpers speak through the filesystem's own ``call_s3`` (its client,
retries, error translation and request options), exactly one request each, and
page listings lazily (1,000 keys a request), so a caller can stop early.

fsspec and s3fs are not imported here: the filesystem object comes from
`cas.objects`, the one module that imports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

PAGE = 1000  # keys per ListObjectsV2 response (the S3 maximum and default)


def is_s3(fs: Any) -> bool:
    """Whether `fs` is an s3fs filesystem (the only one these helpers speak to)."""
    protocol = fs.protocol
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "s3" in protocols and hasattr(fs, "call_s3")


def head(fs: Any, path: str) -> dict[str, Any] | None:
    """An fsspec-style info dict of the object at `path` from one HEAD; None if absent."""
    bucket, key, _ = fs.split_path(path)
    try:
        found = fs.call_s3("head_object", Bucket=bucket, Key=key)
    except FileNotFoundError:
        return None
    return {
        "name": f"{bucket}/{key}",
        "type": "file",
        "size": int(found["ContentLength"]),
        "LastModified": found.get("LastModified"),
    }


def create(fs: Any, path: str, data: bytes) -> bool:
    """PUT `data` at `path` only if no object is there (``If-None-Match: *``); whether it
    did. One request. S3 answers 412 when the key exists and 409 to the loser of two
    concurrent conditional PUTs; both mean "someone else's". A store that ignores the
    header (an S3 clone without conditional writes) overwrites, as a plain PUT would."""
    bucket, key, _ = fs.split_path(path)
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except FileExistsError:  # s3fs's 412 when the answer names the If-None-Match condition
        return False
    except OSError as error:
        if lost_race(error):
            return False
        raise
    return True


LOST = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


def lost_race(error: BaseException) -> bool:
    """Whether s3fs's `error` is S3 refusing a conditional PUT (412 without the
    condition named, which s3fs makes a plain `OSError`, or 409): its error code,
    from the botocore error s3fs keeps as the cause."""
    response = getattr(error.__cause__, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in LOST


def listing(
    fs: Any, path: str, *, delimiter: str = "", page: int = PAGE
) -> Iterator[dict[str, Any]]:
    """Info dicts of the objects below the folder `path`, `page` keys per request.

    Without a delimiter: every object below, in key order. With ``"/"``: the
    folder's own objects and its sub-folders (``"type": "directory"``). An absent
    folder is one empty page; an absent bucket raises `FileNotFoundError`.
    """
    bucket, key, _ = fs.split_path(path)
    prefix = f"{key.strip('/')}/" if key.strip("/") else ""
    options: dict[str, Any] = {
        "Bucket": bucket,
        "Prefix": prefix,
        "Delimiter": delimiter,
        "MaxKeys": page,
    }
    while True:
        answer = fs.call_s3("list_objects_v2", **options)
        for common in answer.get("CommonPrefixes", []):
            name = f"{bucket}/{common['Prefix'].rstrip('/')}"
            yield {"name": name, "type": "directory", "size": 0}
        for item in answer.get("Contents", []):
            yield {
                "name": f"{bucket}/{item['Key']}",
                "type": "file",
                "size": int(item["Size"]),
                "LastModified": item.get("LastModified"),
            }
        if not answer.get("IsTruncated"):
            return
        options["ContinuationToken"] = answer["NextContinuationToken"]
