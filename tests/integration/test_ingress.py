"""The local ingress (Debian nginx + mlstack_local.ingressctl) serves an Ingress like a real controller.

Host routing, TLS from the Ingress's Secret, the body-size annotation, the forwarded headers and the
Ingress status are checked against a backend the pod runner really runs. Needs the local stack with
the ``ingress`` component (`make up`); see conftest.py for skip/fail rules (CI=true fails).
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .conftest import Kubectl, restricted_container, state_dir, unavailable

ADDRESS = "127.0.0.1"
BUSYBOX = "docker.io/library/busybox:1.36"
ON_RUNNER = {"mlstack.io/pod-runner": "true"}
BODY_SIZE = 5 * 1024 * 1024

# The backend: answers every request with what it received, as JSON (argv: bind address, port).
ECHO = r"""
import hashlib, http.server, json, sys

class Echo(http.server.BaseHTTPRequestHandler):
    def answer(self, extra):
        body = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers), **extra})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer({})

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.answer({"received": len(data), "sha256": hashlib.sha256(data).hexdigest()})

http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Echo).serve_forever()
"""


@pytest.fixture(scope="module")
def ingress_ports(stack_env: dict[str, str], kubectl: Kubectl) -> tuple[int, int]:
    """(HTTPS, HTTP) ports of the running ingress, once the runner's Node is Ready too."""
    if "INGRESS_HTTPS_PORT" not in stack_env:
        unavailable("stack.env lacks INGRESS_HTTPS_PORT: is the ingress component up (`make up`)?")
    https, http = int(stack_env["INGRESS_HTTPS_PORT"]), int(stack_env["INGRESS_HTTP_PORT"])
    try:
        socket.create_connection((ADDRESS, https), timeout=2).close()
    except OSError:
        unavailable(f"nothing listens on {ADDRESS}:{https}: is the ingress component up (`make up`)?")
    node = kubectl.run("get", "node", "mlstack-runner", "-o", "json", check=False)
    conditions = json.loads(node.stdout)["status"].get("conditions", []) if node.returncode == 0 else []
    if {c["type"]: c["status"] for c in conditions}.get("Ready") != "True":
        unavailable("node mlstack-runner is not Ready: is the pod runner up (`make up`)?")
    return https, http


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, http.client.HTTPException, ssl.SSLError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last: {last!r})")


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A certificate for ``host`` (its own trust anchor in the test) and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return cert.public_bytes(pem), key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class PinnedHTTPS(http.client.HTTPSConnection):
    """Connects to the ingress address but speaks TLS (SNI, verification) and HTTP (Host) for ``host``."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(host, port, context=context, timeout=60)
        self.tls_context = context

    def connect(self) -> None:
        sock = socket.create_connection((ADDRESS, self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)


def request(
    host: str, port: int, context: ssl.SSLContext, method: str = "GET", body: bytes | None = None
) -> tuple[int, bytes, bytes]:
    """Status, body and the served certificate (DER) of one HTTPS request for ``host``."""
    connection = PinnedHTTPS(host, port, context)
    try:
        connection.request(method, "/echo?x=1", body=body)
        response = connection.getresponse()
        served = connection.sock.getpeercert(binary_form=True) if connection.sock else b""
        return response.status, response.read(), served or b""
    finally:
        connection.close()


def plain_http(port: int, host: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(ADDRESS, port, timeout=10)
    connection.request("POST", "/echo?x=1", body=b"x", headers={"Host": host})
    return connection.getresponse()


def nginx_listeners(master: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the nginx master listens on, as `ss -ltnp` shows them."""
    inodes = set()
    for fd in Path(f"/proc/{master}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
            found.add((socket.inet_ntop(family, words), int(port, 16)))
    return found


def manifests(namespace: str, host: str, cert: bytes, key: bytes) -> list[dict[str, Any]]:
    container = restricted_container("echo", BUSYBOX, ["python3", "-c", ECHO, "0.0.0.0", "8080"])
    container |= {
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
    }
    labels = {"app": "echo"}
    tls = {"tls.crt": cert, "tls.key": key}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "echo-tls", "namespace": namespace},
            "stringData": {name: value.decode() for name, value in tls.items()},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "echo", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"nodeSelector": ON_RUNNER, "terminationGracePeriodSeconds": 5, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "echo",
                "namespace": namespace,
                "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
            },
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": [host], "secretName": "echo-tls"}],
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "echo", "port": {"name": "http"}}},
                                }
                            ]
                        },
                    }
                ],
            },
        },
    ]


def test_ingress_routes_by_host_with_tls_from_the_secret(
    kubectl: Kubectl, namespace: str, ingress_ports: tuple[int, int]
) -> None:
    https, http = ingress_ports
    # echo.mlstack.test, made unique per run: an Ingress of a namespace still being deleted must not
    # claim the host (the oldest Ingress wins a host and path, as with ingress-nginx).
    host = f"echo-{namespace}.mlstack.test"
    cert, key = self_signed(host)
    kubectl.apply(*manifests(namespace, host, cert, key))
    kubectl.run("rollout", "status", "deployment/echo", "-n", namespace, "--timeout=120s")

    trusting = ssl.create_default_context(cadata=cert.decode())  # trusts only the Secret's certificate

    def served_ok() -> tuple[int, bytes, bytes] | None:
        answer = request(host, https, trusting)
        return answer if answer[0] == 200 else None

    _, body, served = wait_for("the Ingress served over HTTPS", served_ok)
    assert served == x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    echoed = json.loads(body)
    assert echoed["path"] == "/echo?x=1"
    headers = echoed["headers"]
    assert headers["Host"] == host
    assert headers["X-Forwarded-Host"] == host
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-Port"] == str(https)
    assert headers["X-Real-IP"] == ADDRESS
    assert headers["X-Forwarded-For"] == ADDRESS

    # proxy-body-size "0": a body far above nginx's default 1m limit passes whole.
    payload = os.urandom(BODY_SIZE)
    status, body, _ = request(host, https, trusting, "POST", payload)
    assert status == 200, body[:300]
    assert json.loads(body)["received"] == BODY_SIZE
    assert json.loads(body)["sha256"] == hashlib.sha256(payload).hexdigest()

    # An unknown host reaches the catch-all server (with the controller's default certificate).
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    assert request(f"unknown-{namespace}.mlstack.test", https, unverified)[0] == 404

    # Plain HTTP to a TLS host is redirected to HTTPS, keeping the method (308).
    redirect = plain_http(http, host)
    port = "" if https == 443 else f":{https}"
    assert (redirect.status, redirect.getheader("Location")) == (308, f"https://{host}{port}/echo?x=1")

    def address() -> str | None:
        ingress = kubectl.get("ingress", "echo", namespace)
        entries = ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return entries[0].get("ip") if entries else None

    assert wait_for("the Ingress status address", address, timeout=30) == ADDRESS


def test_nginx_listens_on_loopback_only(ingress_ports: tuple[int, int]) -> None:
    master = int((state_dir() / "ingress" / "nginx.pid").read_text())
    assert nginx_listeners(master) == {(ADDRESS, port) for port in ingress_ports}
