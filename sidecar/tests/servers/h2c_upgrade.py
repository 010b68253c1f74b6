"""An HTTP/2 server reached by HTTP/1.1 `Upgrade: h2c` (RFC 7540, section 3.2), on python-hyper's
h2: the upgraded request is answered on stream 1, later requests on their own streams.
Every path answers 200 with the path as its body, but /missing answers 404.

Usage: h2c_upgrade.py PORT
"""

import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def respond(conn, stream_id, path):
    body = path.encode()
    status = "404" if path == "/missing" else "200"
    conn.send_headers(stream_id, [(":status", status), ("content-length", str(len(body)))])
    conn.send_data(stream_id, body, end_stream=True)


def serve(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65535)
        if not more:
            return
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    path = lines[0].split()[1].decode()
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_upgrade_connection(headers[b"http2-settings"])
    respond(conn, 1, path)
    sock.sendall(conn.data_to_send())
    paths = {}
    while True:
        data = rest or sock.recv(65535)
        rest = b""
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                paths[event.stream_id] = dict(event.headers)[b":path"].decode()
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id in paths:
                respond(conn, event.stream_id, paths.pop(event.stream_id))
            elif isinstance(event, h2.events.ConnectionTerminated):
                return
        sock.sendall(conn.data_to_send())


def main():
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    print("listening", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
