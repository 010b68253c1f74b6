"""An HTTP/2 client writing as grpcio does: each request's write is a PING, then a HEADERS frame
whose 9-byte frame header is split across two iovecs of one sendmsg (the first buffer ends 4
bytes into it). Once <file> exists, sends N GET requests (static-table header blocks) on one
connection to 127.0.0.1:<port>, one at a time, reading until each response ends; prints the
status of each.

usage: h2_split_writes.py <port> <n> <file>
"""

import os
import socket
import sys
import time


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def read_frame(sock, buffer):
    while len(buffer) < 9 or len(buffer) < 9 + int.from_bytes(buffer[:3], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("connection closed")
        buffer += chunk
    length = int.from_bytes(buffer[:3], "big")
    head, payload, rest = buffer[:9], buffer[9:9 + length], buffer[9 + length:]
    return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload, rest


def main():
    port, n, after = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    while not os.path.exists(after):
        time.sleep(0.01)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
    buffer = b""
    # :method GET, :path /, :scheme http, then `:authority localhost` as a literal.
    block = bytes([0x82, 0x84, 0x86, 0x41, 9]) + b"localhost"
    for i in range(n):
        stream = 2 * i + 1
        headers = frame(1, 0x05, stream, block)
        ping = frame(6, 0, 0, b"%08d" % i)
        sock.sendmsg([ping + headers[:4], headers[4:]])
        status = None
        while True:
            kind, flags, on, payload, buffer = read_frame(sock, buffer)
            if kind == 4 and not flags & 1:
                sock.sendall(frame(4, 1, 0))
            if on != stream:
                continue
            if kind == 1 and status is None:
                # nginx sends :status as an indexed static entry (0x88 is 200).
                status = {0x88: 200, 0x8D: 404}.get(payload[0], payload[0])
            if flags & 1:
                break
        print(status, flush=True)
    sock.close()


if __name__ == "__main__":
    main()
