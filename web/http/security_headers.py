"""Browser hardening on every response: what the page may load, who may frame it, what leaks.

The pages use no inline script or style (app.js, swagger-init.js and the stylesheets are files;
per-row colours are SVG attributes, scores are <meter> values), so the policy needs no
'unsafe-inline'. A response that set its own policy (the stored files: `default-src 'none'`)
keeps it.
"""

from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' data: blob:",  # blob: the upload form's preview; data: Swagger UI's icons
        "style-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


_HEADER_KEYS = {name.lower(): name for name in HEADERS}


def add_security_headers(response: Response) -> Response:
    """Each header unless the response set its own: one pass over the response's headers, not one
    per header (werkzeug's setdefault scans them every time)."""
    own = {key.lower() for key, _ in response.headers if key.lower() in _HEADER_KEYS}
    response.headers.extend([(name, HEADERS[name]) for key, name in _HEADER_KEYS.items() if key not in own])
    return response


def install_security_headers(app: Flask) -> None:
    app.after_request(add_security_headers)
