"""Request bodies that carry files (a pushed artifact, a suite with its data, drift data) and
result objects as JSON answers.

Invariants: an upload is spooled to a temporary file while its bytes are counted (over the limit:
413, nothing kept), then unpacked by :func:`promptreg.artifact.transfer.unpack` in a worker thread
into a fresh temporary folder that is removed when the request ends; answers are
``promptreg.codec.encode`` of the facade's result, so the remote client rebuilds the same object.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from promptreg.artifact.transfer import CONTENT_TYPE, unpack
from promptreg.codec import encode
from promptreg.errors import InputError, PayloadTooLargeError

_SPOOL = 8 << 20


def reply(result, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A result object (or a list of them) as JSON; NaN and infinities are kept as Python's json writes them."""
    body = json.dumps(encode(result), allow_nan=True, separators=(",", ":"))
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


def _file_chunks(f, size: int = 1 << 20):
    f.seek(0)
    while chunk := f.read(size):
        yield chunk


@asynccontextmanager
async def received_folder(call, *, required: bool = True) -> AsyncIterator[Path | None]:
    """The tar body of ``call``'s request unpacked into a temporary folder (None for an empty optional
    body); the unpacking runs with the long requests (``ServerContext.run_long``)."""
    request: Request = call.request
    limit: int = call.server.config.max_upload_bytes
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype and ctype != CONTENT_TYPE:
        raise InputError(f"the body must be {CONTENT_TYPE} (an artifact or bundle packed by promptreg), not {ctype}")
    tmp = Path(tempfile.mkdtemp(prefix="promptreg-upload-"))
    try:
        total = 0
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL, dir=tmp) as raw:
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
                raw.write(chunk)
            if total == 0:
                if required:
                    raise InputError(f"an empty body: expected {CONTENT_TYPE}")
                yield None
                return
            dest = tmp / "content"
            await call.server.run_long(lambda: unpack(_file_chunks(raw), dest, max_bytes=limit))
        yield dest
    finally:
        await run_in_threadpool(shutil.rmtree, tmp, True)


__all__ = ["received_folder", "reply"]
