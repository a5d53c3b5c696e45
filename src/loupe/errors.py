"""One error type for the whole application: ``LoupeError(code, message)``.

Services raise it; the API maps each code to one HTTP status in one place.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    CONFLICT = "conflict"
    STALE_VERSION = "stale_version"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    CSRF = "csrf_failed"
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA = "unsupported_media"
    BUSY = "busy"
    HUMAN_LABEL_PROTECTED = "human_label_protected"
    REGISTRATION_CLOSED = "registration_closed"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    CASE_FINISHED = "case_finished"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INVALID: 422,
    ErrorCode.CONFLICT: 409,
    ErrorCode.STALE_VERSION: 409,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.CSRF: 403,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA: 415,
    ErrorCode.BUSY: 409,
    ErrorCode.HUMAN_LABEL_PROTECTED: 409,
    ErrorCode.REGISTRATION_CLOSED: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.CASE_FINISHED: 409,
}


class LoupeError(Exception):
    """An expected failure with a stable machine-readable ``code``.

    ``retry_after`` (seconds) becomes a ``Retry-After`` header and a field of
    the detail (429 rate limits, 503 busy database).
    """

    def __init__(
        self, code: ErrorCode, message: str, *, retry_after: int | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        if retry_after is not None:
            extra["retry_after"] = retry_after
        self.extra = extra

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_detail(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, **self.extra}
