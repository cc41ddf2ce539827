"""A loopback server that answers like the Perspective API's comments:analyze: scores for the
languages TOXICITY supports, 400 LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE for uk and am, 403 for a
wrong key, and 429 now and then (every `throttle_every`-th request) or as scripted."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "test-key-5f1e9c0d-never-printed"
UNSUPPORTED = {"uk", "am"}


def _error(code: int, status: str, message: str, reason: str | None = None) -> dict:
    error = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.commentanalyzer.v1alpha1.Error",
                             "errorType": reason, "languageNotSupportedByAttributeError": {"detectedLanguages": [],
                                                                                             "attribute": "TOXICITY"}}]
    return {"error": error}


class FakePerspective(BaseHTTPRequestHandler):
    """Speaks the Perspective comments:analyze request/response format on loopback."""

    requests: list[dict] = []
    keys: list[str] = []
    fail_first_with: list[int] = []
    # Answer every n-th request with 429 (0 = never), like a quota that runs out now and then.
    throttle_every = 0

    def _send(self, code: int, payload: dict, retry_after: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's naming
        cls = type(self)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls.requests.append(body)
        cls.keys.append(self.headers.get("X-Goog-Api-Key", ""))
        if cls.fail_first_with:
            code = cls.fail_first_with.pop(0)
            return self._send(code, _error(code, "UNAVAILABLE" if code >= 500 else "RESOURCE_EXHAUSTED", "try again"), "0")
        if cls.throttle_every and len(cls.requests) % cls.throttle_every == 0:
            return self._send(429, _error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Analysis requests'"), "0")
        if cls.keys[-1] != API_KEY:
            return self._send(403, _error(403, "PERMISSION_DENIED", "API key not valid. Please pass a valid API key."))
        lang = body["languages"][0]
        if lang in UNSUPPORTED:
            message = f"Attribute TOXICITY does not support request languages: {lang}"
            return self._send(400, _error(400, "INVALID_ARGUMENT", message, "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE"))
        value = 0.9 if "idiot" in body["comment"]["text"] else 0.1
        self._send(200, {"attributeScores": {"TOXICITY": {"summaryScore": {"value": value, "type": "PROBABILITY"}}},
                         "languages": body["languages"]})

    def log_message(self, *args):
        pass


def serve_fake_perspective():
    """Start the server; yields its URL (used as the `perspective_server` fixture)."""
    FakePerspective.requests, FakePerspective.keys, FakePerspective.fail_first_with = [], [], []
    FakePerspective.throttle_every = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePerspective)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1alpha1/comments:analyze"
    server.shutdown()
