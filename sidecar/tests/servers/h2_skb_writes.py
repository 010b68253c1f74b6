"""Writes a byte stream (HTTP/2 frames, as the test made them) to a client, cut into writes at
the given offsets, each once the client asks for it with a 17-byte PING frame: the previous write
has arrived, so each leaves as an skb of its own (TCP_NODELAY), cut where the test chose, inside
frame headers and payloads. Connections closed before the 24-byte client preface (readiness
probes) are skipped; the first with one is served, then the script exits.

usage: h2_skb_writes.py <port> <stream file> <offset>,<offset>,...
"""

import socket
import sys


def read_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main():
    port, path, cuts = int(sys.argv[1]), sys.argv[2], [int(c) for c in sys.argv[3].split(",")]
    with open(path, "rb") as f:
        stream = f.read()
    bounds = [0] + cuts + [len(stream)]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    while True:
        conn, _ = listener.accept()
        if read_exactly(conn, 24) is None:
            conn.close()
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start, end in zip(bounds, bounds[1:]):
            if read_exactly(conn, 17) is None:
                return
            conn.sendall(stream[start:end])
        read_exactly(conn, 1)
        return


main()
