"""Demo backend: answers GET /inventory with a small JSON document over plain HTTP/1.1."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ITEMS = [{"sku": "obi-001", "name": "probe", "stock": 7}, {"sku": "obi-002", "name": "span", "stock": 3}]


class Handler(BaseHTTPRequestHandler):
    # Keep-alive HTTP/1.1, as most real services speak, so one connection carries many requests.
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, {"status": "ok"})
        elif self.path.startswith("/inventory"):
            self.reply(200, {"items": ITEMS})
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
