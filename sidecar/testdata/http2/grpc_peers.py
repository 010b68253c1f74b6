"""gRPC peers for recording (h2c): generic handlers on raw bytes, so no generated code.

    grpc_peers.py serve PORT    # demo.Echo/Unary (fails with NOT_FOUND for b"fail"), demo.Echo/Stream
    grpc_peers.py client PORT   # Unary OK, Unary failing, Stream (three messages), Unary OK
"""
import sys
from concurrent import futures

import grpc


def unary(request, context):
    if request == b"fail":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such item: fail")
    return b"echo:" + request


def stream(request, context):
    for i in range(3):
        yield b"part %d of %s" % (i, request)


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Echo", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def client(port):
    meta = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/demo.Echo/Unary")
        print(call(b"hello", metadata=meta))
        try:
            call(b"fail", metadata=meta)
        except grpc.RpcError as e:
            print(e.code(), e.details())
        for part in channel.unary_stream("/demo.Echo/Stream")(b"abc", metadata=meta):
            print(part)
        print(call(b"again", metadata=meta))


if __name__ == "__main__":
    {"serve": serve, "client": client}[sys.argv[1]](int(sys.argv[2]))
