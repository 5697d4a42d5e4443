"""A fault-injecting reverse proxy for an S3 endpoint (the tests' moto server), on 127.0.0.1.

It forwards every request and, by a seeded draw per request, answers a share of them with
``503 SlowDown`` (the S3 XML error of a throttled bucket) and drops a share of connections, as
a busy bucket and a flaky network do: before forwarding (the request is lost), after
forwarding (the request took effect, its answer is lost) or halfway through the answer's body.
Reads, writes and listings alike; ``only`` limits the faults to requests whose path contains
one of its strings, ``operations`` to some of 'read', 'write', 'list'. ``first_each`` answers
the first request of each operation with SlowDown whatever the draw, so that a short job meets a
fault of every kind (the draws alone leave a few writes unharmed in about one run in eight).
``counts`` says what it did.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from yarl import URL

SLOWDOWN_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>FAULTPROXY</RequestId></Error>"
)
# Headers that describe one hop's connection or body encoding, not the resource.
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length",
                "host", "upgrade", "proxy-connection"}


class FaultProxy:
    """``FaultProxy(upstream, slowdown=0.25, drop=0.08, seed=0).start()`` -> its URL."""

    def __init__(self, upstream: str, slowdown: float = 0.0, drop: float = 0.0, seed: int = 0,
                 only: tuple[str, ...] = (), operations: tuple[str, ...] = ("read", "write", "list"),
                 first_each: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.slowdown, self.drop, self.only, self.operations = slowdown, drop, only, operations
        self.random = random.Random(seed)
        self.first_each = first_each
        self._faulted_operations: set[str] = set()
        self.counts: Counter = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.url = ""

    def start(self) -> str:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def faults(self) -> int:
        return sum(count for name, count in self.counts.items() if name.startswith(("slowdown", "drop")))

    async def _start(self) -> str:
        self._session = ClientSession(connector=TCPConnector(limit=64), auto_decompress=False,
                                      timeout=ClientTimeout(total=120))
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    def _operation(self, request: web.Request) -> str:
        if request.method in ("PUT", "POST", "DELETE"):
            return "write"
        if request.method == "GET" and ("list-type" in request.query or request.path.count("/") <= 1):
            return "list"
        return "read"

    def _fault(self, request: web.Request, operation: str) -> str | None:
        if self.only and not any(part in request.path for part in self.only):
            return None
        if operation not in self.operations:
            return None
        draw = self.random.random()
        if self.first_each and operation not in self._faulted_operations:
            self._faulted_operations.add(operation)
            return "slowdown"
        if draw < self.slowdown:
            return "slowdown"
        if draw < self.slowdown + self.drop:
            return self.random.choice(["drop_before", "drop_after", "drop_midbody"])
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = self._operation(request)
        fault = self._fault(request, operation)
        self.counts["requests"] += 1
        self.counts[f"{operation}s"] += 1
        if fault is not None:
            self.counts[f"{fault}_{operation}"] += 1
        if fault == "slowdown":
            return web.Response(status=503, body=SLOWDOWN_XML, content_type="application/xml")
        if fault == "drop_before":
            return self._dropped(request)
        headers = {key: value for key, value in request.headers.items() if key.lower() not in _HOP_HEADERS}
        target = URL(self.upstream + request.raw_path, encoded=True)
        async with self._session.request(request.method, target, headers=headers, data=body) as upstream:
            payload = await upstream.read()
            status, upstream_headers = upstream.status, upstream.headers
        if fault == "drop_after" or (fault == "drop_midbody" and len(payload) < 2):
            return self._dropped(request)
        reply_headers = {key: value for key, value in upstream_headers.items() if key.lower() not in _HOP_HEADERS}
        if fault == "drop_midbody":
            response = web.StreamResponse(status=status, headers=reply_headers)
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            request.transport.close()
            return response
        if request.method == "HEAD":
            # A HEAD answer has no body but the resource's length.
            response = web.StreamResponse(status=status, headers=reply_headers)
            response.content_length = int(upstream_headers.get("Content-Length", 0))
            await response.prepare(request)
            await response.write_eof()
            return response
        return web.Response(status=status, headers=reply_headers, body=payload)

    @staticmethod
    def _dropped(request: web.Request) -> web.StreamResponse:
        request.transport.close()
        return web.Response(status=599)
