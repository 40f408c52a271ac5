"""What the routes document in the OpenAPI schema beyond their response models: every error answer (an ErrorOut
body) and the photo a product route serves."""

from __future__ import annotations

from fashion_search.gateway.schemas import ErrorOut

Responses = dict[int | str, dict[str, object]]


def error(description: str) -> dict[str, object]:
    return {"model": ErrorOut, "description": description}


# Request validation answers ErrorOut too (gateway/errors.py), not FastAPI's default list of errors.
INVALID: Responses = {422: error("invalid field")}
UNAVAILABLE: Responses = {503: error("a required service is down")}
UPLOAD: Responses = {
    400: error("not an image, empty or corrupt upload"),
    413: error("upload or image too large"),
    **INVALID,
    **UNAVAILABLE,
}
# Every route behind `requires(scope)` (gateway/auth.py), when FS_AUTH_REQUIRED is on: set on each APIRouter.
ACCESS: Responses = {
    401: error("missing, unknown or revoked API key"),
    403: error("the API key lacks the route's scope"),
    429: error("the key's rate limit is spent (Retry-After, RateLimit-* headers)"),
}
NOT_FOUND: Responses = {404: error("unknown product"), **INVALID, **UNAVAILABLE}
# FastAPI answers 400 itself when a JSON body cannot even be read (bytes that are not text).
PATCH_RESPONSES: Responses = {400: error("the body cannot be read as JSON"), **NOT_FOUND}
PHOTO: Responses = {
    200: {
        "description": "the product's photo in its stored format (octet-stream if the file is no longer an image)",
        "content": {"image/*": {}, "application/octet-stream": {}},
    },
}
