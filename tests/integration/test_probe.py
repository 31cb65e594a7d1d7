"""scripts/gpu/probe.py reads the kernel's socket queues; checked against real loopback sockets in known states."""
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "gpu"))

from probe import socket_queues  # noqa: E402


def _wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return pred()


def test_socket_queues_see_unaccepted_unread_and_client_unread_bytes():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        # three connections the server has not accept()ed, one of them with a request in it
        clients[0].sendall(b"x" * 3000)
        q = _wait(lambda: (s := socket_queues(port))["srv_unread_bytes"] == 3000 and s)
        assert q["accept_queue"] == 3 and q["srv_conns"] == 3
        assert q["srv_unread_conns"] == 1 and q["srv_unread_bytes"] == 3000
        # accepted and read: nothing waits at the server any more; a response the client does not read waits there
        conn, _ = srv.accept()
        got = 0
        while got < 3000:
            got += len(conn.recv(4096))
        conn.sendall(b"y" * 500)
        q = _wait(lambda: (s := socket_queues(port))["cli_unread_bytes"] == 500 and s)
        assert q["accept_queue"] == 2 and q["cli_unread_conns"] == 1 and q["srv_unread_bytes"] == 0
        conn.close()
    finally:
        for c in clients:
            c.close()
        srv.close()
