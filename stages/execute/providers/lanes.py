"""One httpx client per request in flight ("lanes"), instead of one shared connection pool.

Measured (docs/accuracy.md): with one `AsyncClient` whose pool holds `concurrency` connections,
httpcore re-scans every connection of the pool (and polls each idle socket) on every request
start and every response close, so its cost per request grows with concurrency; at 64 streams it
was about half of the client's CPU. A client whose pool has one connection does that scan over
one entry. Lanes are reused last-in first-out, so a busy run keeps reusing warm keep-alive
connections, and there are never more lanes than requests in flight at once (the load caps that).
httpx stays the HTTP client; only its pooling is bypassed.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import httpx

__all__ = ["ClientLanes"]


class ClientLanes:
    """Hands out an idle `httpx.AsyncClient` per request; creates one when none is idle."""

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
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []
        self._idle.append(self._new())

    def url(self, path: str) -> httpx.URL:
        """`path` joined to the base URL as httpx joins it, computed once instead of per request."""
        return self._all[0].build_request("POST", path).url

    def _new(self) -> httpx.AsyncClient:
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
        self._all.append(client)
        return client

    def acquire(self) -> httpx.AsyncClient:
        """An idle client for one request (a new one when all are busy); `release` it after."""
        return self._idle.pop() if self._idle else self._new()

    def release(self, client: httpx.AsyncClient) -> None:
        self._idle.append(client)

    async def aclose(self) -> None:
        for client in self._all:
            await client.aclose()
        self._all.clear()
        self._idle.clear()
