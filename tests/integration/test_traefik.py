"""Traefik serves the cluster's Ingresses (class nginx) and Gateway API HTTPRoutes on 127.0.0.1:443.

The backends are real pods on the node, from the stack's tools image (a small Python echo server that
streams request bodies into a hash), reached by Traefik at their pod IPs. Checked: host routing over
two Ingresses, TLS from each Ingress's own Secret, the forwarded headers, the ssl-redirect and the
Ingress status, the proxy-body-size annotation (a 200 MB upload with "0", 413 above a small limit and
above ingress-nginx's default 1m), an HTTPRoute attached to the stack's Gateway, and that Traefik
listens on loopback only with no secret in its argv. Needs the local stack (`make up`); see
conftest.py for skip/fail rules (CI=true fails).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import os
import socket
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .conftest import Kubectl, restricted_container, state_dir, unavailable

ADDRESS = "127.0.0.1"
NODE = "mlstack-node"
MIB = 1024 * 1024
UPLOAD_SIZE = 200 * MIB
CHUNK = MIB

# The backend (argv: its name, port): answers with what it received, as JSON; bodies are streamed
# into a SHA-256, so a 200 MB upload needs no memory in the pod.
ECHO = r"""
import hashlib, http.server, json, sys

NAME, PORT = sys.argv[1], int(sys.argv[2])

class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, extra):
        body = json.dumps({"backend": NAME, "method": self.command, "path": self.path,
                           "headers": dict(self.headers), **extra}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer({})

    def do_POST(self):
        left = int(self.headers.get("Content-Length", "0"))
        digest, received = hashlib.sha256(), 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            received += len(chunk)
            left -= len(chunk)
        self.answer({"received": received, "sha256": digest.hexdigest()})

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Echo).serve_forever()
"""


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ingress(stack_env: dict[str, str], kubectl: Kubectl) -> dict[str, Any]:
    """Ports, Gateway and the stack CA of a running Traefik, once the node is Ready."""
    for key in ("INGRESS_HTTPS_PORT", "GATEWAY_NAME", "MLSTACK_CA_CERT", "MLSTACK_TOOLS_IMAGE"):
        if key not in stack_env:
            unavailable(f"stack.env lacks {key}: are the traefik, platform and images components up (`make up`)?")
    https, http_port = int(stack_env["INGRESS_HTTPS_PORT"]), int(stack_env["INGRESS_HTTP_PORT"])
    try:
        socket.create_connection((ADDRESS, https), timeout=2).close()
    except OSError:
        unavailable(f"nothing listens on {ADDRESS}:{https}: is the traefik component up (`make up`)?")
    node = kubectl.run("get", "node", NODE, "-o", "json", check=False)
    conditions = json.loads(node.stdout)["status"].get("conditions", []) if node.returncode == 0 else []
    if {c["type"]: c["status"] for c in conditions}.get("Ready") != "True":
        unavailable(f"node {NODE} is not Ready: is the node component up (`make up`)?")
    return {
        "https": https,
        "http": http_port,
        "ca": Path(stack_env["MLSTACK_CA_CERT"]).read_text(),
        "image": stack_env["MLSTACK_TOOLS_IMAGE"],
        "gateway": (stack_env["GATEWAY_NAMESPACE"], stack_env["GATEWAY_NAME"], stack_env["GATEWAY_SECTION"]),
        "tls_source": (stack_env.get("TLS_SOURCE_NAMESPACE", "default"), stack_env.get("TLS_SOURCE_SECRET")),
    }


@pytest.fixture
def backends(kubectl: Kubectl, namespace: str, ingress: dict[str, Any]) -> Iterator[str]:
    """Two echo Deployments (``alpha``, ``beta``) with their Services, Ready, in the test namespace."""
    manifests: list[dict[str, Any]] = []
    for name in ("alpha", "beta"):
        manifests += echo_backend(namespace, name, ingress["image"])
    kubectl.apply(*manifests)
    for name in ("alpha", "beta"):
        kubectl.run("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=180s")
    yield namespace


# --- helpers --------------------------------------------------------------------------------------------


def echo_backend(namespace: str, name: str, image: str) -> list[dict[str, Any]]:
    container = restricted_container("echo", image, ["python3", "-c", ECHO, name, "8080"])
    container |= {
        "imagePullPolicy": "Never",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
        "resources": {"limits": {"memory": "128Mi"}},
    }
    labels = {"app": name}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        },
    ]


def tls_secret(namespace: str, name: str, cert: bytes, key: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()},
    }


def ingress_for(
    namespace: str, name: str, host: str, service: str, secret: str | None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ingressClassName": "nginx",
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": service, "port": {"name": "http"}}},
                        }
                    ]
                },
            }
        ],
    }
    if secret:
        spec["tls"] = [{"hosts": [host], "secretName": secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": spec,
    }


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


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


class PinnedHTTPS(http.client.HTTPSConnection):
    """Connects to the ingress address but speaks TLS (SNI, verification) and HTTP (Host) for ``host``."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float = 60) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self.tls_context = context

    def connect(self) -> None:
        sock = socket.create_connection((ADDRESS, self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)


def request(
    host: str,
    port: int,
    context: ssl.SSLContext,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, bytes, bytes]:
    """Status, body and the served certificate (DER) of one HTTPS request for ``host``."""
    connection = PinnedHTTPS(host, port, context, timeout)
    try:
        connection.request(method, "/echo?x=1", body=body, headers=headers or {})
        response = connection.getresponse()
        served = connection.sock.getpeercert(binary_form=True) if connection.sock else b""
        return response.status, response.read(), served or b""
    finally:
        connection.close()


def announce_only(host: str, port: int, context: ssl.SSLContext, length: int) -> int:
    """Status of a POST that announces ``length`` bytes and sends none: a limit by Content-Length."""
    connection = PinnedHTTPS(host, port, context)
    try:
        connection.putrequest("POST", "/echo?x=1")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def trusting(pem: str | bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=pem.decode() if isinstance(pem, bytes) else pem)


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0, interval: float = 0.5) -> Any:
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


