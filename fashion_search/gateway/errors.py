"""Map domain errors to HTTP answers with a clear JSON message; nothing reaches the client as a bare 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from fashion_search.core.domain import PRODUCT_ID_PATTERN, PRODUCT_ID_RULE
from fashion_search.core.grpc_common import ServiceUnavailable
from fashion_search.core.images import InvalidImage
from fashion_search.core.unavailable import Overloaded

log = logging.getLogger(__name__)

OUTAGE_RETRY_AFTER_S = 5


def _message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        msg = str(err.get("msg"))
        if (err.get("ctx") or {}).get("pattern") == PRODUCT_ID_PATTERN:  # the rule in words, not the regex
            msg = f"must be {PRODUCT_ID_RULE}"
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"


def _allowed_methods(request: Request) -> str:
    """Every method the API documents at the request's path, for a 405's Allow header."""
    paths = request.app.openapi()["paths"]
    path = request.url.path
    return ", ".join(sorted({
        method.upper() for template, ops in paths.items() if compile_path(template)[0].match(path) for method in ops
    }))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on the app."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405 and (allowed := _allowed_methods(request)):
            # Starlette names only the first matching route's methods (GET of /v1/products/{id}, not DELETE).
            exc = HTTPException(405, exc.detail, headers={**(exc.headers or {}), "Allow": allowed})
        return await http_exception_handler(request, exc)

    @app.exception_handler(InvalidImage)
    async def invalid_image(_: Request, exc: InvalidImage) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _message(exc)}, status_code=422)

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_: Request, exc: ServiceUnavailable) -> JSONResponse:
        log.warning("%s", exc)
        # A full model queue says when to come back (settings.overload_retry_after_s); an outage, a while later.
        retry_after = exc.retry_after_s if isinstance(exc, Overloaded) else OUTAGE_RETRY_AFTER_S
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(retry_after)})

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)
