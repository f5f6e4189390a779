"""proxy.transport: httpx over the pooled HTTP/1.1 transport, against real servers on loopback.

Every test goes through `httpx.AsyncClient(transport=PooledTransport(...))`, as upstream.py
does, and checks what the client sees (bodies, httpx's exceptions) and what the server saw
(requests, connections accepted, clients that hung up).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import pytest
import uvloop
from upstream import (
    DONE,
    FakeUpstream,
    Hangup,
    JSONReply,
    RawReply,
    Silence,
    SSEReply,
    chunk,
    completion,
    text_stream,
)

from claude_bridge.proxy import transport as transport_module
from claude_bridge.proxy.transport import SILENCES_WATCHED, PooledTransport

T = TypeVar("T")
# Short: the timeout tests wait this long, and nothing else depends on it.
SHORT = 0.2


def run(
    main: Callable[[httpx.AsyncClient], Awaitable[T]],
    *,
    max_connections: int = 10,
    connect: float = 5.0,
    read: float = 5.0,
) -> T:
    """`main(client)` on a fresh event loop, the client and its transport closed after."""

    async def go() -> T:
        transport = PooledTransport(
            max_connections=max_connections, connect_timeout=connect, read_timeout=read
        )
        timeout = httpx.Timeout(read, connect=connect)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            return await main(client)

    return asyncio.run(go())


def url_of(upstream: FakeUpstream) -> str:
    return upstream.base_url + "/chat/completions"


# -- bodies ------------------------------------------------------------------------------


def test_json_body_and_the_request_as_httpx_built_it(upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("Hi!"), headers={"x-request-id": "r1"}))

    async def main(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(url_of(upstream), json={"model": "m"}, headers={"x-a": "1"})

    response = run(main)
    assert response.status_code == 200
    assert response.reason_phrase == "OK"
    assert response.http_version == "HTTP/1.1"
    assert response.json()["choices"][0]["message"]["content"] == "Hi!"
    assert response.headers["x-request-id"] == "r1"
    seen = upstream.last
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.json == {"model": "m"}
    # httpx's headers, and none added.
    assert seen.headers["user-agent"].startswith("python-httpx/")
    assert seen.headers["x-a"] == "1"
    assert seen.headers["content-type"] == "application/json"


def test_a_body_without_content_type_gets_none_added(upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply({}))

    async def main(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(url_of(upstream), content=b"raw")

    assert run(main).status_code == 200
    assert upstream.last.body == b"raw"
    assert "content-type" not in upstream.last.headers


def test_a_streamed_request_body_is_sent_chunked(upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply({}))

    async def parts() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b"1}"

    async def main(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(url_of(upstream), content=parts())

    assert run(main).status_code == 200
    assert upstream.last.json == {"a": 1}


def test_error_status_is_an_answer_not_an_exception(upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply({"error": {"message": "slow down"}}, status=429))

    async def main(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(url_of(upstream), json={})

    response = run(main)
    assert response.status_code == 429
    assert response.json() == {"error": {"message": "slow down"}}


def test_gzip_body_is_decoded_by_httpx(upstream: FakeUpstream) -> None:
    body = json.dumps(completion("zipped")).encode()
    upstream.reply(
        RawReply(
            gzip.compress(body),
            content_type="application/json",
            headers={"content-encoding": "gzip"},
        )
    )

    async def main(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(url_of(upstream), json={})

    assert run(main).json() == completion("zipped")


def test_gzip_event_stream_is_decoded(upstream: FakeUpstream) -> None:
    events = "".join(text_stream(["Hel", "lo"])).encode()
    packed = gzip.compress(events)
    # Split the compressed stream across HTTP chunks, as a gateway flushing it would.
    pieces = [packed[i : i + 40] for i in range(0, len(packed), 40)]
    upstream.reply(SSEReply(pieces, headers={"content-encoding": "gzip"}))

    async def main(client: httpx.AsyncClient) -> bytes:
        async with client.stream("POST", url_of(upstream), json={}) as response:
            return b"".join([part async for part in response.aiter_bytes()])

    assert run(main) == events


# -- streaming ---------------------------------------------------------------------------


def test_stream_arrives_piece_by_piece(upstream: FakeUpstream) -> None:
    # The answer never ends: a transport that waited for the end would never return the
    # events (and fail on the read timeout).
    first, second = chunk({"content": "a"}), chunk({"content": "b"})
    upstream.reply(SSEReply([first, second], end="stall"))

    async def main(client: httpx.AsyncClient) -> bytes:
        received = b""
        async with client.stream("POST", url_of(upstream), json={"stream": True}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for part in response.aiter_bytes():
                received += part
                if received.count(b"data: ") == 2:
                    break
        return received

    assert run(main) == (first + second).encode()
    assert upstream.wait_disconnect()


def test_whole_stream_then_the_end(upstream: FakeUpstream) -> None:
    events = text_stream(["Hel", "lo"])
    upstream.reply(SSEReply(events))

    async def main(client: httpx.AsyncClient) -> str:
        async with client.stream("POST", url_of(upstream), json={"stream": True}) as response:
            return "".join([line + "\n" async for line in response.aiter_lines()])

    text = run(main)
    assert text.replace("\n\n", "\n") == "".join(events).replace("\n\n", "\n")
    assert text.rstrip().endswith(DONE.strip())


# -- the pool ----------------------------------------------------------------------------


def test_one_connection_serves_requests_one_after_another(upstream: FakeUpstream) -> None:
    upstream.always(JSONReply(completion("again")))
    upstream.reply(SSEReply(text_stream(["x"])))
    before = upstream.accepted

    async def main(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", url_of(upstream), json={}) as response:
            await response.aread()  # a stream read to its end gives the connection back
        for _ in range(3):
            assert (await client.post(url_of(upstream), json={})).status_code == 200

    run(main)
    assert upstream.accepted - before == 1
    assert len(upstream.requests) == 4


def test_closing_a_response_early_closes_its_connection(upstream: FakeUpstream) -> None:
    upstream.reply(SSEReply([chunk({"content": "a"})], end="stall"), JSONReply({}))
    before = upstream.accepted

    async def main(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", url_of(upstream), json={}) as response:
            async for _ in response.aiter_bytes():
                break
        # The upstream sees the client leave, and the connection is not pooled.
        assert await asyncio.to_thread(upstream.wait_disconnect)
        assert (await client.post(url_of(upstream), json={})).status_code == 200

    run(main)
    assert upstream.accepted - before == 2


def test_the_pool_holds_at_most_max_connections(upstream: FakeUpstream) -> None:
    upstream.always(SSEReply(text_stream(["x"])))
    before = upstream.accepted

    async def one(client: httpx.AsyncClient) -> int:
        response = await client.post(url_of(upstream), json={})
        return response.status_code

    async def main(client: httpx.AsyncClient) -> list[int]:
        return await asyncio.gather(*(one(client) for _ in range(8)))

    assert run(main, max_connections=2) == [200] * 8
    assert upstream.accepted - before <= 2


# -- failures ----------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def tarpit() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect there hangs (the SYN is
    dropped) until the client gives up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        yield port
    finally:
        filler.close()
        server.close()


def test_refused_connection_is_connect_error(closed_port: int) -> None:
    async def main(client: httpx.AsyncClient) -> None:
        await client.post(f"http://127.0.0.1:{closed_port}/v1/chat/completions", json={})

    with pytest.raises(httpx.ConnectError) as caught:
        run(main)
    assert caught.value.request.url.port == closed_port


def test_unknown_host_is_connect_error() -> None:
    async def main(client: httpx.AsyncClient) -> None:
        await client.post("http://no-such-host.invalid/v1/chat/completions", json={})

    with pytest.raises(httpx.ConnectError):
        run(main)


def test_an_address_that_never_answers_gives_way_to_the_next(
    tarpit: int, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Happy eyeballs: a host's first address hangs (an IPv6 route that drops everything,
    played by a port whose accept queue is full), its second answers: the request goes
    through the second long before the connect timeout."""
    upstream.reply(JSONReply({}))
    stream, tcp = socket.SOCK_STREAM, socket.IPPROTO_TCP
    entries = [
        (socket.AF_INET, stream, tcp, "", ("127.0.0.1", tarpit)),
        (socket.AF_INET, stream, tcp, "", ("127.0.0.1", upstream.port)),
    ]

    async def addresses(host: str, port: int) -> list[tuple[Any, ...]]:
        return entries

    monkeypatch.setattr(transport_module, "_addresses", addresses)

    async def main(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("http://upstream.test/v1/chat/completions", json={})

    assert run(main, connect=30).status_code == 200
    assert upstream.last.headers["host"] == "upstream.test"


def test_addresses_that_answer_together_leave_one_connection_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Happy eyeballs with no delay between attempts, every address answering: on uvloop the
    connects finish in the same loop step, and the race's losers close their sockets before it
    ends. The listener takes its connections only afterwards: every one but the winner's has
    been closed by its client (a leaked one would wait here until the test's timeout)."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        address = listener.getsockname()
        entries = [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)] * 3

        async def addresses(host: str, port: int) -> list[tuple[Any, ...]]:
            return entries

        monkeypatch.setattr(transport_module, "_addresses", addresses)
        monkeypatch.setattr(transport_module, "HAPPY_EYEBALLS_DELAY", 0)
        winner = uvloop.run(transport_module._tcp("upstream.test", address[1]))
        listener.settimeout(0)
        accepted: list[socket.socket] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                accepted.append(listener.accept()[0])
        try:
            ours = [c for c in accepted if c.getpeername() == winner.getsockname()]
            others = [c for c in accepted if c not in ours]
            assert len(ours) == 1
            for connection in others:
                connection.settimeout(5)
                with contextlib.suppress(ConnectionResetError):
                    assert connection.recv(1) == b""
        finally:
            winner.close()
            for connection in accepted:
                connection.close()


def test_connect_timeout(tarpit: int) -> None:
    async def main(client: httpx.AsyncClient) -> None:
        await client.post(f"http://127.0.0.1:{tarpit}/v1/chat/completions", json={})

    with pytest.raises(httpx.ConnectTimeout):
        run(main, connect=SHORT)


def test_no_answer_is_read_timeout(upstream: FakeUpstream) -> None:
    upstream.reply(Silence())

    async def main(client: httpx.AsyncClient) -> None:
        await client.post(url_of(upstream), json={})

    with pytest.raises(httpx.ReadTimeout):
        run(main, read=SHORT)
    assert upstream.wait_disconnect()


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        ("stall", (httpx.ReadTimeout,)),  # the body stops coming
        ("close", (httpx.RemoteProtocolError, httpx.ReadError)),  # the body is cut midway
    ],
)
def test_a_body_that_stops_is_a_transport_error(
    upstream: FakeUpstream, end: Literal["stall", "close"], expected: tuple[type[Exception], ...]
) -> None:
    upstream.reply(SSEReply([chunk({"content": "a"})], end=end))

    async def main(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", url_of(upstream), json={}) as response:
            async for _ in response.aiter_bytes():
                pass

    with pytest.raises(httpx.TransportError) as caught:
        run(main, read=SHORT)
    assert isinstance(caught.value, expected)


def test_a_caller_that_watches_silences_gets_no_read_timeout_on_the_body(
    upstream: FakeUpstream,
) -> None:
    """`SILENCES_WATCHED` (the relay's streams): the read timeout covers the headers only, and
    the next request on the same connection has its own again."""
    upstream.reply(
        SSEReply([chunk({"content": "a"}), chunk({"content": "b"})], delay=2 * SHORT),
        Silence(),
    )

    async def main(client: httpx.AsyncClient) -> bytes:
        watched = {SILENCES_WATCHED: True}
        async with client.stream("POST", url_of(upstream), json={}, extensions=watched) as r:
            body = b"".join([piece async for piece in r.aiter_bytes()])
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url_of(upstream), json={})
        return body

    body = run(main, max_connections=1, read=SHORT)
    assert b'"a"' in body and b'"b"' in body


