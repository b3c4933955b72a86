"""Getting a task's picture: from Label Studio itself (with its API key), a `data:` URI, or an allowed host.

A task says where its picture is, and anyone who can call /predict writes tasks, so the URL is never
trusted: only Label Studio's host (LABEL_STUDIO_URL) and the hosts of LABEL_STUDIO_ALLOWED_HOSTS are
fetched, the host is resolved first and every address checked (never link-local or a cloud metadata
address, whatever the allow-list says), the connection goes to the checked address (a second DNS
answer cannot swap it), redirects are followed only on the same host, and the body is bounded by
MAX_CONTENT_LENGTH and LABEL_STUDIO_TIMEOUT_S. Label Studio's key is sent to Label Studio only.

LABEL_STUDIO_API_KEY is either a legacy token (sent as `Authorization: Token <key>`) or a personal
access token, a JWT refresh token: exchanged at /api/token/refresh for a short-lived access token
(`Authorization: Bearer <access>`), renewed before it expires or when Label Studio answers 401.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

from web.errors import SourceNotAllowed, SourceUnavailable
from web.settings import Settings

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
MAX_REDIRECTS = 3
REFRESH_MARGIN_S = 30.0
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_CHUNK = 64 * 1024


def is_jwt(key: str) -> bool:
    """A personal access token is a JWT: three dot-separated base64url parts (a legacy token is hex)."""
    return bool(_JWT.match(key))


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (not verified: only to know when to ask for a new one)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None


def check_address(address: str) -> None:
    """Refuse addresses no picture should come from, allowed host or not."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        raise SourceNotAllowed(
            f"picture URLs may not point at {ip} (link-local, metadata or reserved address)"
        )


