"""Who may do what: API keys for the whole app, a sign-in page for browsers, CSRF tokens on forms.

With API_KEYS unset the gateway is open (a private network, a laptop). With keys set, every route
but `/healthz`, a bare `/readyz`, the sign-in page and static files needs one of:

* a key in `Authorization: Bearer <key>` or `X-API-Key: <key>` (programs; any route);
* the signed session cookie the sign-in page sets (browsers; HTML pages, and reading the API and
  its docs: changing anything through the API takes a key header, so a browser session can never
  be used by another site's script);
* `METRICS_TOKEN` as a bearer token, for `/metrics` only (scrapers);
* on the Label Studio ML backend (`/label-studio/...`) also HTTP Basic with a key as the password
  (any user name): what Label Studio sends when a model is connected with "basic auth".

Every HTML form (upload, sign-in, sign-out, the jobs page's cancel and delete) carries a CSRF token
that must match a cookie only this site can set (double-submit; SameSite=Strict), and a POST whose
Origin is another site is refused: a cross-site page can neither read the token nor send the cookie
with its POST. The job upload form (`POST /jobs`, up to MAX_JOB_UPLOAD_BYTES) sends its token in
the query string instead, so it is checked before a byte of the archive is read (the body is
streamed to disk, never parsed as a form in memory); `web/http/views.py` checks it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import RequestEntityTooLarge

from web.errors import GatewayError, Unauthorized

CSRF_COOKIE = "gateway_csrf"
CSRF_FIELD = "csrf_token"
SESSION_KEY = "key_id"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Open even when keys are set: liveness, readiness (bare), signing in, and static files.
PUBLIC_ENDPOINTS = frozenset(
    {"health.healthz", "health.readyz", "auth.login", "views.static", "restx_doc.static"}
)
# The job form (views.jobs_submit) is not here: its body is streamed to disk, so the view checks
# its token (sent in the query string) before reading it.
FORM_ENDPOINTS = frozenset(
    {
        "views.submit",
        "views.live_predict",
        "views.job_cancel",
        "views.job_delete",
        "auth.login",
        "auth.logout",
    }
)
BROWSER_ENDPOINT_PREFIXES = ("views.", "auth.")
API_PREFIXES = ("/api/", "/swagger.json", "/docs", "/swaggerui/", "/label-studio/")
BASIC_AUTH_PREFIXES = ("/label-studio/",)  # HTTP Basic (a key as the password) is taken there only

bp = Blueprint("auth", __name__)


class Forbidden(GatewayError):
    status = 403


def key_id(key: str) -> str:
    """What the session stores for a key: a fingerprint, never the key (revoking the key ends it)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _keys() -> tuple[str, ...]:
    return current_app.extensions["gateway"].settings.api_keys


def auth_required() -> bool:
    return bool(_keys())


def _matching_key(given: str) -> str | None:
    """The configured key equal to `given` (compared in constant time, against every key)."""
    found = None
    for key in _keys():
        if hmac.compare_digest(given.encode(), key.encode()):
            found = key
    return found


def _header_key() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if auth[:6].lower() == "basic " and request.path.startswith(BASIC_AUTH_PREFIXES):
        # Label Studio's ML backend "basic auth": any user name, an API key as the password.
        credentials = request.authorization
        return (credentials.password or "") if credentials is not None else ""
    return request.headers.get("X-API-Key")


def signed_in() -> bool:
    """Whether this request comes from a browser session signed in with a key still configured."""
    stored = session.get(SESSION_KEY)
    return isinstance(stored, str) and any(hmac.compare_digest(stored, key_id(k)) for k in _keys())


def authenticated() -> bool:
    """Keys off, a valid key header, or a signed-in session (for readyz' details)."""
    if not auth_required():
        return True
    given = _header_key()
    return bool(given and _matching_key(given)) or signed_in()


def owner() -> str | None:
    """Who this request acts for, as jobs record it: the fingerprint of its API key, or of the key its
    browser session signed in with; None when keys are off (then every job is everyone's)."""
    if not auth_required():
        return None
    given = _header_key()
    key = _matching_key(given) if given else None
    if key is not None:
        return key_id(key)
    stored = session.get(SESSION_KEY)
    return stored if signed_in() else None


def _is_api_path() -> bool:
    """Paths programs use (answered 401 JSON, never redirected to the sign-in page)."""
    path = request.path
    return path.startswith(API_PREFIXES) or path == "/metrics" or path.endswith(".json")


