"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: every
refusal names the field and none echoes the request body."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genai.serve.errors import APIError


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param, "code": None}},
        headers=headers,
    )


async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.param, exc.kind)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default echoes the input back (a multi-megabyte bad field would come back
    # as a multi-megabyte error body): report the field and the rule only.
    err = exc.errors()[0]
    # loc is ("body", field, <union member / index>...): the request's field is what the client knows
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = loc[0] if loc else "body"
    if err.get("type") == "json_invalid":
        return error_response(400, "request body is not valid JSON", "body")
    if err.get("type") == "missing":
        return error_response(422, f"{param} is required", param)
    return error_response(422, f"{param}: {err.get('msg', 'invalid value')}", param)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(
        exc.status_code,
        str(exc.detail),
        "body" if exc.status_code == 400 else None,  # Starlette's 400: the body did not parse
        "not_found" if exc.status_code == 404 else "http_error",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
