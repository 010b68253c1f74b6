"""An HTTPS service for the sidecar's TLS tests (Python's ssl module, on the system libssl).

serve <port> <cert> <key>
    GET /status/<code>          answers <code>
    GET /call/<port>/<path>     calls https://127.0.0.1:<port>/<path> on the serving thread (a
                                client span in the same trace) and answers with its status
"""

import http.client
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def client_context():
    context = ssl.create_default_context()
    # The tests' certificates are self-signed.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "status" and len(parts) == 2 and parts[1].isdigit():
            self.reply(int(parts[1]), b"status %s\n" % parts[1].encode())
        elif parts[0] == "call" and len(parts) >= 2:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", int(parts[1]), timeout=5, context=client_context()
            )
            conn.request("GET", "/" + "/".join(parts[2:]))
            response = conn.getresponse()
            response.read()
            conn.close()
            self.reply(response.status, b"called\n")
        else:
            self.reply(404, b"not found\n")


def main():
    _, port, cert, key = sys.argv
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
