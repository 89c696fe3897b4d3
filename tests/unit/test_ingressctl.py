"""The ingress controller's rendering: Ingress objects + the runner's services map + TLS Secrets → nginx.conf.

Pure: no cluster and no network. One test asks the real ``nginx -t`` (which opens no sockets) to accept
a rendered config, when nginx is installed.
"""

from __future__ import annotations

import base64
import datetime
import shutil
import stat
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import ingressctl  # noqa: E402
from mlstack_local.ingressctl import Listen, TlsFiles, render_config, sync_certificates  # noqa: E402

STATE = Path("/srv/ingress")
LISTEN = Listen("127.0.0.1", 80, 443)
SERVICES = {
    "mlflow/mlflow": {"address": "127.0.2.1", "ports": {"http": 5000}},
    "web/site": {"address": "127.0.2.7", "ports": {"8080": 8080, "admin": 9000}},
}
MLFLOW_TLS = {"mlflow/mlflow-tls": TlsFiles("/srv/ingress/certs/mlflow_mlflow-tls.crt", "/x/k.key")}


def ingress(
    name: str = "mlflow",
    namespace: str = "mlflow",
    *,
    host: str | None = "mlflow.mlstack.test",
    paths: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    tls_secret: str | None = "mlflow-tls",  # noqa: S107 - a Secret name
    class_name: str | None = "nginx",
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    """An Ingress like the collection's template renders (defaults), or a variation of it."""
    if paths is None:
        paths = [path("/", "mlflow", port_name="http")]
    spec: dict[str, Any] = {"rules": [{"http": {"paths": paths}}]}
    if host is not None:
        spec["rules"][0]["host"] = host
    if class_name is not None:
        spec["ingressClassName"] = class_name
    if tls_secret and host:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret}]
    if annotations is None:
        annotations = {
            "nginx.ingress.kubernetes.io/proxy-body-size": "0",
            "nginx.ingress.kubernetes.io/proxy-read-timeout": "600",
            "nginx.ingress.kubernetes.io/proxy-send-timeout": "600",
        }
    meta = {"name": name, "namespace": namespace, "annotations": annotations, "creationTimestamp": created}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def path(
    value: str, service: str, *, port_name: str | None = None, port_number: int | None = None, kind: str = "Prefix"
) -> dict[str, Any]:
    port = {"name": port_name} if port_name else {"number": port_number}
    return {"path": value, "pathType": kind, "backend": {"service": {"name": service, "port": port}}}


def server_block(config: str, host: str) -> str:
    """The text of the ``server`` block for ``host``."""
    start = config.index(f"server_name {host};")
    start = config.rindex("    server {", 0, start)
    return config[start : config.index("\n    }\n", start)]


def render(*ingresses: dict[str, Any], tls: dict[str, TlsFiles] | None = None) -> str:
    return render_config(ingresses, SERVICES, MLFLOW_TLS if tls is None else tls, state=STATE, listen=LISTEN)


def test_the_collections_ingress_becomes_a_tls_server_with_its_annotations() -> None:
    block = server_block(render(ingress()), "mlflow.mlstack.test")
    assert "listen 127.0.0.1:443 ssl;" in block
    assert "listen 127.0.0.1:80;" in block
    assert 'ssl_certificate "/srv/ingress/certs/mlflow_mlflow-tls.crt";' in block
    assert 'ssl_certificate_key "/x/k.key";' in block
    assert "location / {" in block
    assert "client_max_body_size 0;" in block
    assert "proxy_read_timeout 600s;" in block
    assert "proxy_send_timeout 600s;" in block
    assert "proxy_pass http://127.0.2.1:5000;" in block
    # HTTP to a TLS host is redirected, as ingress-nginx does by default (308 keeps the method).
    assert 'if ($scheme = "http") { return 308 https://$host$request_uri; }' in block


def test_standard_headers_and_paths_under_the_state_dir() -> None:
    config = render(ingress())
    for header in ("Host $host", "X-Real-IP $remote_addr", "X-Forwarded-For $remote_addr"):
        assert f"proxy_set_header {header};" in config
    for header in ("X-Forwarded-Proto $scheme", "X-Forwarded-Host $host", "X-Forwarded-Port $server_port"):
        assert f"proxy_set_header {header};" in config
    for directive in ("pid", "client_body_temp_path", "proxy_temp_path", "access_log", "ssl_certificate"):
        line = next(line for line in config.splitlines() if line.strip().startswith(directive + " "))
        assert '"/srv/ingress/' in line, line
    assert "/var/" not in config and "/etc/" not in config


def test_catch_all_server_answers_404() -> None:
    config = render()
    block = server_block(config, "_")
    assert "listen 127.0.0.1:443 ssl default_server;" in block
    assert "location / { return 404; }" in block
    assert config.count("server_name ") == 1


def test_redirect_uses_a_non_default_https_port_and_can_be_disabled() -> None:
    listen = Listen("127.0.0.1", 8080, 8443)
    config = render_config([ingress()], SERVICES, MLFLOW_TLS, state=STATE, listen=listen)
    assert "return 308 https://$host:8443$request_uri;" in config
    assert "listen 127.0.0.1:8443 ssl default_server;" in config
    annotations = {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}
    assert "return 308" not in render(ingress(annotations=annotations))


