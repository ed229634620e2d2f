"""Every ``metav1.Status`` the server answers, built here and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapter.providers.interface import BadRequest, InternalError, MetricNotFound, ProviderError, Unavailable

NOT_FOUND = "the server could not find the requested resource"


class ApiError(Exception):
    """An error the server answers as a ``metav1.Status``."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details) if details else None

    def status(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        body["details"] = dict(details)
    body["code"] = code
    return body


def not_found(message: str = NOT_FOUND, *, group: str = "", metric: str = "") -> ApiError:
    """The one 404: with ``metric``, the details name it as custom-metrics-apiserver's external metrics do."""
    details = {"name": metric, "group": group, "kind": metric} if metric else None
    return ApiError(404, "NotFound", message, details)


def not_served(served: str) -> ApiError:
    """A path below a served version that no route of the group matches."""
    return not_found(f"{NOT_FOUND} (served: {served})")


#: what a code the HTTP layer answers (before a request reaches the server's handler) is called
_HTTP_LAYER_REASONS = {400: "BadRequest", 413: "RequestEntityTooLarge", 431: "RequestHeaderFieldsTooLarge"}


def http_layer_error(code: int, message: str) -> ApiError:
    """A malformed request refused by the HTTP layer (400, 413, 431)."""
    return ApiError(code, _HTTP_LAYER_REASONS.get(code, "BadRequest"), message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def entity_too_large(message: str) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(message: str, details: Mapping[str, Any] | None) -> ApiError:
    return ApiError(403, "Forbidden", message, details)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def internal_error(message: str) -> ApiError:
    return ApiError(500, "InternalError", message)


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def from_provider(error: ProviderError, group: str) -> ApiError:
    """What a provider's error is answered as."""
    message = str(error)
    if isinstance(error, MetricNotFound):
        return not_found(message, group=group, metric=error.metric)
    if isinstance(error, BadRequest):
        return bad_request(message)
    if isinstance(error, Unavailable):
        return service_unavailable(message)
    if isinstance(error, InternalError):
        return internal_error(message)
    raise TypeError(f"unknown provider error {type(error).__name__}") from error
