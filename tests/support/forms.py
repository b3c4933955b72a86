"""Sending the HTML forms like a browser does: first a page (which sets the CSRF cookie), then the
POST with the token that page's form carries."""

from __future__ import annotations

import re

import requests

from web.http.auth import CSRF_COOKIE, CSRF_FIELD

TOKEN_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def flask_csrf_token(client, page: str = "/results") -> str:
    """The token for forms posted through a Flask test client (cookie set by visiting `page`)."""
    client.get(page)
    cookie = client.get_cookie(CSRF_COOKIE)
    assert cookie is not None, "the page did not set the CSRF cookie"
    return cookie.value


def browser_session(base_url: str, page: str = "/") -> tuple[requests.Session, str]:
    """A requests session that has loaded `page` like a browser, and the token its form carries."""
    session = requests.Session()
    html = session.get(f"{base_url}{page}", timeout=60).text
    match = TOKEN_FIELD.search(html)
    assert match, "the page has no CSRF token field"
    return session, match.group(1)


__all__ = ["CSRF_FIELD", "browser_session", "flask_csrf_token"]
