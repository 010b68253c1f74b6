#!/usr/bin/env python3
"""Records golden captures: a TCP relay on loopback between a real client and a real server that
writes the bytes of one connection as they crossed it, client to server in CLIENT_FILE, server to
client in SERVER_FILE (http1/: NAME.req and NAME.resp; http2/: NAME.c2s and NAME.s2c).

    record.py LISTEN_PORT TARGET_PORT CLIENT_FILE SERVER_FILE
        # prints "ready", relays one connection, then exits
"""
import socket
import sys
import threading


def pump(src, dst, sink):
    while True:
        data = src.recv(65536)
        if not data:
            break
        sink.append(data)
        dst.sendall(data)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    client_file, server_file = sys.argv[3], sys.argv[4]
    listener = socket.create_server(("127.0.0.1", listen_port), reuse_port=True)
    print("ready", flush=True)
    client, _ = listener.accept()
    listener.close()
    server = socket.create_connection(("127.0.0.1", target_port))
    c2s, s2c = [], []
    up = threading.Thread(target=pump, args=(client, server, c2s))
    down = threading.Thread(target=pump, args=(server, client, s2c))
    up.start()
    down.start()
    up.join()
    down.join()
    with open(client_file, "wb") as f:
        f.write(b"".join(c2s))
    with open(server_file, "wb") as f:
        f.write(b"".join(s2c))


if __name__ == "__main__":
    main()
