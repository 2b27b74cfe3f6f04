"""A small sticky reverse proxy in front of several `streamlit run app.py` replicas on 127.0.0.1, for the replica
test and the bench (on real machines nginx does this job: README, "More than one web process").

Streamlit keeps a session's images (/media/...) and uploads in the process that ran its script, so every request of
one browser must reach the same replica. The proxy sets a cookie (`vqdemo_replica`) on a browser's first answer
and routes by it; requests without it (a new browser, a websocket client that sends no cookie) are handed out in
turn. HTTP goes through tornado's async client; the websocket (/_stcore/stream) is relayed frame by frame. Runs
and the job queue are the replicas' shared ones (VQDEMO_QUEUE=ray-actor), so any replica may serve any student.

Run: python bench/proxy.py --port 8500 --replica 8501 --replica 8502   (listens on 127.0.0.1 only)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from tornado import httpclient, web, websocket

COOKIE = "vqdemo_replica"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "proxy-connection", "te"}
MAX_MESSAGE = 512 * 1024 * 1024   # Streamlit's own websocket limit is 200 MB by default
STREAM = "/_stcore/stream"


class Replicas:
    """The replicas' ports and which one a request goes to."""

    def __init__(self, ports: list[int]):
        self.ports = ports
        self._turn = itertools.count()

    def pick(self, handler: web.RequestHandler) -> tuple[int, bool]:
        """(index, new): the browser's replica by its cookie, else the next in turn (new: set the cookie)."""
        kept = handler.get_cookie(COOKIE, "")
        if kept.isdigit() and int(kept) < len(self.ports):
            return int(kept), False
        return next(self._turn) % len(self.ports), True


class Forward(web.RequestHandler):
    """Any plain HTTP request, to the browser's replica and back."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

    def initialize(self, replicas: Replicas) -> None:
        self.replicas = replicas

    async def _forward(self) -> None:
        index, new = self.replicas.pick(self)
        req = self.request
        upstream = httpclient.HTTPRequest(
            f"http://127.0.0.1:{self.replicas.ports[index]}{req.uri}", method=req.method, headers=req.headers,
            body=req.body if req.method in ("POST", "PUT", "PATCH", "DELETE") else None, follow_redirects=False,
            decompress_response=False, allow_nonstandard_methods=True, request_timeout=300)
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(upstream, raise_error=False)
        except OSError as e:
            resp = None
            why = str(e)
        if resp is None or resp.code == 599:
            self.set_status(502)
            self.finish(f"replica {index} did not answer ({why if resp is None else resp.error})")
            return
        self.clear()
        self.set_status(resp.code, resp.reason)
        for name, value in resp.headers.get_all():
            if name.lower() not in HOP_HEADERS:
                self.add_header(name, value)
        if new:
            self.set_cookie(COOKIE, str(index), path="/", httponly=True, samesite="Lax")
        self.finish(resp.body if resp.body and resp.code not in (204, 304) and req.method != "HEAD" else None)

    get = head = post = put = delete = patch = options = _forward


class Stream(websocket.WebSocketHandler):
    """The websocket of one tab, relayed to its replica's /_stcore/stream."""

    def initialize(self, replicas: Replicas) -> None:
        self.replicas = replicas
        self.upstream: websocket.WebSocketClientConnection | None = None

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return subprotocols[0] if subprotocols else None   # "streamlit", as the replica itself would choose

    async def open(self) -> None:
        index, _ = self.replicas.pick(self)
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() in ("cookie", "origin", "host", "user-agent", "x-forwarded-for")}
        protocols = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        request = httpclient.HTTPRequest(f"ws://127.0.0.1:{self.replicas.ports[index]}{self.request.uri}",
                                         headers=headers, request_timeout=60)
        try:
            self.upstream = await websocket.websocket_connect(request, on_message_callback=self._back,
                                                              max_message_size=MAX_MESSAGE,
                                                              subprotocols=protocols or None)
        except (OSError, websocket.WebSocketError, httpclient.HTTPClientError):
            self.close(1011, f"replica {index} did not answer")

    def _back(self, message: str | bytes | None) -> None:
        if message is None:
            self.close()
        elif self.ws_connection is not None:
            self.write_message(message, binary=isinstance(message, bytes))

    def on_message(self, message: str | bytes) -> None:
        if self.upstream is not None:
            self.upstream.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()


def app(ports: list[int]) -> web.Application:
    replicas = Replicas(ports)
    return web.Application([(STREAM, Stream, {"replicas": replicas}), (r".*", Forward, {"replicas": replicas})],
                           websocket_max_message_size=MAX_MESSAGE)


async def serve(port: int, ports: list[int]) -> None:
    app(ports).listen(port, address="127.0.0.1", max_body_size=MAX_MESSAGE)
    print(f"proxy on http://127.0.0.1:{port} -> replicas on ports {ports}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True, help="the port the class opens (127.0.0.1 only)")
    p.add_argument("--replica", type=int, action="append", required=True, help="a replica's port (repeat)")
    a = p.parse_args()
    asyncio.run(serve(a.port, a.replica))


if __name__ == "__main__":
    main()