def served_ok(host: str, port: int, context: ssl.SSLContext) -> Callable[[], tuple[int, bytes, bytes] | None]:
    def check() -> tuple[int, bytes, bytes] | None:
        answer = request(host, port, context)
        return answer if answer[0] == 200 else None

    return check


def header(headers: dict[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


class Chunks:
    """``size`` random-ish bytes streamed in chunks, hashed on the way (no 200 MB in memory)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.digest = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        block = os.urandom(CHUNK)
        left = self.size
        while left > 0:
            chunk = block[: min(left, CHUNK)]
            self.digest.update(chunk)
            left -= len(chunk)
            yield chunk


def listeners(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
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


def traefik_pid() -> int:
    record = state_dir() / "pids" / "traefik.json"
    if not record.exists():
        unavailable(f"{record} not found: is the traefik component up?")
    return int(json.loads(record.read_text())["pid"])


# --- tests ----------------------------------------------------------------------------------------------


def test_ingresses_route_by_host_with_tls_from_their_secrets(
    kubectl: Kubectl, backends: str, ingress: dict[str, Any]
) -> None:
    namespace, https = backends, ingress["https"]
    # Unique hosts per run: an Ingress of a namespace still being deleted must not claim the host.
    alpha, beta = f"alpha-{namespace}.mlstack.test", f"beta-{namespace}.mlstack.test"
    # alpha: a certificate of its own, trusted by nothing else. The Gateway's wildcard certificate
    # also matches *.mlstack.test, so only this proves Traefik serves the Ingress's Secret.
    alpha_cert, alpha_key = self_signed(alpha)
    # beta: the platform's wildcard certificate, copied into the namespace as the collection does.
    source_namespace, source_name = ingress["tls_source"]
    source = kubectl.get("secret", source_name or "mlstack-test-tls", source_namespace)["data"]
    wildcard_cert, wildcard_key = (base64.b64decode(source[key]) for key in ("tls.crt", "tls.key"))
    kubectl.apply(
        tls_secret(namespace, "alpha-tls", alpha_cert, alpha_key),
        tls_secret(namespace, "beta-tls", wildcard_cert, wildcard_key),
        ingress_for(namespace, "alpha", alpha, "alpha", "alpha-tls"),
        ingress_for(namespace, "beta", beta, "beta", "beta-tls"),
    )

    _, body, served = wait_for(f"{alpha} over HTTPS", served_ok(alpha, https, trusting(alpha_cert)))
    assert served == der(alpha_cert)
    echoed = json.loads(body)
    assert echoed["backend"] == "alpha"
    assert echoed["path"] == "/echo?x=1"
    headers = echoed["headers"]
    authority = alpha if https == 443 else f"{alpha}:{https}"  # what the client sent as Host
    assert header(headers, "Host") == authority
    assert header(headers, "X-Forwarded-Host") == authority
    assert header(headers, "X-Forwarded-Proto") == "https"
    assert header(headers, "X-Forwarded-Port") == str(https)
    assert header(headers, "X-Forwarded-For") == ADDRESS
    assert header(headers, "X-Real-Ip") == ADDRESS

    # beta, verified with the stack CA (MLSTACK_CA_CERT), reaches the other backend.
    _, body, served = wait_for(f"{beta} over HTTPS", served_ok(beta, https, trusting(ingress["ca"])))
    assert served == der(wildcard_cert)
    assert json.loads(body)["backend"] == "beta"

    # A host no Ingress serves: Traefik's default certificate and a 404.
    assert request(f"unknown-{namespace}.mlstack.test", https, unverified())[0] == 404

    # Plain HTTP to a TLS host is redirected to HTTPS, keeping the method (308), as ingress-nginx does.
    connection = http.client.HTTPConnection(ADDRESS, ingress["http"], timeout=10)
    connection.request("POST", "/echo?x=1", body=b"x", headers={"Host": alpha})
    redirect = connection.getresponse()
    connection.close()
    assert redirect.status == 308
    if https == 443:
        assert redirect.getheader("Location") == f"https://{alpha}/echo?x=1"

    def address() -> str | None:
        entries = ((kubectl.get("ingress", "alpha", namespace).get("status") or {}).get("loadBalancer") or {}).get(
            "ingress"
        ) or []
        return entries[0].get("ip") if entries else None

    assert wait_for("the Ingress status address", address, timeout=30) == ADDRESS


def test_proxy_body_size_is_honoured(kubectl: Kubectl, backends: str, ingress: dict[str, Any]) -> None:
    namespace, https = backends, ingress["https"]
    context = trusting(ingress["ca"])
    unlimited, small, default = (f"{name}-{namespace}.mlstack.test" for name in ("upload", "small", "default"))
    annotation = "nginx.ingress.kubernetes.io/proxy-body-size"
    source_namespace, source_name = ingress["tls_source"]
    source = kubectl.get("secret", source_name or "mlstack-test-tls", source_namespace)["data"]
    kubectl.apply(
        tls_secret(namespace, "wildcard-tls", *(base64.b64decode(source[key]) for key in ("tls.crt", "tls.key"))),
        # As the collection's MLflow Ingress: "0" lifts the limit.
        ingress_for(namespace, "upload", unlimited, "alpha", "wildcard-tls", {annotation: "0"}),
        ingress_for(namespace, "small", small, "alpha", "wildcard-tls", {annotation: "100k"}),
        ingress_for(namespace, "default", default, "alpha", "wildcard-tls"),
    )
    for host in (unlimited, small, default):
        wait_for(f"{host} over HTTPS", served_ok(host, https, context))

    # 200 MB through the public host, whole and intact.
    payload = Chunks(UPLOAD_SIZE)
    status, body, _ = request(
        unlimited, https, context, "POST", payload, {"Content-Length": str(UPLOAD_SIZE)}, timeout=600
    )
    assert status == 200, body[:300]
    assert json.loads(body)["received"] == UPLOAD_SIZE
    assert json.loads(body)["sha256"] == payload.digest.hexdigest()

    # "100k": a body under it passes, one over it is refused with 413, whether announced or sent.
    status, body, _ = request(small, https, context, "POST", os.urandom(50 * 1024))
    assert (status, json.loads(body)["received"]) == (200, 50 * 1024)
    assert request(small, https, context, "POST", os.urandom(200 * 1024))[0] == 413
    assert announce_only(small, https, context, 2 * MIB) == 413
    # No annotation: ingress-nginx's default limit of 1m.
    assert announce_only(default, https, context, 2 * MIB) == 413
    assert request(default, https, context, "POST", os.urandom(512 * 1024))[0] == 200


def test_an_httproute_on_the_gateway_reaches_its_service(
    kubectl: Kubectl, backends: str, ingress: dict[str, Any]
) -> None:
    namespace, https = backends, ingress["https"]
    gateway_namespace, gateway_name, section = ingress["gateway"]
    host = f"route-{namespace}.mlstack.test"
    kubectl.apply(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "beta", "namespace": namespace},
            "spec": {
                "parentRefs": [{"name": gateway_name, "namespace": gateway_namespace, "sectionName": section}],
                "hostnames": [host],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": "beta", "port": 80}],
                    }
                ],
            },
        }
    )
    # The listener's certificate is the platform's wildcard one: verified with the stack CA.
    _, body, _ = wait_for(f"{host} through the Gateway", served_ok(host, https, trusting(ingress["ca"])))
    echoed = json.loads(body)
    assert echoed["backend"] == "beta"
    assert header(echoed["headers"], "Host") == (host if https == 443 else f"{host}:{https}")

    def accepted() -> bool:
        parents = (kubectl.get("httproute", "beta", namespace).get("status") or {}).get("parents") or []
        conditions = {c["type"]: c["status"] for parent in parents for c in parent.get("conditions", [])}
        return conditions.get("Accepted") == "True" and conditions.get("ResolvedRefs") == "True"

    assert wait_for("the HTTPRoute accepted by the Gateway", accepted, timeout=30)
    gateway = kubectl.get("gateway", gateway_name, gateway_namespace)
    assert {"type": "IPAddress", "value": ADDRESS} in gateway["status"]["addresses"]


def test_traefik_listens_on_loopback_only_and_keeps_its_token_out_of_argv(ingress: dict[str, Any]) -> None:
    pid = traefik_pid()
    static = yaml.safe_load((state_dir() / "traefik" / "traefik.yaml").read_text())
    ping = int(static["entryPoints"]["ping"]["address"].rpartition(":")[2])  # 38080 in the stack
    assert listeners(pid) == {(ADDRESS, ingress["https"]), (ADDRESS, ingress["http"]), (ADDRESS, ping)}
    assert "api" not in static  # no dashboard
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    token_file = state_dir() / "traefik" / "token"
    token = token_file.read_bytes()
    assert token and all(token not in arg for arg in argv)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((state_dir() / "traefik" / "traefik.yaml").stat().st_mode) == 0o600
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not any(entry.startswith((b"KUBECONFIG=", b"KUBERNETES_SERVICE_HOST=")) for entry in environ)
