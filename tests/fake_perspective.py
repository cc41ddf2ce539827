"""A loopback server that speaks the Perspective API's comments:analyze format."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "test-key-5f1e9c0d-never-printed"


class FakePerspective(BaseHTTPRequestHandler):
    """Speaks the Perspective comments:analyze request/response format on loopback."""

    requests: list[dict] = []
    keys: list[str] = []
    fail_first_with: list[int] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        type(self).keys.append(self.headers.get("X-Goog-Api-Key", ""))
        if type(self).fail_first_with:
            code = type(self).fail_first_with.pop(0)
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b'{"error": {"code": %d}}' % code)
            return
        text = body["comment"]["text"]
        value = 0.9 if "idiot" in text else 0.1
        payload = {"attributeScores": {"TOXICITY": {"summaryScore": {"value": value, "type": "PROBABILITY"}}},
                   "languages": body["languages"]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def serve_fake_perspective():
    """Start the server; yields its URL (used as the `perspective_server` fixture)."""
    FakePerspective.requests, FakePerspective.keys, FakePerspective.fail_first_with = [], [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePerspective)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1alpha1/comments:analyze"
    server.shutdown()
