"""Fetching product photos by URL for ingestion, with limits and a guard against server-side request forgery.

Every hop (the URL and each redirect) is resolved here, every address it resolves to is checked, and the connection
goes to the checked address itself (the Host header and TLS name stay the URL's), so a DNS answer that changes
between the check and the connection cannot reach a refused address.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import httpx

from fashion_search.core.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata endpoints, named even where a broader class (link-local, unique-local) covers them already.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchRefused(ValueError):
    """A photo URL that was not fetched, or whose answer was refused; the message says why."""


def refused_reason(ip: IPAddress) -> str | None:
    """Why an address may not be fetched from unless allow-listed (None: a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for reason, hit in (
        ("a loopback address", ip.is_loopback), ("an unspecified address", ip.is_unspecified),
        ("a link-local address", ip.is_link_local), ("a multicast address", ip.is_multicast),
        ("a private address", ip.is_private), ("a reserved address", ip.is_reserved),
    ):
        if hit:
            return reason
    return None if ip.is_global else "not a public address"


def allowed_networks(settings: Settings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """settings.fetch_allowed_networks parsed (a ValueError names a bad entry)."""
    return [ipaddress.ip_network(n, strict=False) for n in settings.fetch_allowed_networks]


def check_address(ip: IPAddress, settings: Settings) -> None:
    """FetchRefused if the address is loopback, private, link-local, metadata (...) and not allow-listed."""
    reason = refused_reason(ip)
    if reason and not any(ip in net for net in allowed_networks(settings)):
        raise FetchRefused(f"{ip} is {reason} (refused; FS_FETCH_ALLOWED_NETWORKS lists exceptions)")


def resolve(host: str, port: int, settings: Settings) -> IPAddress:
    """The host's addresses, every one checked; the first is the one to connect to."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchRefused(f"cannot resolve {host!r}: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        if not addresses:
            raise FetchRefused(f"{host!r} resolves to no address")
    for ip in addresses:  # one refused address refuses the host: which one a connection gets is not ours to choose
        check_address(ip, settings)
    return addresses[0]


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL with a host, or FetchRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchRefused(f"not a valid URL: {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs are fetched, not {url!r}")
    if not parts.hostname:
        raise FetchRefused(f"URL has no host: {url!r}")
    if parts.username or parts.password:
        raise FetchRefused("URLs with credentials are not fetched")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _pinned(url: str, ip: IPAddress) -> str:
    """The URL with its host replaced by the checked address (so the connection goes there and nowhere else)."""
    parts = urlsplit(url)
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def fetch_image(url: str, settings: Settings, client: httpx.Client | None = None) -> bytes:
    """The bytes of the photo at url, within settings' size, time, redirect and content-type limits."""
    deadline = time.monotonic() + settings.fetch_timeout_s
    timeout = httpx.Timeout(settings.fetch_timeout_s)
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
    try:
        for _ in range(settings.fetch_max_redirects + 1):
            scheme, host, port = check_url(url)
            ip = resolve(host, port, settings)
            headers = {"Host": urlsplit(url).netloc.rsplit("@", 1)[-1], "Accept": "image/*"}
            extensions = {"sni_hostname": host} if scheme == "https" else {}
            try:
                with http.stream("GET", _pinned(url, ip), headers=headers, extensions=extensions) as resp:
                    if resp.status_code in REDIRECTS:
                        location = resp.headers.get("location")
                        if not location:
                            raise FetchRefused(f"{url}: redirect {resp.status_code} without a Location")
                        url = urljoin(url, location)
                        continue
                    return _body(url, resp, settings, deadline)
            except httpx.TimeoutException:
                raise FetchRefused(f"{url}: no answer within {settings.fetch_timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                raise FetchRefused(f"{url}: {type(exc).__name__}: {exc}") from None
        raise FetchRefused(f"more than {settings.fetch_max_redirects} redirects")
    finally:
        if own:
            http.close()


def _body(url: str, resp: httpx.Response, settings: Settings, deadline: float) -> bytes:
    """The answer's body if it is an image within the size and time limits."""
    if resp.status_code != 200:
        raise FetchRefused(f"{url}: HTTP {resp.status_code}")
    kind = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in settings.fetch_content_types:
        raise FetchRefused(f"{url}: content type {kind or 'none'!r} is not an accepted image type")
    limit = settings.max_upload_bytes
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FetchRefused(f"{url}: {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise FetchRefused(f"{url}: more than {limit} bytes; the limit is {limit}")
        if time.monotonic() > deadline:
            raise FetchRefused(f"{url}: not received within {settings.fetch_timeout_s:g} s")
        chunks.append(chunk)
    return b"".join(chunks)

