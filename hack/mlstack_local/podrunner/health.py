"""The runner's own HTTPS endpoint, on the port the Node advertises as its kubelet endpoint.

* ``/healthz``: 200 while the Node is registered Ready and its Lease is fresh, else 503 (what
  ``Runner.is_up`` asks).
* ``/pods``: a JSON summary of the pods the runner is running (for people debugging the stack).
* ``/containerLogs/<ns>/<pod>/<container>`` with ``tailLines``, ``follow``: what the API server
  calls for ``kubectl logs``. The API server does not verify a kubelet's serving certificate unless
  told to, so a self-signed one (made once, under STATE) is enough.
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from .volumes import pod_dirs


def ensure_certificate(state: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (created on first use, kept afterwards)."""
    cert, key = state / "tls.crt", state / "tls.key"
    if cert.exists() and key.exists():
        return cert, key
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlstack-runner")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("mlstack-runner"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    state.mkdir(parents=True, exist_ok=True)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key.chmod(0o600)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key


def tail_lines(path: Path, count: int | None) -> bytes:
    data = path.read_bytes()
    if count is None:
        return data
    if count <= 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:])


class HealthServer:
    """Serves the endpoints above from a thread."""

    def __init__(
        self, state: Path, port: int, healthy: Callable[[], bool], summary: Callable[[], list[dict[str, Any]]]
    ) -> None:
        self.state = state
        self.healthy = healthy
        self.summary = summary
        handler = self._handler_class()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        cert, key = ensure_certificate(state)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                url = urlparse(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                if parts == ["healthz"]:
                    ok = outer.healthy()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"node not ready\n", "text/plain")
                elif parts == ["pods"]:
                    self._send(200, json.dumps(outer.summary(), indent=2).encode(), "application/json")
                elif len(parts) == 4 and parts[0] == "containerLogs":
                    self._logs(parts[1], parts[2], parts[3], parse_qs(url.query))
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _logs(self, namespace: str, pod: str, container: str, query: dict[str, list[str]]) -> None:
                path = pod_dirs(outer.state, namespace, pod).log(container)
                if "/" in container or not path.exists():
                    self._send(404, f"no logs for {namespace}/{pod}/{container}\n".encode(), "text/plain")
                    return
                tail = query.get("tailLines", [None])[0]
                body = tail_lines(path, int(tail) if tail is not None else None)
                if query.get("follow", ["false"])[0] != "true":
                    self._send(200, body, "text/plain")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self._follow(path, body)

            def _follow(self, path: Path, first: bytes) -> None:
                try:
                    self.wfile.write(first)
                    self.wfile.flush()
                    offset = path.stat().st_size
                    while True:
                        time.sleep(0.5)
                        size = path.stat().st_size
                        if size > offset:
                            with path.open("rb") as handle:
                                handle.seek(offset)
                                self.wfile.write(handle.read(size - offset))
                            self.wfile.flush()
                            offset = size
                except OSError:
                    return

        return Handler