def test_hangup_before_the_answer_is_remote_protocol_error(upstream: FakeUpstream) -> None:
    upstream.reply(Hangup())

    async def main(client: httpx.AsyncClient) -> None:
        await client.post(url_of(upstream), json={})

    with pytest.raises(httpx.RemoteProtocolError):
        run(main)


# -- environment and lifecycle -----------------------------------------------------------


def test_http_proxy_from_the_environment(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake upstream plays the proxy: it records the absolute-form target a proxy gets.
    monkeypatch.setenv("HTTP_PROXY", f"http://user:pw@127.0.0.1:{upstream.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    upstream.reply(JSONReply({}))

    async def main(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("http://upstream.invalid/v1/chat/completions", json={})

    assert run(main).status_code == 200
    assert upstream.last.target == "http://upstream.invalid/v1/chat/completions"
    assert upstream.last.headers["proxy-authorization"] == "Basic dXNlcjpwdw=="


def test_credentials_in_the_url_become_basic_auth(upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply({}))
    url = url_of(upstream).replace("http://", "http://user:secret@")

    async def main(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(url, json={})

    assert run(main).status_code == 200
    assert upstream.last.headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="


def test_aclose_ends_the_session(upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply({}))

    async def main() -> Any:
        transport = PooledTransport(max_connections=1, connect_timeout=5, read_timeout=5)
        await transport.aclose()  # before any request: nothing to close
        transport = PooledTransport(max_connections=1, connect_timeout=5, read_timeout=5)
        client = httpx.AsyncClient(transport=transport)
        await client.post(url_of(upstream), json={})
        await client.aclose()
        with pytest.raises(RuntimeError):
            await transport.handle_async_request(httpx.Request("GET", url_of(upstream)))

    asyncio.run(main())


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on loopback with a self-signed certificate (openssl makes it), and
    that certificate, for a client to trust or not."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            body = json.dumps(completion("over TLS")).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/v1/chat/completions", cert
    finally:
        server.shutdown()
        server.server_close()


def test_https_with_a_trusted_certificate(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    # As with httpx's own transport: SSL_CERT_FILE names the CAs to trust.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    async def main(client: httpx.AsyncClient) -> Any:
        return (await client.post(url, json={})).json()

    assert run(main)["choices"][0]["message"]["content"] == "over TLS"


def test_an_untrusted_certificate_is_a_connect_error(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server

    async def main(client: httpx.AsyncClient) -> None:
        await client.post(url, json={})

    with pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
        run(main)


def test_https_through_a_connect_proxy(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://user:pw@127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)

        async def main(client: httpx.AsyncClient) -> Any:
            return [(await client.post(url, json={})).json() for _ in range(2)]

        answers = run(main)
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["over TLS"] * 2
    # A tunnel a request (the server speaks HTTP/1.0), the proxy's own credentials on each.
    assert len(proxy.heads) == 2
    for head in proxy.heads:
        assert head.startswith(f"CONNECT localhost:{httpx.URL(url).port} HTTP/1.1\r\n")
        assert "Proxy-Authorization: Basic dXNlcjpwdw==" in head


def test_a_proxy_that_refuses_the_tunnel_is_a_proxy_error(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = tls_server
    with ConnectProxy(refuse=True) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)

        async def main(client: httpx.AsyncClient) -> None:
            await client.post(url, json={})

        with pytest.raises(httpx.ProxyError, match="407"):
            run(main)


class ConnectProxy:
    """An HTTP proxy on loopback that only tunnels (`CONNECT`), in a thread; `heads` holds
    the heads it was sent. `refuse`: it answers 407 instead."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.heads: list[str] = []
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen()
        self.port: int = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> ConnectProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed: the test is over
                return
            self._spawn(self._tunnel, client)

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(4096)
            if not data:  # the client left before asking
                client.close()
                return
            head += data
        self.heads.append(head.decode("latin-1"))
        if self.refuse:
            client.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n"
            )
            client.close()
            return
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        origin = socket.create_connection(("127.0.0.1" if host == "localhost" else host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._spawn(_pump, origin, client)
        _pump(client, origin)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        sink.close()
        source.close()


# -- answers at the byte level -----------------------------------------------------------


class RawServer:
    """A loopback server in a thread that answers each request it reads with the next of
    `answers`, bytes exactly as given (then closes the connection if the answer is followed
    by `None`); `accepted` counts its connections."""

    def __init__(self, *answers: bytes | None) -> None:
        self.answers = list(answers)
        self.accepted = 0
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen()
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/v1/chat/completions"

    def __enter__(self) -> RawServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while self.answers:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                answer = self.answers.pop(0)
                if answer is None:
                    return
                conn.sendall(answer)
                if self.answers and self.answers[0] is None:
                    return


def test_a_head_over_the_limit_is_refused() -> None:
    padding = b"".join(b"x-pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(80))
    with RawServer(b"HTTP/1.1 200 OK\r\n" + padding + b"content-length: 2\r\n\r\n{}") as server:

        async def main(client: httpx.AsyncClient) -> None:
            await client.post(server.url, json={})

        with pytest.raises(httpx.RemoteProtocolError, match="over 64 KiB"):
            run(main)


def test_a_long_head_within_the_limit_is_taken() -> None:
    padding = b"x-pad: " + b"a" * 60_000 + b"\r\n"
    with RawServer(b"HTTP/1.1 200 OK\r\n" + padding + b"content-length: 2\r\n\r\n{}") as server:

        async def main(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(server.url, json={})

        response = run(main)
    assert response.json() == {}
    assert len(response.headers["x-pad"]) == 60_000


def test_bytes_after_the_answer_are_not_read_as_the_next_one() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    surplus = b'HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"planted"'
    with RawServer(answer + surplus, answer) as server:

        async def main(client: httpx.AsyncClient) -> list[Any]:
            return [(await client.post(server.url, json={})).json() for _ in range(2)]

        assert run(main) == [{}, {}]
        assert server.accepted == 2  # the first connection was not trusted again


def test_a_body_that_lasts_until_the_connection_closes() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + b'{"a": 1}'
    with RawServer(answer, None) as server:

        async def main(client: httpx.AsyncClient) -> Any:
            return (await client.post(server.url, json={})).json()

        assert run(main) == {"a": 1}


def test_an_interim_answer_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"
    with RawServer(answer) as server:

        async def main(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(server.url, json={})

        response = run(main)
    assert (response.status_code, response.json()) == (201, {})


def test_an_answer_that_is_not_http_is_a_protocol_error() -> None:
    with RawServer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", None) as server:

        async def main(client: httpx.AsyncClient) -> None:
            await client.post(server.url, json={})

        with pytest.raises(httpx.RemoteProtocolError, match="not valid HTTP"):
            run(main)
