"""Reading uploaded files with a size limit, so a huge body is refused before it is held in memory."""

from __future__ import annotations

from fastapi import UploadFile

from fashion_search.core.images import InvalidImage
from fashion_search.core.settings import Settings

CHUNK = 1 << 20


def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The upload's bytes; InvalidImage(413) past settings.max_upload_bytes."""
    limit = settings.max_upload_bytes
    parts: list[bytes] = []
    size = 0
    while chunk := upload.file.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise InvalidImage(f"upload is larger than the {limit}-byte limit", 413)
        parts.append(chunk)
    return b"".join(parts)
