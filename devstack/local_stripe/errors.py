"""Stripe's error object {"error": {type, code, message, param}} and its HTTP statuses."""

from __future__ import annotations

from typing import Any


class StripeError(Exception):
    def __init__(self, status: int, type_: str, message: str, *, code: str | None = None,
                 param: str | None = None, extra: dict[str, Any] | None = None,
                 should_retry: bool | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}
        self.should_retry = should_retry

    def body(self, request_log_url: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        if request_log_url:
            error["request_log_url"] = request_log_url
        error.update(self.extra)
        return {"error": error}


def invalid(message: str, param: str | None = None, *, code: str | None = None) -> StripeError:
    return StripeError(400, "invalid_request_error", message, code=code, param=param)


def missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, "invalid_request_error", f"No such {kind}: '{object_id}'",
                       code="resource_missing", param=param)


def card_error(message: str, code: str, *, decline_code: str | None = None,
               extra: dict[str, Any] | None = None) -> StripeError:
    more = dict(extra or {})
    if decline_code:
        more["decline_code"] = decline_code
    return StripeError(402, "card_error", message, code=code, extra=more, should_retry=False)


def unauthorized(message: str) -> StripeError:
    return StripeError(401, "invalid_request_error", message)