def test_unknown_backends_answer_503() -> None:
    paths = [
        path("/missing", "nope", port_name="http"),
        path("/wrong-port", "mlflow", port_name="grpc"),
        path("/wrong-number", "mlflow", port_number=5001),
    ]
    block = server_block(render(ingress(paths=paths)), "mlflow.mlstack.test")
    assert "proxy_pass" not in block
    assert block.count("return 503;") == 6  # each Prefix path is two locations


def test_ports_by_number_and_by_name() -> None:
    paths = [path("/", "site", port_number=8080), path("/admin", "site", port_name="admin")]
    block = server_block(
        render(ingress("site", "web", host="web.test", paths=paths, tls_secret=None, annotations={})), "web.test"
    )
    assert "location / {  # web/site\n            proxy_pass http://127.0.2.7:8080;" in block
    assert "location /admin/ {  # web/site\n            proxy_pass http://127.0.2.7:9000;" in block
    assert "return 308" not in block and "ssl_certificate" not in block  # no TLS: default certificate


def test_path_types() -> None:
    paths = [
        path("/api/", "mlflow", port_name="http"),
        path("/exact", "mlflow", port_name="http", kind="Exact"),
        path("/impl", "mlflow", port_name="http", kind="ImplementationSpecific"),
    ]
    block = server_block(render(ingress(paths=paths)), "mlflow.mlstack.test")
    # Prefix matches whole elements: /api and /api/..., never /apix.
    assert "location = /api {" in block and "location /api/ {" in block
    assert "location = /exact {" in block and "location /exact/" not in block
    assert "location /impl {" in block
    assert "location / { return 404; }" in block  # nothing claims "/": the host still answers 404 there


def test_oldest_ingress_wins_a_path_and_exact_beats_prefix() -> None:
    old = ingress("old", paths=[path("/a", "mlflow", port_name="http")], created="2026-01-01T00:00:00Z")
    new = ingress(
        "new",
        paths=[path("/a", "nope", port_name="http"), path("/a", "mlflow", port_name="http", kind="Exact")],
        created="2026-02-01T00:00:00Z",
    )
    block = server_block(render(new, old), "mlflow.mlstack.test")
    assert "location /a/ {  # mlflow/old" in block
    assert "location = /a {  # mlflow/new" in block  # Exact, from the newer Ingress
    assert block.count("location = /a ") == 1  # nginx rejects duplicate locations


def test_only_class_nginx_or_no_class_is_served() -> None:
    config = render(
        ingress("a", host="a.test", class_name="traefik"),
        ingress("b", host="b.test", class_name=None),
        ingress("c", host="c.test", class_name=None, annotations={"kubernetes.io/ingress.class": "other"}),
    )
    assert "server_name b.test;" in config
    assert "a.test" not in config and "c.test" not in config


def test_missing_tls_secret_keeps_tls_with_the_default_certificate() -> None:
    block = server_block(render(ingress(), tls={}), "mlflow.mlstack.test")
    assert "ssl_certificate" not in block  # inherited from http{}: the default certificate
    assert "return 308" in block


def test_hostless_rules_and_default_backend_go_to_the_catch_all_server() -> None:
    hostless = ingress("any", host=None, paths=[path("/x", "mlflow", port_name="http")])
    fallback = ingress("fallback", host="f.test", tls_secret=None)
    fallback["spec"]["defaultBackend"] = {"service": {"name": "mlflow", "port": {"name": "http"}}}
    block = server_block(render(hostless, fallback), "_")
    assert "location /x/ {  # mlflow/any" in block
    assert "location / {  # mlflow/fallback\n            proxy_pass http://127.0.2.1:5000;" in block
    assert "return 404" not in block


def test_invalid_values_never_reach_the_config() -> None:
    annotations = {
        "nginx.ingress.kubernetes.io/proxy-body-size": "1m; evil on",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "10s;",
    }
    bad_path = ingress("p", host="p.test", paths=[path("/a;b", "mlflow", port_name="http")], tls_secret=None)
    config = render(ingress(annotations=annotations), ingress("h", host="x.test;evil"), bad_path)
    assert "evil" not in config and "a;b" not in config
    assert "client_max_body_size" not in config and "proxy_read_timeout" not in config
    services = {"mlflow/mlflow": {"address": "127.0.2.1; evil", "ports": {"http": 5000}}}
    assert "evil" not in render_config([ingress()], services, {}, state=STATE, listen=LISTEN)


def test_body_size_values() -> None:
    for value, expected in (("0", "0"), ("25m", "25m"), ("1024", "1024"), (" 8k ", "8k")):
        annotations = {"nginx.ingress.kubernetes.io/proxy-body-size": value}
        assert f"client_max_body_size {expected};" in render(ingress(annotations=annotations))


