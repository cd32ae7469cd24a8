"""One connection per request in flight ("lanes"), instead of one shared connection pool.

Measured (docs/accuracy.md): with one `AsyncClient` whose pool holds `concurrency` connections,
httpcore re-scans every connection of the pool (and polls each idle socket) on every request
start and every response close, so its cost per request grows with concurrency; at 64 streams it
was about half of the client's CPU. A lane owns one connection, so there is nothing to scan.
Lanes are reused last-in first-out, so a busy run keeps reusing warm keep-alive connections, and
there are never more lanes than requests in flight at once (the load caps that).

A lane is built from httpcore's public API: an `httpcore.AsyncConnectionPool` that is never
asked to pool (`create_connection` makes each connection, with the pool's TLS, keep-alive and
proxy settings) over a network backend of the lane's own (`LeanTrioBackend`: no per-read cancel
scope, arrival stamps, and the meter that says whether a failed request got any answer). httpx's
per-request machinery (request building, auth and redirect flows, cookies, hooks, response
wrappers) was ~20% of the client's CPU per request and does nothing for a benchmark's POST, so a
request goes to the connection as an `httpcore.Request` built once. Proxies come from the
environment as httpx takes them (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`), and
certificates as `httpx.create_ssl_context` finds them (`SSL_CERT_FILE`, `SSL_CERT_DIR`).

There is no other way to send: tests too go through lanes, to servers on 127.0.0.1.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping

import httpcore
import httpx

from stages.execute.client.transport.backend import LeanTrioBackend

__all__ = ["KEEPALIVE_S", "ClientLanes", "Lane", "core_request", "environment_proxy"]

KEEPALIVE_S = 5.0
"""How long an idle connection is kept for reuse (httpx's default)."""
_UNTIMED = {"timeout": {"connect": None, "read": None, "write": None, "pool": None}}


class Lane:
    """One request slot: its one connection, made by its pool's factory over its own backend."""

    __slots__ = ("backend", "connection", "opened", "pool")

    def __init__(self, pool: httpcore.AsyncConnectionPool, backend: LeanTrioBackend) -> None:
        self.pool = pool
        self.backend = backend
        self.connection: httpcore.AsyncConnectionInterface | None = None
        self.opened = False
        """Whether the last `request` had to open a new connection."""

    async def request(self, request: httpcore.Request) -> httpcore.Response:
        """Send on this lane's one connection, replacing it first when it is closed, expired or
        dropped by the server (`has_expired` polls the socket for the server's close)."""
        pool = self.pool
        connection = self.connection
        self.opened = False
        while True:
            if connection is not None and (
                connection.is_closed() or connection.has_expired() or not connection.is_available()
            ):
                await connection.aclose()
                connection = None
            if connection is None:
                connection = self.connection = pool.create_connection(request.url.origin)
                self.opened = True
            try:
                return await connection.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                await connection.aclose()
                connection = None

    def answered(self) -> int:
        """Bytes of an answer to the last request that arrived (0 also before any connection)."""
        meter = self.backend.meter
        return meter.received if meter is not None else 0

    def answered_nothing(self) -> bool:
        """The last request failed on a kept-alive connection before a single byte of an
        answer arrived: the server had closed it and never took the request."""
        return not self.opened and self.answered() == 0

    async def drop(self) -> None:
        """Close the connection; the next request opens a new one."""
        if self.connection is not None:
            await self.connection.aclose()
            self.connection = None


class _Body:
    """A request body as httpcore iterates it: a plain async iterator, not an async generator.

    httpcore stops iterating the body when a write fails (a server that closed the connection:
    it then reads whatever answer there is), and trio warns about every async generator that is
    collected unfinished; an iterator object has nothing to finish. One pass per request."""

    __slots__ = ("_content",)

    def __init__(self, content: bytes) -> None:
        self._content = content

    def __aiter__(self) -> _BodyPass:
        return _BodyPass(self._content)


class _BodyPass(AsyncIterator[bytes]):
    __slots__ = ("_content",)

    def __init__(self, content: bytes | None) -> None:
        self._content = content

    async def __anext__(self) -> bytes:
        content, self._content = self._content, None
        if content is None:
            raise StopAsyncIteration
        return content


def core_request(request: httpx.Request) -> httpcore.Request:
    """`request` as httpx's transport hands it to httpcore (built once, sent many times), but
    without per-operation timeouts: the caller bounds the whole attempt (`HttpProvider`).

    Safe to share between requests in flight: httpcore only reads it, and a bytes body is
    re-iterable.
    """
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=_Body(request.content),
        extensions=_UNTIMED,
    )


def environment_proxy(url: httpx.URL) -> httpcore.Proxy | None:
    """The proxy the environment names for `url`, as httpx would pick it: the scheme's variable,
    else `ALL_PROXY`; none when `NO_PROXY` covers the host."""
    proxies = urllib.request.getproxies()
    raw = proxies.get(url.scheme) or proxies.get("all")
    if not raw or urllib.request.proxy_bypass(url.host):
        return None
    proxy = httpx.URL(raw if "://" in raw else f"http://{raw}")
    auth = (proxy.username, proxy.password) if proxy.username else None
    tls = httpx.create_ssl_context() if proxy.scheme == "https" else None
    return httpcore.Proxy(url=str(proxy.copy_with(userinfo=b"")), auth=auth, ssl_context=tls)


class ClientLanes:
    """Hands out an idle lane per request; creates one when none is idle."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        # One client builds every request (its URL joining and headers are httpx's); it never
        # sends one: the lanes do.
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers),
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
        )
        # Building an SSL context loads the CA bundle (tens of ms): do it once, not per lane.
        self._ssl: ssl.SSLContext | None = None
        self._proxy: httpcore.Proxy | None = None
        self._idle: list[Lane] = []
        self._all: list[Lane] = []

    def url(self, path: str) -> httpx.URL:
        """`path` joined to the base URL as httpx joins it; where every lane will send."""
        url = self.client.build_request("POST", path).url
        self._ssl = httpx.create_ssl_context() if url.scheme == "https" else None
        self._proxy = environment_proxy(url)
        return url

    def _new(self) -> Lane:
        backend = LeanTrioBackend()
        pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ssl,
            proxy=self._proxy,
            max_connections=1,
            max_keepalive_connections=1,
            keepalive_expiry=KEEPALIVE_S,
            network_backend=backend,
        )
        lane = Lane(pool, backend)
        self._all.append(lane)
        return lane

    def acquire(self) -> Lane:
        """An idle lane for one request (a new one when all are busy); `release` it after."""
        return self._idle.pop() if self._idle else self._new()

    def release(self, lane: Lane) -> None:
        self._idle.append(lane)

    async def aclose(self) -> None:
        for lane in self._all:
            await lane.drop()
        self._all.clear()
        self._idle.clear()
        await self.client.aclose()
