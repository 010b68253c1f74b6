"""gRPC peers (Python grpcio) for the sidecar's tests and demo, without generated code: raw bytes
in and out through generic method handlers of the service `shop.Greeter`.

serve <port>                 the gRPC server:
    SayHello   unary: answers b"hello " + request; a request b"status:<code>" is aborted
               with that status code (trailers-only), b"raise" raises (UNKNOWN)
    Sleep      unary: sleeps <request> milliseconds, then answers
    Count      server streaming: <request> messages, 20 ms apart
call <port> [--after=<file>] <call>...
    the client: each call `Method` or `Method:<request>`, optionally `@<timeout ms>`, one after
    the other on one channel; prints each call's status code name (and the messages a stream
    gave: `OK 5`); with --after, waits for <file> to exist first
http <port> <grpc port>      an HTTP/1.1 server: GET /hello/<name> calls SayHello(<name>) on
    the gRPC server from the serving thread, answers 200 with the reply; each reply names the
    thread that served it (the header X-Thread)
"""

import os
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

SERVICE = "shop.Greeter"


def say_hello(request, context):
    if request.startswith(b"status:"):
        code = int(request[len(b"status:"):])
        status = next(s for s in grpc.StatusCode if s.value[0] == code)
        context.abort(status, "asked for " + status.name)
    if request == b"raise":
        raise RuntimeError("failing as asked")
    return b"hello " + request


def sleep(request, context):
    time.sleep(int(request or b"0") / 1000)
    return b"slept"


def count(request, context):
    for i in range(int(request or b"0")):
        if i:
            time.sleep(0.02)
        yield b"%d" % i


def serve(port):
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
            "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
            "Count": grpc.unary_stream_rpc_method_handler(count),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def one_call(channel, spec):
    spec, _, timeout = spec.partition("@")
    method, _, request = spec.partition(":")
    timeout = int(timeout) / 1000 if timeout else None
    path = f"/{SERVICE}/{method}"
    try:
        if method == "Count":
            stream = channel.unary_stream(path)(request.encode(), timeout=timeout)
            return f"OK {sum(1 for _ in stream)}"
        channel.unary_unary(path)(request.encode(), timeout=timeout)
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def call(port, args):
    if args and args[0].startswith("--after="):
        after = args.pop(0)[len("--after="):]
        while not os.path.exists(after):
            time.sleep(0.01)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for spec in args:
            print(one_call(channel, spec), flush=True)


def http(port, grpc_port):
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    hello = channel.unary_unary(f"/{SERVICE}/SayHello")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def do_GET(self):
            name = self.path.rstrip("/").rsplit("/", 1)[-1].encode()
            try:
                body, code = hello(name, timeout=5), 200
            except grpc.RpcError as error:
                body, code = error.code().name.encode(), 502
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Thread", str(threading.get_native_id()))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    command, port, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if command == "serve":
        serve(port)
    elif command == "call":
        call(port, rest)
    elif command == "http":
        http(port, int(rest[0]))
    else:
        sys.exit(f"unknown command {command}")