# ---- certificates -----------------------------------------------------------------------------------
def self_signed(common_name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return cert.public_bytes(pem), key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def tls_secret(namespace: str, name: str, cert: bytes, key: bytes) -> dict[str, Any]:
    data = {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}
    return {"metadata": {"namespace": namespace, "name": name}, "data": data}


def test_tls_secrets_are_written_0600_and_kept_current(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    cert, key = self_signed("mlflow.mlstack.test")
    secrets = {"mlflow/mlflow-tls": tls_secret("mlflow", "mlflow-tls", cert, key)}
    files, changed = sync_certificates([ingress()], secrets, certs)
    assert changed
    assert files == {
        "mlflow/mlflow-tls": TlsFiles(str(certs / "mlflow_mlflow-tls.crt"), str(certs / "mlflow_mlflow-tls.key"))
    }
    assert (certs / "mlflow_mlflow-tls.crt").read_bytes() == cert
    assert stat.S_IMODE((certs / "mlflow_mlflow-tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((certs / "mlflow_mlflow-tls.crt").stat().st_mode) == 0o600
    assert sync_certificates([ingress()], secrets, certs) == (files, False)  # unchanged: no reload needed

    rotated = self_signed("mlflow.mlstack.test")
    secrets["mlflow/mlflow-tls"] = tls_secret("mlflow", "mlflow-tls", *rotated)
    assert sync_certificates([ingress()], secrets, certs)[1]  # rotated: reload even with the same text
    assert sync_certificates([], secrets, certs) == ({}, False)
    assert list(certs.iterdir()) == []  # no longer referenced: removed


def test_invalid_or_mismatched_tls_secrets_are_skipped(tmp_path: Path) -> None:
    cert, _ = self_signed("a")
    _, other_key = self_signed("b")
    secrets = {
        "mlflow/mlflow-tls": tls_secret("mlflow", "mlflow-tls", cert, other_key),
        "web/junk": {"metadata": {}, "data": {"tls.crt": base64.b64encode(b"junk").decode()}},
    }
    ingresses = [ingress(), ingress("site", "web", host="web.test", tls_secret="junk")]
    assert sync_certificates(ingresses, secrets, tmp_path / "certs") == ({}, False)


# ---- nginx --------------------------------------------------------------------------------------------
def test_a_config_failing_nginx_t_is_never_installed(tmp_path: Path) -> None:
    nginx = ingressctl.Nginx(tmp_path, binary="false")
    nginx.config.write_text("the running config\n")
    assert not nginx.apply("broken")
    assert nginx.config.read_text() == "the running config\n"


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed (apt-get install nginx-light)")
def test_nginx_accepts_a_rendered_config(tmp_path: Path) -> None:
    state = tmp_path / "ingress"
    for sub in ("logs", "tmp", "certs"):
        (state / sub).mkdir(parents=True)
    ingressctl.ensure_default_certificate(state)
    cert, key = self_signed("mlflow.mlstack.test")
    secrets = {"mlflow/mlflow-tls": tls_secret("mlflow", "mlflow-tls", cert, key)}
    paths = [path("/", "mlflow", port_name="http"), path("/gone", "nope", port_name="http", kind="Exact")]
    ingresses = [ingress(paths=paths), ingress("any", host=None, paths=[path("/x", "mlflow", port_name="http")])]
    files, _ = sync_certificates(ingresses, secrets, state / "certs")
    config = render_config(ingresses, SERVICES, files, state=state, listen=LISTEN)
    (state / "candidate.conf").write_text(config)
    assert ingressctl.Nginx(state).test(state / "candidate.conf") is None


# ---- the reconcile loop -------------------------------------------------------------------------------
class FakeCluster:
    def __init__(self) -> None:
        self.networking = SimpleNamespace(list_ingress_for_all_namespaces=None)
        self.core = SimpleNamespace(list_secret_for_all_namespaces=None)
        self.published: list[str] = []

    def publish_status(self, obj: dict[str, Any]) -> None:
        self.published.append(ingressctl.object_key(obj))


def test_reconcile_loads_once_and_publishes_the_status(tmp_path: Path) -> None:
    services = tmp_path / "services.json"
    services.write_text('{"mlflow/mlflow": {"address": "127.0.2.1", "ports": {"http": 5000}}}')
    cluster = FakeCluster()
    controller = ingressctl.Controller(cluster, tmp_path, services, LISTEN)  # type: ignore[arg-type]
    applied: list[str] = []
    controller.nginx.apply = lambda text: applied.append(text) or True  # type: ignore[method-assign]
    done = ingress("done")
    done["status"] = {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
    controller.ingresses._objects = {"mlflow/mlflow": ingress(), "mlflow/done": done}
    controller.reconcile()
    controller.reconcile()
    assert len(applied) == 1 and "proxy_pass http://127.0.2.1:5000;" in applied[0]
    assert cluster.published == ["mlflow/mlflow", "mlflow/mlflow"]  # until the watch shows it written
    services.write_text('{"mlflow/mlflow": {"address": "127.0.2.9", "ports": {"http": 5000}}}')
    controller.reconcile()
    assert len(applied) == 2 and "proxy_pass http://127.0.2.9:5000;" in applied[1]
