#!/usr/bin/env python3
"""Records HTTP/1.x golden files: a TCP relay between a real client and a real server that
writes each connection's bytes as NAME.req (client to server) and NAME.resp (server to client).

    record.py LISTEN_PORT TARGET_PORT NAME   # relays one connection, then exits
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
    server = socket.create_connection(("127.0.0.1", target_port))
    requests, responses = [], []
    up = threading.Thread(target=pump, args=(client, server, requests))
    down = threading.Thread(target=pump, args=(server, client, responses))
    up.start()
    down.start()
    up.join()
    down.join()
    with open(f"{name}.req", "wb") as f:
        f.write(b"".join(requests))
    with open(f"{name}.resp", "wb") as f:
        f.write(b"".join(responses))


if __name__ == "__main__":
    main()
