"""Every error the proxy produces, as types. `error_body` is the one place that turns them into API error shapes.

CcoError is the root. ClientError: the request was wrong (4xx, never retried by clients). UpstreamError: the
provider could not be reached or did not answer in time (502/504, type `api_error` as SPEC §4 wants, the message
naming the provider and the cause). Foreign exceptions are translated at the boundary (`raise … from`).
"""

from __future__ import annotations

import orjson


class CcoError(Exception):
    status = 500
    error_type = "api_error"
    # None: let the client decide from the status; False: the client must not retry (x-should-retry: false)
    should_retry: bool | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def headers(self) -> bytes:
        """Response headers that go with this error (retry advice)."""
        out = b""
        if self.retry_after is not None:
            out += b"retry-after: %d\r\n" % max(int(self.retry_after + 0.999), 0)
        if self.should_retry is False:
            out += b"x-should-retry: false\r\n"
        return out


class ClientError(CcoError):
    status = 400
    error_type = "invalid_request_error"
    should_retry = False


class InvalidRequest(ClientError):
    pass


class AuthenticationFailed(ClientError):
    status = 401
    error_type = "authentication_error"


class NotFound(ClientError):
    status = 404
    error_type = "not_found_error"


class MethodNotAllowed(ClientError):
    status = 405

    def __init__(self, message: str, allow: bytes) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> bytes:
        return super().headers() + b"allow: " + self.allow + b"\r\n"


class RequestTooLarge(ClientError):
    status = 413
    error_type = "request_too_large"


class HeadersTooLarge(ClientError):
    status = 431


class ServiceUnavailable(CcoError):
    """The proxy is shutting down."""

    status = 503
    error_type = "api_error"


class UpstreamError(CcoError):
    status = 502
    error_type = "api_error"

    def __init__(self, provider: str, cause: str, *, before_response: bool = False) -> None:
        super().__init__(f"upstream {provider}: {cause}")
        self.provider = provider
        self.cause = cause
        # True when no response byte had arrived: a request on a reused connection may be resent once
        self.before_response = before_response


class UpstreamConnectError(UpstreamError):
    """Could not connect, or the connection broke before the response was complete."""


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamProtocolError(UpstreamError):
    """The upstream sent something that is not HTTP/1.1."""


# OpenAI's error `type` for each status (used on /v1/chat/completions)
_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                 404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_exceeded"}


def error_body(status: int, error_type: str, message: str, request_id: str | None = None,
               shape: str = "anthropic") -> bytes:
    if shape == "openai":
        return orjson.dumps({"error": {"message": message, "type": _OPENAI_TYPES.get(status, "server_error"),
                                       "param": None, "code": error_type}})
    body: dict = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


def sse_error_event(error_type: str, message: str) -> bytes:
    """The event that ends a stream which failed after its first byte reached the client."""
    data = orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return b"event: error\ndata: " + data + b"\n\n"
