"""The one place errors become responses: JSON under ``/api/`` (and for ``.json`` URLs), the
``error.html`` page elsewhere.

Every error body is `{"error": {"code": <status>, "message": <what to fix>}}`, built by `error_body`
only. Werkzeug's HTTP errors get messages that say what to do; unexpected exceptions are logged
with their traceback and answered with a generic 500: a stack trace never reaches the user.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, jsonify, render_template, request
from jinja2 import TemplateNotFound
from markupsafe import escape
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from web.errors import GatewayError, ServiceBusy

API_PREFIX = "/api/"
LABEL_STUDIO_PREFIX = "/label-studio/"  # the ML backend (web/integrations/label_studio): JSON, Basic auth
_WERKZEUG_MESSAGES = {
    404: "no such page: check the URL (the API lives under /api/v1, its documentation at /docs)",
    405: "this URL does not accept the {method} method",
}


class BodyTooLarge(RequestEntityTooLarge):
    """A body sent without Content-Length (chunked) that went past MAX_CONTENT_LENGTH."""


GENERIC_500 = "internal error in the gateway; it has been logged — please try again or report it"


def _too_large_message(exc: HTTPException) -> str:
    """Which limit a 413 from Werkzeug hit: the body size, or the form's part count / text field size."""
    config = current_app.config
    limit = request.max_content_length  # MAX_CONTENT_LENGTH, or a route's own (job uploads)
    setting = getattr(request, "limit_setting", "MAX_CONTENT_LENGTH")
    length = request.content_length
    size = f" ({limit / (1024 * 1024):g} MiB)" if limit else ""
    body = f"the upload is larger than {setting}{size}: send a smaller file"
    form = (
        f"the form has more than {config.get('MAX_FORM_PARTS')} parts or a text field larger than "
        f"{config.get('MAX_FORM_MEMORY_SIZE', 0) // 1024} KiB: send the image as a file part and only the "
        "documented fields"
    )
    if isinstance(exc, BodyTooLarge) or (limit and length is not None and length > limit):
        return body
    if length is not None:
        return form
    return f"{body}, or {form}"


def describe(exc: BaseException) -> tuple[int, str]:
    """(status, user-facing message) for any exception; the only place statuses are chosen."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.message
    if isinstance(exc, HTTPException):
        code = exc.code or 500
        if code == 413:
            return 413, _too_large_message(exc)
        if code in _WERKZEUG_MESSAGES:
            return code, _WERKZEUG_MESSAGES[code].format(method=request.method)
        if code >= 500:
            return code, GENERIC_500
        return code, exc.description or exc.name
    return 500, GENERIC_500


def wants_json() -> bool:
    """API clients get JSON errors; browsers on the HTML pages get the error page."""
    path = request.path
    json_paths = ("/swagger.json", "/readyz", "/metrics")
    json_prefixes = (API_PREFIX, LABEL_STUDIO_PREFIX)
    return path.startswith(json_prefixes) or path in json_paths or path.endswith(".json")


def error_body(status: int, message: str) -> dict[str, Any]:
    """The JSON error body (the `Error` model of /swagger.json)."""
    return {"error": {"code": status, "message": message}}


def error_response(exc: BaseException) -> Response:
    """Build the JSON or HTML error response for `exc`, logging anything unexpected."""
    status, message = describe(exc)
    if status >= 500 and not isinstance(exc, GatewayError | HTTPException):
        current_app.logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    elif status >= 500:
        current_app.logger.warning("%s %s -> %d: %s", request.method, request.path, status, message)
    body = error_body(status, message)
    error = body["error"]
    if wants_json():
        response = jsonify(body)
    else:
        try:
            body = render_template("error.html", error=error)
        except TemplateNotFound:
            body = (
                f"<!doctype html><title>Error {status}</title><h1>Error {status}</h1><p>{escape(message)}</p>"
            )
        response = Response(body, mimetype="text/html")
    response.status_code = status
    if status == 401:
        basic = request.path.startswith(LABEL_STUDIO_PREFIX)  # Label Studio's ML backends use Basic auth
        response.headers["WWW-Authenticate"] = 'Basic realm="label-studio"' if basic else 'Bearer realm="api"'
    if isinstance(exc, ServiceBusy):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, HTTPException) and status == 405 and exc.get_response().headers.get("Allow"):
        response.headers["Allow"] = exc.get_response().headers["Allow"]
    return response


def register_error_handlers(app: Flask) -> None:
    """Route every error through `error_response` (flask-restx's API is wired to it in web.http.api)."""
    app.register_error_handler(GatewayError, error_response)
    app.register_error_handler(HTTPException, error_response)
    app.register_error_handler(Exception, error_response)
