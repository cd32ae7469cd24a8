"""One connection per request in flight ("lanes"), instead of one shared connection pool.

Measured (docs/accuracy.md): with one `AsyncClient` whose pool holds `concurrency` connections,
httpcore re-scans every connection of the pool (and polls each idle socket) on every request
start and every response close, so its cost per request grows with concurrency; at 64 streams it
was about half of the client's CPU. A lane is an `httpx.AsyncClient` whose pool has one
connection, so that scan is over one entry. Lanes are reused last-in first-out, so a busy run
keeps reusing warm keep-alive connections, and there are never more lanes than requests in flight
at once (the load caps that).

Each lane's client is built as before (verify, limits, proxies from the environment), and a
request is sent through the httpcore pool the client itself would use for the URL (`Lane.pool`):
httpx's per-request machinery above it (building the request, auth and redirect flows, the
cookie jar, event hooks, the response wrappers) was ~20% of the client's CPU per request and does
nothing for a benchmark's POST. httpx (and its httpcore) stays the HTTP client. An injected
transport (tests' `httpx.MockTransport`) has no httpcore pool: its lanes go through
`AsyncClient.send` (`Lane.pool` is None).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import httpcore
import httpx

from stages.execute.providers.backend import LeanTrioBackend

__all__ = ["ClientLanes", "Lane", "core_request"]


class Lane:
    """One client and, when it has one for the target's URL, its httpcore pool and connection."""

    __slots__ = ("client", "connection", "opened", "pool")

    def __init__(self, client: httpx.AsyncClient, pool: httpcore.AsyncConnectionPool | None):
        self.client = client
        self.pool = pool
        self.connection: httpcore.AsyncConnectionInterface | None = None
        self.opened = False
        """Whether the last `request` had to open a new connection."""

    async def request(self, request: httpcore.Request) -> httpcore.Response:
        """Send on this lane's one connection, as the one-connection pool would, without it.

        The pool's own bookkeeping (its request queue, and a scan of its connections on every
        request start and response close) was ~12% of the client's CPU per request; a lane
        never shares its connection, so it needs only the pool's decision: replace a connection
        that is closed, expired or dropped by the server (`has_expired` polls the socket) with
        one from the pool's factory (same TLS, keep-alive, proxy settings), and retry on a
        fresh one when a connection turns out not to be available.
        """
        pool = self.pool
        assert pool is not None
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

    async def aclose(self) -> None:
        if self.connection is not None:
            await self.connection.aclose()
            self.connection = None


_BACKEND = LeanTrioBackend()
_UNTIMED = {"timeout": {"connect": None, "read": None, "write": None, "pool": None}}


def _core_pool(client: httpx.AsyncClient, url: httpx.URL) -> httpcore.AsyncConnectionPool | None:
    """The httpcore pool `client.send` would use for `url` (a proxy's too), if it has one.

    Its connections are made with `LeanTrioBackend` (the lane owns the pool: nothing else
    sends through it).
    """
    pick = getattr(client, "_transport_for_url", None)  # private: absent in another httpx
    if pick is None:
        return None
    transport = pick(url)
    pool = (
        getattr(transport, "_pool", None) if type(transport) is httpx.AsyncHTTPTransport else None
    )
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        return None
    pool._network_backend = _BACKEND
    return pool


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
        content=request.content,
        extensions=_UNTIMED,
    )


class ClientLanes:
    """Hands out an idle lane per request; creates one when none is idle."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url
        self._headers = dict(headers)
        self._timeout = httpx.Timeout(timeout_s)
        self._transport = transport
        # Building an SSL context loads the CA bundle (tens of ms): do it once, not per lane.
        self._ssl: ssl.SSLContext | None = None
        self._idle: list[Lane] = []
        self._all: list[Lane] = []
        self._url: httpx.URL | None = None
        self._idle.append(self._new())

    @property
    def client(self) -> httpx.AsyncClient:
        """The first lane's client (to build requests with: every lane's is configured alike)."""
        return self._all[0].client

    def url(self, path: str) -> httpx.URL:
        """`path` joined to the base URL as httpx joins it; the URL every lane will be sent to."""
        url = self.client.build_request("POST", path).url
        self._url = url
        for lane in self._idle:
            lane.pool = _core_pool(lane.client, url)
        return url

    def _new(self) -> Lane:
        if self._transport is None and self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        client = httpx.AsyncClient(
            base_url=self._base_url,
            headers=self._headers,
            # An injected transport (tests) is the pool itself: every lane shares it.
            transport=self._transport,
            verify=self._ssl if self._ssl is not None else True,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            follow_redirects=False,
        )
        pool = _core_pool(client, self._url) if self._url is not None else None
        lane = Lane(client, pool)
        self._all.append(lane)
        return lane

    def acquire(self) -> Lane:
        """An idle lane for one request (a new one when all are busy); `release` it after."""
        return self._idle.pop() if self._idle else self._new()

    def release(self, lane: Lane) -> None:
        self._idle.append(lane)

    async def aclose(self) -> None:
        for lane in self._all:
            await lane.aclose()
            await lane.client.aclose()
        self._all.clear()
        self._idle.clear()
