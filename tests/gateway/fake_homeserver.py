"""A stand-in homeserver for the cases Synapse cannot be made to produce on demand (slow
answers, 429/503): every GET gets the same status, headers and JSON body after a delay."""

import http.server
import json
import threading
import time


class FakeHomeserver:
    def __init__(self, status=200, body=None, headers=None, delay=0.0):
        payload = json.dumps(body if body is not None else {}).encode()
        headers = headers or {}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
