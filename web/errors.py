"""The gateway's exceptions, each naming its HTTP status.

Code below the views raises these with a message that tells the user what to fix;
`web.http.errors` is the one place they (and Werkzeug's HTTP errors, and anything unexpected) become
responses. Standard library only, so that `web.options` and the command-line client can use them.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class: `status` is the HTTP status, the message says what went wrong and how to fix it."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    status = 400


class Unauthorized(GatewayError):
    status = 401


class ModelNotFound(GatewayError):
    status = 404


class ResultNotFound(GatewayError):
    """No stored result with this id (never made, or removed by the retention limits)."""

    status = 404


class PayloadTooLarge(GatewayError):
    status = 413


class UnsupportedMediaType(GatewayError):
    status = 415


class LabelMapError(BadRequest):
    """An uploaded or stored label map cannot be parsed (the message has line and column)."""


class UnsupportedModel(GatewayError):
    """The gateway cannot read the model correctly (see docs/architecture.md, "No silent misreads")."""

    status = 422


class ConfigurationError(GatewayError):
    """The gateway's own configuration is wrong (e.g. MODEL_CONFIG_FILE missing)."""

    status = 500


class ModelServerError(GatewayError):
    """The model server answered with an error the gateway cannot attribute to the request."""

    status = 502


class SourceNotAllowed(BadRequest):
    """A picture URL the gateway will not fetch (a host not allowed, a link-local or metadata address)."""


class SourceUnavailable(GatewayError):
    """A picture could not be fetched from where a task says it is (Label Studio refused, timed out)."""

    status = 502


class ModelServerUnavailable(GatewayError):
    status = 503


class ModelServerTimeout(GatewayError):
    status = 504


class ServiceBusy(GatewayError):
    """Try again shortly: the gateway is at a limit, or the model is still loading (503 + Retry-After)."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsufficientStorage(GatewayError):
    """The prediction worked but the result could not be stored (disk full, folder not writable)."""

    status = 507
