"""The demo's HTTP server: the standard library's threading server, a static page and JSON endpoints.

Routes::

    GET  /                      the page (static/index.html, with static/demo.js and demo.css)
    GET  /api/config            limits and default settings for the page's controls
    POST /api/generate          JSON {prompt, steps, guidance, map_guidance, seed, num_images}
    POST /api/map2image         the same plus an uploaded map (see DemoApp.map_to_image)
    GET  /download/TOKEN.zip    the COCO panoptic export of an earlier answer

Bad input answers 400 with ``{"error": message}``; anything unexpected answers 500 with a short
message while the traceback goes to the server's log only. The page loads nothing from other
hosts, and the Content-Security-Policy header forbids it to, so the demo works offline. Bound to
a loopback address, the server also refuses requests whose ``Host`` is not a loopback name, so a
web page elsewhere cannot reach it by pointing its own domain at 127.0.0.1 (DNS rebinding).
A POST must be ``application/json`` from the demo's own origin (``Origin`` / ``Sec-Fetch-Site``):
a form or a ``text/plain`` fetch from another site cannot spend the visitor's CPU on generations.
A client that stalls mid-request is cut off after :data:`READ_TIMEOUT_S`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from pandiff.demo.api import DemoApp
from pandiff.errors import PandiffError

logger = logging.getLogger("pandiff.demo")

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
    "/static/demo.css": ("demo.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]"}
DOWNLOAD_PATH = re.compile(r"^/download/([0-9a-f]{32})\.zip$")
READ_TIMEOUT_S = 30.0


class DemoServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the :class:`DemoApp` its handlers call."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: DemoApp) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, DemoHandler)
        self.app = app
        self.loopback_only = _is_loopback(address[0])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}/"


class DemoHandler(BaseHTTPRequestHandler):
    """Routes one request to the page, the API or a download."""

    server: DemoServer
    server_version = "pandiff-demo"
    timeout = READ_TIMEOUT_S  # socket timeout of every read: a stalled body frees its thread

    def do_GET(self) -> None:
        if not self._host_allowed():
            return
        path = self.path.split("?", 1)[0]
        if path in STATIC_FILES:
            name, content_type = STATIC_FILES[path]
            body = resources.files("pandiff.demo").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, content_type)
        elif path == "/api/config":
            self._send_json(HTTPStatus.OK, self.server.app.config())
        elif match := DOWNLOAD_PATH.match(path):
            data = self.server.app.download(match.group(1))
            if data is None:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": "this download has expired; generate again"})
            else:
                name = f"pandiff-{match.group(1)[:8]}.zip"
                self._send(
                    HTTPStatus.OK,
                    data,
                    "application/zip",
                    {"Content-Disposition": f'attachment; filename="{name}"'},
                )
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no page at {path}"})

    def do_POST(self) -> None:
        if not (self._host_allowed() and self._same_origin_json()):
            return
        app = self.server.app
        routes = {
            "/api/generate": app.generate,
            "/api/map2image": app.map_to_image,
            "/api/segment": app.segment,
        }
        path = self.path.split("?", 1)[0]
        if path not in routes:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint at {path}"})
            return
        body = self._read_json()
        if body is None:
            return
        try:
            answer = routes[path](body)
        except PandiffError as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except Exception:
            logger.exception("the demo failed on %s", path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "internal error while handling the request; the server's log has the details"},
            )
        else:
            self._send_json(HTTPStatus.OK, answer)

    # -- helpers ---------------------------------------------------------------------------------
    def _read_json(self) -> dict | None:
        """The request's JSON body, or None after answering why it cannot be read."""
        limit = self.server.app.limits.max_upload_bytes * 2  # base64 fields: 4/3 of the upload, plus JSON
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send_json(HTTPStatus.LENGTH_REQUIRED, {"error": "the request needs a Content-Length"})
            return None
        if not 0 <= length <= limit:
            self.close_connection = True  # the unread body must not be taken for the next request
            self._send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"the request is {length} bytes; the demo accepts at most {limit}"},
            )
            return None
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            self._send_json(HTTPStatus.REQUEST_TIMEOUT, {"error": "the request body did not arrive in time"})
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": f"the request body is not valid JSON: {exc}"})
        except RecursionError:  # json recurses per nesting level; a 200k-deep body exhausts the stack
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": "the request body is nested too deeply"})
        return None

    def _same_origin_json(self) -> bool:
        """Refuse a POST another site's page could send: not JSON (a form or a text/plain fetch
        needs no CORS preflight), or from a foreign origin."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self.close_connection = True
            self._send_json(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                {"error": "the request must be Content-Type: application/json"},
            )
            return False
        origin = self.headers.get("Origin")
        site = (self.headers.get("Sec-Fetch-Site") or "").lower()
        own = f"http://{self.headers.get('Host', '')}".lower()
        if (origin is not None and origin.lower() != own) or site not in ("", "same-origin", "none"):
            self.close_connection = True
            self._send_json(
                HTTPStatus.FORBIDDEN, {"error": "cross-site requests are refused; use the demo's own page"}
            )
            return False
        return True

    def _host_allowed(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").lower()
        has_port = host.count(":") == 1 or "]:" in host  # "name:port" or "[v6]:port"
        if (host.rsplit(":", 1)[0] if has_port else host) in LOOPBACK_NAMES:
            return True
        self._send_json(
            HTTPStatus.FORBIDDEN,
            {"error": f"host {host!r} is not allowed; open the demo at {self.server.url}"},
        )
        return False

    def _send_json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(
            status,
            json.dumps(payload, allow_nan=False).encode(),
            "application/json",
            {"Cache-Control": "no-store"},
        )

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 7860) -> DemoServer:
    """Bind the demo (port 0 picks a free port; read it from ``server.url``); call
    ``serve_forever()`` on the result to serve."""
    return DemoServer((host, port), app)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
