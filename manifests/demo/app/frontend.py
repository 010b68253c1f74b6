"""Demo frontend: GET / calls the backend over HTTP and returns what it got, so every request
makes a server span here and a client span towards the backend."""

import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BACKEND_URL = os.environ.get("BACKEND_URL", "http://backend:8080/inventory")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, {"status": "ok"})
            return
        if self.path != "/":
            self.reply(404, {"error": "not found"})
            return
        try:
            with urllib.request.urlopen(BACKEND_URL, timeout=2) as response:
                inventory = json.load(response)
            self.reply(200, {"frontend": "ok", "inventory": inventory})
        except (urllib.error.URLError, OSError, ValueError) as error:
            self.reply(502, {"frontend": "backend unavailable", "error": str(error)})

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