def check_access() -> Response | None:
    """The app's first before-request hook: let the request through, redirect to sign in, or 401."""
    endpoint = request.endpoint or ""
    if not auth_required() or endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
        return None
    given = _header_key()
    if given:
        if _matching_key(given):
            return None
        if endpoint == "health.prometheus_metrics" and _metrics_token_matches(given):
            return None
        raise Unauthorized("the API key is not valid: check the key you send")
    if signed_in():
        if request.method in SAFE_METHODS or not _is_api_path():
            return None
        raise Unauthorized(
            "changing anything through the API takes a key: send `Authorization: Bearer <key>` or "
            "`X-API-Key: <key>` (the browser session is for the HTML pages)"
        )
    if request.path.startswith(BASIC_AUTH_PREFIXES):
        raise Unauthorized(
            "this gateway needs a key: connect the model with basic auth and an API key as the password (any "
            "user name), or send `Authorization: Bearer <key>`"
        )
    if _is_api_path() or not endpoint.startswith(BROWSER_ENDPOINT_PREFIXES):
        raise Unauthorized(
            "this gateway needs a key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
    if request.method in SAFE_METHODS:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")), code=303)
    raise Unauthorized("sign in first: your session has expired or you have not signed in")


def _metrics_token_matches(given: str) -> bool:
    token = current_app.extensions["gateway"].settings.metrics_token
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


# -- CSRF ------------------------------------------------------------------------------------------


def csrf_token() -> str:
    """The token this page's forms carry (the cookie's, or a new one the response will set)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) < 32:
        token = g.get("new_csrf_token") or secrets.token_urlsafe(32)
        g.new_csrf_token = token
    return token


def check_csrf() -> None:
    """Refuse a form POST from another site, or without the token its page carried."""
    if request.method != "POST" or request.endpoint not in FORM_ENDPOINTS:
        return
    check_origin()
    try:
        sent = request.form.get(CSRF_FIELD, "")
    except RequestEntityTooLarge as exc:
        g.form_too_large = exc  # nothing will be done with this form: the view answers 413
        return
    check_token(sent)


def check_origin() -> None:
    """Refuse a POST whose Origin is another site."""
    origin = request.headers.get("Origin")
    if origin and origin != "null" and not _same_origin(origin):
        raise Forbidden(f"this form was sent from another site ({origin[:100]}); use the gateway's own page")


def check_token(sent: str) -> None:
    """Refuse a form whose token does not match this browser's CSRF cookie (double-submit)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise Forbidden(
            "the form's security token is missing or out of date: reload the page and send it again"
        )


def _same_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme == request.scheme and parts.netloc == request.host


def set_csrf_cookie(response: Response) -> Response:
    """Give every browser page the cookie its forms' tokens are checked against."""
    token = g.pop("new_csrf_token", None)
    if token is None and response.mimetype == "text/html" and len(request.cookies.get(CSRF_COOKIE, "")) < 32:
        token = secrets.token_urlsafe(32)
    if token:
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure, path="/"
        )
    return response


# -- sign in and out -------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never `//evil` or `https://evil`) is followed after signing in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("views.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in page: a key in a password field, kept as a signed session cookie."""
    if not auth_required():
        return redirect(url_for("views.index"), code=303)
    target = _safe_next(request.values.get("next"))
    error = None
    if request.method == "POST":
        key = _matching_key(request.form.get("key", "").strip())
        if key is not None:
            session.clear()
            session[SESSION_KEY] = key_id(key)
            session.permanent = True
            return redirect(target, code=303)
        error = "That key is not valid. Check it and try again."
    status = 401 if error else 200
    return render_template("login.html", error=error, next=target), status


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("auth.login") if auth_required() else url_for("views.index"), code=303)


class _SessionInterface(SecureCookieSessionInterface):
    """The session cookie is Secure whenever the request came over HTTPS (directly or via the proxy)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """An empty session without building the cookie signer when the request has no cookie (every
        API call): Flask would otherwise derive a signing key for each request (~40 us)."""
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def install_auth(app: Flask) -> None:
    """Session settings, the sign-in routes, and the access and CSRF checks before every request."""
    settings = app.extensions["gateway"].settings
    app.secret_key = settings.secret_key or secrets.token_bytes(32)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_NAME="gateway"
    )
    app.session_interface = _SessionInterface()
    app.register_blueprint(bp)
    app.before_request(check_access)
    app.before_request(check_csrf)
    app.after_request(set_csrf_cookie)
    app.jinja_env.globals.update(csrf_token=csrf_token, auth_required=auth_required, signed_in=signed_in)