@dataclass
class _Url:
    scheme: str
    host: str
    port: int
    target: str  # path and query

    @classmethod
    def parse(cls, url: str) -> _Url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceNotAllowed(f"not an http(s) URL: {url[:200]}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise SourceNotAllowed(f"bad port in {url[:200]}") from None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname.lower(), port, target)

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


class _PinnedConnection(http.client.HTTPSConnection):
    """http.client's connection, to an address already checked (TLS still verifies the host name)."""

    def __init__(self, url: _Url, address: str, timeout: float) -> None:
        super().__init__(url.host, url.port, timeout=timeout, context=ssl.create_default_context())
        self._address = address
        self._tls = url.scheme == "https"

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        if self._tls:
            self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    location: str | None = None


@dataclass
class PictureFetcher:
    """Fetches task pictures; one per app (the access token is shared by its threads)."""

    label_studio_url: str | None
    api_key: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    timeout_s: float = 10.0
    max_bytes: int = 16 * 1024 * 1024
    _access: tuple[str, float] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> PictureFetcher:
        return cls(
            settings.label_studio_url, settings.label_studio_api_key, settings.label_studio_allowed_hosts,
            settings.label_studio_timeout_s, settings.max_content_length,
        )  # fmt: skip

    # -- where a picture may come from -----------------------------------------------------------------
    def _label_studio(self) -> _Url | None:
        return _Url.parse(self.label_studio_url) if self.label_studio_url else None

    def _allowed(self, url: _Url) -> bool:
        own = self._label_studio()
        if own is not None and url.origin == own.origin:
            return True
        return url.host in self.allowed_hosts

    def resolve(self, url: str) -> str:
        """The absolute URL of a task's picture: Label Studio's own paths (/data/upload/...,
        /data/local-files/?d=...) are relative to LABEL_STUDIO_URL."""
        if url.startswith("/") and not url.startswith("//"):
            if not self.label_studio_url:
                raise SourceNotAllowed(
                    f"the task's picture is on Label Studio ({url[:120]}): set LABEL_STUDIO_URL (and "
                    "LABEL_STUDIO_API_KEY) on the gateway so it can fetch it"
                )
            return urljoin(self.label_studio_url + "/", url.lstrip("/"))
        scheme = url.partition(":")[0].lower()
        if scheme in ("s3", "gs", "azure-blob", "gcs"):
            raise SourceNotAllowed(
                f"cloud storage URLs ({scheme}://) are not fetched: give the tasks http(s) URLs on an "
                "allowed host (LABEL_STUDIO_ALLOWED_HOSTS), or pre-annotate the pictures with a job"
            )
        return url

    # -- fetching --------------------------------------------------------------------------------------
    def fetch(self, url: str) -> bytes:
        """The picture's bytes; SourceNotAllowed or SourceUnavailable (with the reason) otherwise."""
        if url.startswith("data:"):
            return self._data_uri(url)
        absolute = self.resolve(url)
        parsed = _Url.parse(absolute)
        if not self._allowed(parsed):
            own = self._label_studio()
            allowed = ", ".join(([own.host] if own else []) + list(self.allowed_hosts)) or "none"
            raise SourceNotAllowed(
                f"the gateway does not fetch pictures from {parsed.host}: allowed hosts are {allowed} "
                "(LABEL_STUDIO_URL, LABEL_STUDIO_ALLOWED_HOSTS)"
            )
        own = self._label_studio()
        authorised = own is not None and parsed.origin == own.origin and bool(self.api_key)
        response = self._get(parsed, authorised)
        if response.status == 401 and authorised and self.api_key and is_jwt(self.api_key):
            self._access = None  # expired or revoked early: one fresh access token, once
            response = self._get(parsed, authorised)
        if response.status != 200:
            hint = ""
            if response.status in (401, 403):
                hint = (
                    ": check LABEL_STUDIO_API_KEY (a legacy token needs legacy tokens enabled in the "
                    "organization; a personal access token needs personal access tokens enabled)"
                    if own is not None and parsed.origin == own.origin
                    else ""
                )
            raise SourceUnavailable(
                f"fetching the picture {absolute[:200]} answered HTTP {response.status}{hint}"
            )
        return response.body

    def _get(self, url: _Url, authorised: bool) -> Response:
        deadline = time.monotonic() + self.timeout_s
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"Accept": "*/*"}  # Label Studio answers 406 to "image/*"
            if authorised:
                headers["Authorization"] = self._authorization()
            response = self._request(url, "GET", headers, None, deadline)
            if response.status not in (301, 302, 303, 307, 308) or not response.location:
                return response
            target = _Url.parse(
                urljoin(f"{url.scheme}://{url.host}:{url.port}{url.target}", response.location)
            )
            if target.origin != url.origin:
                raise SourceNotAllowed(
                    f"the picture URL redirects to another host ({target.host}); not followed"
                )
            url = target
        raise SourceUnavailable(f"the picture URL redirects more than {MAX_REDIRECTS} times")

    def _request(
        self, url: _Url, method: str, headers: dict[str, str], body: bytes | None, deadline: float
    ) -> Response:
        try:
            infos = socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise SourceUnavailable(f"cannot resolve {url.host}: {exc.strerror}") from None
        addresses = [info[4][0] for info in infos]
        for address in addresses:  # every address must be acceptable, not only the first
            check_address(address)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SourceUnavailable(f"fetching from {url.host} took longer than LABEL_STUDIO_TIMEOUT_S")
        connection = _PinnedConnection(url, addresses[0], remaining)
        try:
            connection.request(method, url.target, body=body, headers=headers)
            answer = connection.getresponse()
            length = answer.getheader("Content-Length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                raise SourceNotAllowed(
                    f"the picture is larger than MAX_CONTENT_LENGTH ({self.max_bytes} bytes)"
                )
            chunks, size = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise SourceUnavailable(
                        f"fetching from {url.host} took longer than LABEL_STUDIO_TIMEOUT_S"
                    )
                chunk = answer.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise SourceNotAllowed(
                        f"the picture is larger than MAX_CONTENT_LENGTH ({self.max_bytes} bytes)"
                    )
                chunks.append(chunk)
            return Response(answer.status, b"".join(chunks), answer.getheader("Location"))
        except (OSError, http.client.HTTPException) as exc:
            raise SourceUnavailable(f"fetching from {url.host}:{url.port} failed: {exc}") from None
        finally:
            connection.close()

    def _data_uri(self, url: str) -> bytes:
        header, sep, data = url[5:].partition(",")
        if not sep:
            raise SourceNotAllowed("a data: URI needs a comma before its data")
        if len(data) > self.max_bytes * 4 // 3 + 4:
            raise SourceNotAllowed(f"the picture is larger than MAX_CONTENT_LENGTH ({self.max_bytes} bytes)")
        if header.endswith(";base64"):
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise SourceNotAllowed("the data: URI's base64 is not valid") from None
        return unquote_to_bytes(data)

    # -- Label Studio's key ------------------------------------------------------------------------------
    def _authorization(self) -> str:
        key = self.api_key or ""
        if not is_jwt(key):
            return f"Token {key}"
        with self._lock:
            access = self._access
            if access is None or access[1] - REFRESH_MARGIN_S < time.time():
                access = self._refresh(key)
                self._access = access
        return f"Bearer {access[0]}"

    def _refresh(self, refresh_token: str) -> tuple[str, float]:
        """A new access token for the personal access token (POST /api/token/refresh)."""
        own = self._label_studio()
        assert own is not None
        path = own.target.rstrip("/") + "/api/token/refresh"
        url = _Url(own.scheme, own.host, own.port, path)
        body = json.dumps({"refresh": refresh_token}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        response = self._request(url, "POST", headers, body, time.monotonic() + self.timeout_s)
        if response.status in (301, 302, 307, 308):  # Django's APPEND_SLASH for /api/token/refresh/
            url = _Url(own.scheme, own.host, own.port, path + "/")
            response = self._request(url, "POST", headers, body, time.monotonic() + self.timeout_s)
        try:
            access = json.loads(response.body)["access"] if response.status == 200 else None
        except (ValueError, KeyError, TypeError):
            access = None
        if not isinstance(access, str):
            raise SourceUnavailable(
                "Label Studio refused the personal access token in LABEL_STUDIO_API_KEY (HTTP "
                f"{response.status} from /api/token/refresh): create a new one under Account & Settings, or "
                "enable personal access tokens in the organization"
            )
        return access, _jwt_expiry(access) or time.time() + 60
