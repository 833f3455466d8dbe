"""ZenML-compatible error responses: the three body shapes ZenML 0.98.0 answers with.

`{"detail": "..."}` for explicit HTTP errors, `{"detail": ["ExcType", "msg"]}` for handled
exceptions (`_wire.error_detail`), and the top-level 422 list `["ValueError", "..."]` that
ZenML's handler makes of FastAPI's `RequestValidationError` text.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from zstream_mp._wire import BROKER_RETRY_AFTER, RETRY_AFTER, error_detail
from zstream_mp.server.auth import AuthFailure

DISABLED = "Live event streaming is not enabled on this server."


def detail_response(
    status: int, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    """`{"detail": detail}` with `status`."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def exception_response(
    status: int, exc_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A handled exception as ZenML writes it: `{"detail": ["ExcType", "message"]}`."""
    return detail_response(status, error_detail(exc_type, message), headers)


def unavailable(detail: str) -> JSONResponse:
    """503 with ZenML's `Retry-After`, for broker outages, shutdown and subscriber caps."""
    return detail_response(503, detail, {RETRY_AFTER: BROKER_RETRY_AFTER})


def endpoint_context(func: Callable[..., Any], route: str) -> str:
    """The traceback-like tail FastAPI appends to validation errors for an endpoint."""
    code = inspect.unwrap(func).__code__
    return (
        f'\n  File "{code.co_filename}", line {code.co_firstlineno}, in {code.co_name}\n    {route}'
    )


def validation_error(errors: list[dict[str, Any]], context: str) -> JSONResponse:
    """FastAPI's `RequestValidationError` text inside ZenML's top-level 422 list."""
    n = len(errors)
    text = f"{n} validation error{'s' if n != 1 else ''}:\n"
    text += "".join(f"  {err}\n" for err in errors)
    text = (text + context).rstrip()
    return JSONResponse(["ValueError", text], status_code=422)


def prefixed(exc: ValidationError, *prefix: Any) -> list[dict[str, Any]]:
    """pydantic errors with their `loc` under `prefix` (e.g. `("body",)`)."""
    return [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False)]


def auth_refusal(failure: AuthFailure, right: str) -> JSONResponse:
    """401 for a missing or unknown token, 403 for a token without `right`."""
    if failure is AuthFailure.MISSING:
        return detail_response(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
    if failure is AuthFailure.INVALID:
        return exception_response(
            401, "CredentialsNotValid", "Authentication error: invalid bearer token."
        )
    return exception_response(
        403, "IllegalOperationError", f"This token does not have the '{right}' right."
    )
