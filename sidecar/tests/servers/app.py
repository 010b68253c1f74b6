"""A small HTTP/1.1 service for the sidecar's integration tests and demo.

GET|HEAD /status/<code>   answers <code> with a short body
POST /echo                answers 200 with the request body
GET /call/<port>/<path>   calls http://127.0.0.1:<port>/<path> on the serving thread (a client span
                          in the same trace) and answers with that call's status
GET /users/<id>           answers 200 with a JSON document
GET /db/<pg port>/<redis port>
                          on the serving thread, queries PostgreSQL (psycopg) and Redis (redis-py)
                          on 127.0.0.1 (client spans in the same trace), answers 200
"""

import http.client
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def query_databases(pg_port, redis_port):
    """One PostgreSQL query and two Redis commands, each on a connection of its own."""
    import psycopg
    import redis

    dsn = f"host=127.0.0.1 port={pg_port} user=test dbname=shop sslmode=disable"
    with psycopg.connect(dsn, autocommit=True) as conn:
        (name,) = conn.execute("SELECT datname FROM pg_database WHERE datname = 'shop'").fetchone()
    client = redis.Redis(port=redis_port)
    client.set("last", name)
    value = client.get("last")
    client.close()
    return value + b"\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body, content_type="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "status" and len(parts) == 2 and parts[1].isdigit():
            self.reply(int(parts[1]), b"status %s\n" % parts[1].encode())
        elif parts[0] == "users" and len(parts) == 2:
            self.reply(200, json.dumps({"id": parts[1]}).encode(), "application/json")
        elif parts[0] == "db" and len(parts) == 3:
            self.reply(200, query_databases(int(parts[1]), int(parts[2])))
        elif parts[0] == "call" and len(parts) >= 2:
            conn = http.client.HTTPConnection("127.0.0.1", int(parts[1]), timeout=5)
            conn.request("GET", "/" + "/".join(parts[2:]))
            response = conn.getresponse()
            response.read()
            conn.close()
            self.reply(response.status, b"called\n")
        else:
            self.reply(404, b"not found\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path == "/echo":
            self.reply(200, body, "application/octet-stream")
        else:
            self.reply(404, b"not found\n")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()
