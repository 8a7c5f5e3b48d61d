"""A TCP relay between the client and PostgreSQL that records every byte, both ways.

What crosses the wire is what a network observer, a proxy (PgBouncer) or the server itself
receives; the keyscope tests read it to prove that no master key ever crosses.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pyaccess.cluster import free_port
from tests.fix_db import Server


@dataclass
class Relay:
    """Listens on 127.0.0.1:``port`` and forwards to the server; ``recorded`` holds both directions."""

    target: tuple[str, int]
    port: int = field(default_factory=free_port)
    recorded: bytearray = field(default_factory=bytearray)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def dsn(self, dsn: str) -> str:
        """``dsn`` routed through the relay."""
        return make_conninfo(dsn, host="127.0.0.1", port=str(self.port), sslmode="disable")

    def take(self) -> bytes:
        """Everything recorded so far, and start afresh."""
        with self._lock:
            data = bytes(self.recorded)
            self.recorded.clear()
        return data

    def _pump(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target)
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        with client, upstream, selector:
            while True:
                for key, _ in selector.select(timeout=30):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        self.recorded += data
                    key.data.sendall(data)

    def serve(self, listener: socket.socket, stop: threading.Event) -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()


@pytest.fixture
def relay(server: Server) -> Iterator[Relay]:
    params = conninfo_to_dict(server.dsn())
    target = (str(params.get("host", "127.0.0.1")), int(str(params.get("port", "5432"))))
    if target[0].startswith("/"):
        pytest.fail("the relay needs a TCP server (the test server listens on a Unix socket only)")
    recorder = Relay(target)
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", recorder.port)) as listener:
        thread = threading.Thread(target=recorder.serve, args=(listener, stop), daemon=True)
        thread.start()
        try:
            yield recorder
        finally:
            stop.set()
            with contextlib.suppress(RuntimeError):
                thread.join(5)
