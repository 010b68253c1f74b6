#!/usr/bin/env python3
"""Records HTTP/2 golden files: a TCP relay on loopback between a real client and a real server
that writes the bytes of one connection as NAME.c2s (client to server) and NAME.s2c (server to
client), exactly as they crossed the relay.

    record.py LISTEN_PORT TARGET_PORT NAME   # prints "ready", relays one connection, then exits
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
    listen_port, target_port, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
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
    with open(f"{name}.c2s", "wb") as f:
        f.write(b"".join(c2s))
    with open(f"{name}.s2c", "wb") as f:
        f.write(b"".join(s2c))


if __name__ == "__main__":
    main()
