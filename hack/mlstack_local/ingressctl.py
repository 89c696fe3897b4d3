"""A small ingress controller for the local stack: Debian's nginx configured from the Ingress objects.

It watches ``networking.k8s.io/v1`` Ingresses of class ``nginx`` (or without a class) in all namespaces,
the Secrets they name for TLS, and the pod runner's services file. From those it renders one nginx
config, checks it with ``nginx -t`` and reloads the nginx master (SIGHUP) when it changed; a config
that fails the check is never loaded. Like a real controller it publishes the Ingress status
(``loadBalancer.ingress[0].ip: 127.0.0.1``), so ``kubectl get ingress`` shows an address.

There is no kube-proxy: a backend Service is reached at the address the pod runner gives it
(``services.json``, see :mod:`mlstack_local.podrunner.services`). A backend it does not serve gets
a 503, as with ingress-nginx.

Honoured ``nginx.ingress.kubernetes.io/`` annotations: ``proxy-body-size``, ``proxy-read-timeout``,
``proxy-send-timeout``, ``proxy-connect-timeout`` and ``ssl-redirect``. Path types: ``Exact``,
``Prefix`` (whole path elements, as Kubernetes defines it) and ``ImplementationSpecific`` (a plain
nginx prefix; regular expressions are not supported).

Run by the ``ingress`` stack component::

    python -m mlstack_local.ingressctl --kubeconfig K --state DIR --services FILE
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kubewatch import setup_daemon_logging, watch_events

log = logging.getLogger("ingressctl")

CLASS_NAME = "nginx"
CONTROLLER = "k8s.io/ingress-nginx"
ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io/"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
ADDRESS = "127.0.0.1"
CONFIG_NAME = "nginx.conf"
SYNCED_NAME = "synced"
WATCH_SECONDS = 240
POLL_SECONDS = 2.0

# What the API server already enforces, checked again because these strings end up in nginx.conf.
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PATH = re.compile(r"^/[A-Za-z0-9._~%/@:+,=!-]*$")
_SIZE = re.compile(r"^[0-9]+[kKmMgG]?$")
_SECONDS = re.compile(r"^[0-9]+$")


# ---- rendering (pure) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Listen:
    """Where nginx listens."""

    address: str = ADDRESS
    http: int = 80
    https: int = 443


@dataclass(frozen=True)
class TlsFiles:
    """A certificate and key written to disk for nginx."""

    cert: str
    key: str


@dataclass(frozen=True)
class Location:
    """One nginx ``location``: ``match`` is its modifier and path (``= /a``, ``/a/``)."""

    match: str
    upstream: str | None  # "127.0.2.N:port"; None answers 503
    options: tuple[str, ...]
    source: str  # "<ns>/<ingress>", for a comment in the config
    exact: bool = False
    ssl_redirect: bool = False


@dataclass
class Server:
    """One nginx ``server``: a host (``""`` for the catch-all) and its locations, first one wins."""

    host: str
    tls: TlsFiles | None = None
    has_tls: bool = False
    locations: dict[str, Location] = field(default_factory=dict)

    def add(self, location: Location) -> None:
        current = self.locations.get(location.match)
        # Kubernetes: an Exact path beats a Prefix one for the same path; otherwise the oldest wins.
        if current is None or (location.exact and not current.exact):
            self.locations[location.match] = location


def object_key(ingress: Mapping[str, Any]) -> str:
    meta = ingress.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def watched(ingress: Mapping[str, Any]) -> bool:
    """Whether this controller serves the Ingress: class ``nginx``, or no class at all."""
    spec = ingress.get("spec") or {}
    annotations = (ingress.get("metadata") or {}).get("annotations") or {}
    name = spec.get("ingressClassName") or annotations.get(LEGACY_CLASS_ANNOTATION)
    return name in (None, "", CLASS_NAME)


def _age(ingress: Mapping[str, Any]) -> tuple[str, str]:
    return (str((ingress.get("metadata") or {}).get("creationTimestamp") or ""), object_key(ingress))


def location_options(annotations: Mapping[str, str], source: str) -> tuple[str, ...]:
    """nginx directives for the supported annotations; invalid values are ignored with a warning."""
    options: list[str] = []
    size = annotations.get(ANNOTATION_PREFIX + "proxy-body-size")
    if size is not None:
        if _SIZE.match(size.strip()):
            options.append(f"client_max_body_size {size.strip()};")
        else:
            log.warning("%s: ignoring proxy-body-size %r", source, size)
    for name in ("read", "send", "connect"):
        value = annotations.get(f"{ANNOTATION_PREFIX}proxy-{name}-timeout")
        if value is None:
            continue
        if _SECONDS.match(value.strip()):
            options.append(f"proxy_{name}_timeout {value.strip()}s;")
        else:
            log.warning("%s: ignoring proxy-%s-timeout %r", source, name, value)
    return tuple(options)


def upstream_of(namespace: str, backend: Mapping[str, Any] | None, services: Mapping[str, Any]) -> str | None:
    """``address:port`` of an Ingress backend from the runner's services map, or None (→ 503).

    The map's port keys are the Service port names (the number for an unnamed port), so a backend's
    ``port.name`` is looked up directly and a ``port.number`` among the port values.
    """
    service = (backend or {}).get("service") or {}
    entry = services.get(f"{namespace}/{service.get('name')}") if service else None
    if not entry:
        return None
    ports: Mapping[str, int] = entry.get("ports") or {}
    wanted = service.get("port") or {}
    if wanted.get("name"):
        number = ports.get(str(wanted["name"]))
    elif wanted.get("number") is not None:
        number = int(wanted["number"]) if int(wanted["number"]) in ports.values() else None
    else:
        number = None
    try:
        address = str(ipaddress.ip_address(entry.get("address", "")))
    except ValueError:
        return None
    return f"{address}:{int(number)}" if number else None


def location_matches(path: str, path_type: str) -> list[tuple[str, bool]]:
    """nginx location matches (and whether each is exact) for one Ingress path."""
    if path_type == "Exact":
        return [(f"= {path}", True)]
    if path_type == "Prefix":
        # Kubernetes Prefix matches whole path elements: /foo matches /foo and /foo/bar, not /foobar.
        trimmed = path.rstrip("/")
        return [("/", False)] if not trimmed else [(f"= {trimmed}", False), (f"{trimmed}/", False)]
    return [(path, False)]


def _tls_for(host: str, ingress: Mapping[str, Any], tls_files: Mapping[str, TlsFiles]) -> tuple[bool, TlsFiles | None]:
    """Whether ``host`` is listed in the Ingress's ``spec.tls``, and the files of its Secret if valid."""
    namespace = (ingress.get("metadata") or {}).get("namespace")
    for entry in (ingress.get("spec") or {}).get("tls") or []:
        hosts = entry.get("hosts") or []
        wildcard = "*." + host.split(".", 1)[-1]
        if host in hosts or wildcard in hosts:
            return True, tls_files.get(f"{namespace}/{entry.get('secretName')}")
    return False, None


def _ssl_redirect(annotations: Mapping[str, str]) -> bool:
    return annotations.get(ANNOTATION_PREFIX + "ssl-redirect", "true").strip().lower() != "false"


def _add_rule(
    servers: dict[str, Server],
    ingress: Mapping[str, Any],
    rule: Mapping[str, Any],
    services: Mapping[str, Any],
    tls_files: Mapping[str, TlsFiles],
) -> None:
    source = object_key(ingress)
    namespace = (ingress.get("metadata") or {}).get("namespace", "")
    annotations = (ingress.get("metadata") or {}).get("annotations") or {}
    host = rule.get("host") or ""
    if host and not _HOST.match(host):
        log.warning("%s: ignoring invalid host %r", source, host)
        return
    server = servers.setdefault(host, Server(host))
    if host and not server.has_tls:
        server.has_tls, server.tls = _tls_for(host, ingress, tls_files)
    options = location_options(annotations, source)
    redirect = server.has_tls and _ssl_redirect(annotations)
    for item in (rule.get("http") or {}).get("paths") or []:
        path = item.get("path") or "/"
        if not _PATH.match(path):
            log.warning("%s: ignoring invalid path %r", source, path)
            continue
        upstream = upstream_of(namespace, item.get("backend"), services)
        for match, exact in location_matches(path, item.get("pathType") or "ImplementationSpecific"):
            server.add(Location(match, upstream, options, source, exact, redirect))


def build_servers(
    ingresses: Iterable[Mapping[str, Any]], services: Mapping[str, Any], tls_files: Mapping[str, TlsFiles]
) -> list[Server]:
    """The servers for the watched Ingresses, oldest Ingress first; the catch-all server comes first."""
    servers: dict[str, Server] = {"": Server("")}
    for ingress in sorted((i for i in ingresses if watched(i)), key=_age):
        spec = ingress.get("spec") or {}
        for rule in spec.get("rules") or []:
            _add_rule(servers, ingress, rule, services, tls_files)
        if spec.get("defaultBackend"):
            namespace = (ingress.get("metadata") or {}).get("namespace", "")
            upstream = upstream_of(namespace, spec["defaultBackend"], services)
            servers[""].add(Location("/", upstream, (), object_key(ingress)))
    return [servers[host] for host in sorted(servers)]


def _quoted(value: str | Path) -> str:
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_location(location: Location, listen: Listen) -> list[str]:
    lines = [f"        location {location.match} {{  # {location.source}"]
    if location.ssl_redirect:
        port = "" if listen.https == 443 else f":{listen.https}"
        lines.append(f'            if ($scheme = "http") {{ return 308 https://$host{port}$request_uri; }}')
    lines += [f"            {option}" for option in location.options]
    if location.upstream:
        lines.append(f"            proxy_pass http://{location.upstream};")
    else:
        lines.append("            return 503;  # the backend Service is not served by the pod runner")
    lines.append("        }")
    return lines


def _render_server(server: Server, listen: Listen) -> list[str]:
    default = "" if server.host else " default_server"
    lines = [
        "    server {",
        f"        listen {listen.address}:{listen.http}{default};",
        f"        listen {listen.address}:{listen.https} ssl{default};",
        f"        server_name {server.host or '_'};",
    ]
    if server.tls:
        lines += [
            f"        ssl_certificate {_quoted(server.tls.cert)};",
            f"        ssl_certificate_key {_quoted(server.tls.key)};",
        ]
    for location in server.locations.values():
        lines += _render_location(location, listen)
    if "/" not in server.locations:
        lines.append("        location / { return 404; }")
    lines.append("    }")
    return lines


def render(servers: Iterable[Server], state: Path, listen: Listen) -> str:
    """The whole nginx.conf; every path nginx writes is under ``state``."""
    head = f"""# Generated by mlstack_local.ingressctl from the cluster's Ingress objects; do not edit.
user nobody nogroup;
worker_processes 2;
pid {_quoted(state / "nginx.pid")};
# stderr lands in the stack's log (what `make up` shows on failure), the file keeps the history.
error_log stderr warn;
error_log {_quoted(state / "logs" / "error.log")} warn;

events {{
    worker_connections 1024;
}}

http {{
    default_type application/octet-stream;
    access_log {_quoted(state / "logs" / "access.log")};
    client_body_temp_path {_quoted(state / "tmp" / "body")};
    proxy_temp_path {_quoted(state / "tmp" / "proxy")};
    fastcgi_temp_path {_quoted(state / "tmp" / "fastcgi")};
    uwsgi_temp_path {_quoted(state / "tmp" / "uwsgi")};
    scgi_temp_path {_quoted(state / "tmp" / "scgi")};
    server_names_hash_bucket_size 128;
    server_tokens off;

    # Hosts without a certificate of their own (and the catch-all) get the controller's default one.
    ssl_certificate {_quoted(state / "default.crt")};
    ssl_certificate_key {_quoted(state / "default.key")};
    ssl_protocols TLSv1.2 TLSv1.3;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" close;
    }}
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    # As ingress-nginx by default: the client's own X-Forwarded-* headers are not trusted.
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header X-Forwarded-Port $server_port;
    # Stream responses (artifact downloads) instead of spooling them to disk.
    proxy_buffering off;

"""
    body: list[str] = []
    for server in servers:
        body += _render_server(server, listen)
    return head + "\n".join(body) + "\n}\n"


def render_config(
    ingresses: Iterable[Mapping[str, Any]],
    services: Mapping[str, Any],
    tls_files: Mapping[str, TlsFiles],
    *,
    state: Path,
    listen: Listen,
) -> str:
    """Ingress objects + the runner's services map + written TLS files → nginx.conf text."""
    return render(build_servers(ingresses, services, tls_files), state, listen)


# ---- certificates -----------------------------------------------------------------------------------
def valid_pair(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the PEM certificate (first of a chain) and key parse and belong together."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, IndexError):
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def write_private(path: Path, content: bytes) -> bool:
    """Write ``content`` with mode 0600 through a rename; False when the file already held it."""
    try:
        if path.read_bytes() == content:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.replace(tmp, path)
    return True


def ensure_default_certificate(state: Path) -> None:
    """A self-signed certificate for the catch-all server and hosts without a valid Secret (kept)."""
    if (state / "default.crt").exists() and (state / "default.key").exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlstack ingress default certificate")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(state / "default.key", key_pem)
    write_private(state / "default.crt", cert.public_bytes(pem))


def tls_secret_names(ingresses: Iterable[Mapping[str, Any]]) -> set[str]:
    """``<ns>/<secret>`` of every TLS Secret the watched Ingresses name."""
    names = set()
    for ingress in ingresses:
        if not watched(ingress):
            continue
        namespace = (ingress.get("metadata") or {}).get("namespace")
        for entry in (ingress.get("spec") or {}).get("tls") or []:
            if entry.get("secretName"):
                names.add(f"{namespace}/{entry['secretName']}")
    return names


def sync_certificates(
    ingresses: Iterable[Mapping[str, Any]], secrets: Mapping[str, Mapping[str, Any]], certs: Path
) -> tuple[dict[str, TlsFiles], bool]:
    """Write ``<ns>_<name>.crt/.key`` for each referenced, valid TLS Secret; drop unreferenced ones.

    Returns the files by ``<ns>/<secret>`` and whether any file changed (nginx reads certificates only
    when it loads its config, so a rotated Secret needs a reload even if the config text is the same).
    """
    files: dict[str, TlsFiles] = {}
    changed = False
    for name in sorted(tls_secret_names(ingresses)):
        data = (secrets.get(name) or {}).get("data") or {}
        try:
            cert, key = base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
        except (KeyError, ValueError):
            log.warning(
                "TLS Secret %s is missing or has no tls.crt/tls.key: its hosts get the default certificate", name
            )
            continue
        if not valid_pair(cert, key):
            log.warning("TLS Secret %s holds no valid certificate/key pair: using the default certificate", name)
            continue
        stem = name.replace("/", "_")  # namespaces and names never contain "_"
        changed |= write_private(certs / f"{stem}.crt", cert)
        changed |= write_private(certs / f"{stem}.key", key)
        files[name] = TlsFiles(str(certs / f"{stem}.crt"), str(certs / f"{stem}.key"))
    kept = {Path(f.cert).name for f in files.values()} | {Path(f.key).name for f in files.values()}
    for stale in certs.glob("*") if certs.is_dir() else []:
        if stale.name not in kept:
            stale.unlink(missing_ok=True)
    return files, changed


# ---- nginx --------------------------------------------------------------------------------------------
class Nginx:
    """Tests and loads configs of the nginx master whose prefix is ``state``."""

    def __init__(self, state: Path, binary: str = "nginx") -> None:
        self.state = state
        self.binary = binary
        self.config = state / CONFIG_NAME

    def master_pid(self) -> int | None:
        """The running master's PID from its pid file, if that process really is our nginx master."""
        try:
            pid = int((self.state / "nginx.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if cmdline.startswith("nginx: master process") and str(self.config) in cmdline else None

    def test(self, path: Path) -> str | None:
        """None if nginx accepts the config at ``path``, else its error output."""
        done = subprocess.run(  # noqa: S603 - fixed argv
            [self.binary, "-t", "-q", "-c", str(path), "-p", f"{self.state}/"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            return None
        return (done.stderr or done.stdout).strip() or f"nginx -t exited {done.returncode}"

    def apply(self, text: str) -> bool:
        """Test ``text``, then make it the config and reload the master; False (nothing loaded) on error."""
        candidate = self.state / f"{CONFIG_NAME}.new"
        candidate.write_text(text)
        error = self.test(candidate)
        if error:
            log.error("the new nginx config fails `nginx -t`, keeping the running one:\n%s", error)
            return False
        os.replace(candidate, self.config)
        pid = self.master_pid()
        if pid is None:
            log.warning("nginx is not running; %s is loaded when it starts", self.config)
            return True
        os.kill(pid, signal.SIGHUP)
        log.info("nginx reloaded (master %d)", pid)
        return True


# ---- Kubernetes -------------------------------------------------------------------------------------
class Gone(Exception):
    """The watch's resourceVersion expired: list again."""


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


class Informer:
    """List, then watch, one kind in all namespaces; keeps ``<ns>/<name> -> object`` current in a thread."""

    def __init__(
        self,
        kind: str,
        lister: Callable[..., Any],
        changed: threading.Event,
        keep: Callable[[dict[str, Any]], dict[str, Any]] = lambda obj: obj,
    ) -> None:
        self.kind = kind
        self.lister = lister
        self.changed = changed
        self.keep = keep
        self.synced = threading.Event()
        self._objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"{kind}-informer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._objects)

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = self._relist()
                version = self._watch(version)
                failures = 0
            except Gone:
                log.info("%s watch: resourceVersion expired, listing again", self.kind)
                version = None
            except Exception as err:  # noqa: BLE001 - the informer must outlive any API error
                if isinstance(err, ApiException) and err.status == 410:
                    version = None
                    continue
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning("%s watch failed (%s), retrying in %.0fs", self.kind, _short(err), delay)
                time.sleep(delay)

    def _relist(self) -> str:
        data = json.loads(self.lister(_preload_content=False).data)
        with self._lock:
            self._objects = {object_key(obj): self.keep(obj) for obj in data.get("items") or []}
        self.synced.set()
        self.changed.set()
        return str(data["metadata"]["resourceVersion"])

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        return watch_events(self.lister, version, WATCH_SECONDS)

    def _watch(self, version: str) -> str:
        for event in self._events(version):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone
                raise RuntimeError(f"watch error: {obj.get('message')}")
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            with self._lock:
                if kind == "DELETED":
                    self._objects.pop(object_key(obj), None)
                else:
                    self._objects[object_key(obj)] = self.keep(obj)
            self.changed.set()
        return version


def tls_data_only(secret: dict[str, Any]) -> dict[str, Any]:
    """Keep only what the controller uses of a Secret (not every Secret's data in memory)."""
    data = secret.get("data") or {}
    return {
        "metadata": secret.get("metadata") or {},
        "data": {key: data[key] for key in ("tls.crt", "tls.key") if key in data},
    }


def published(ingress: Mapping[str, Any]) -> bool:
    ingresses = (((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    return ingresses == [{"ip": ADDRESS}]


class Cluster:
    """The API calls of the controller (plain dicts, like the pod runner's client)."""

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(api)
        self.networking = client.NetworkingV1Api(api)

    def ensure_ingress_class(self) -> None:
        """Create IngressClass ``nginx`` if missing, as the ingress-nginx chart does on install."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.networking.read_ingress_class(CLASS_NAME, _preload_content=False)
            return
        except ApiException as err:
            if err.status != 404:
                raise
        body = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": CLASS_NAME, "labels": {"app.kubernetes.io/managed-by": "mlstack-local"}},
            "spec": {"controller": CONTROLLER},
        }
        self.networking.create_ingress_class(body, _preload_content=False)
        log.info("created IngressClass %s", CLASS_NAME)

    def publish_status(self, ingress: Mapping[str, Any]) -> None:
        meta = ingress.get("metadata") or {}
        body = {"status": {"loadBalancer": {"ingress": [{"ip": ADDRESS}]}}}
        self.networking.patch_namespaced_ingress_status(meta["name"], meta["namespace"], body, _preload_content=False)


# ---- the daemon -------------------------------------------------------------------------------------
class Controller:
    """Renders on every change (watch events, or the services file's mtime) and loads what changed."""

    def __init__(self, cluster: Cluster, state: Path, services: Path, listen: Listen) -> None:
        self.cluster = cluster
        self.state = state
        self.services = services
        self.listen = listen
        self.nginx = Nginx(state)
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.ingresses = Informer("ingresses", cluster.networking.list_ingress_for_all_namespaces, self.changed)
        self.secrets = Informer("secrets", cluster.core.list_secret_for_all_namespaces, self.changed, tls_data_only)
        self._loaded: str | None = None
        self._rejected: str | None = None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        try:
            self.cluster.ensure_ingress_class()
        except Exception as err:  # noqa: BLE001 - Ingresses naming the class are served either way
            log.warning("could not ensure IngressClass %s: %s", CLASS_NAME, _short(err))
        self.ingresses.start()
        self.secrets.start()
        log.info("watching Ingresses of class %s; services from %s", CLASS_NAME, self.services)
        # The first render always loads (self._loaded is None): certificates may have changed while
        # the controller was down, and nginx starts from the component's empty config anyway.
        mtime: float | None = None
        first = True
        while not self.stopping.is_set():
            woken = self.changed.wait(POLL_SECONDS)
            self.changed.clear()
            if not (self.ingresses.synced.is_set() and self.secrets.synced.is_set()):
                continue
            current = self._mtime()  # read before rendering: a change during the render is seen next turn
            if woken or first or current != mtime:
                mtime = current
                self.reconcile()
            if first:
                (self.state / SYNCED_NAME).write_text(f"{datetime.datetime.now(datetime.UTC).isoformat()}\n")
                first = False
        log.info("stopping")
        return 0

    def _mtime(self) -> float | None:
        try:
            return self.services.stat().st_mtime
        except OSError:
            return None

    def _services(self) -> dict[str, Any]:
        try:
            return json.loads(self.services.read_text())
        except (OSError, ValueError):
            return {}

    def reconcile(self) -> None:
        ingresses = [i for i in self.ingresses.snapshot().values() if watched(i)]
        tls_files, certs_changed = sync_certificates(ingresses, self.secrets.snapshot(), self.state / "certs")
        text = render_config(ingresses, self._services(), tls_files, state=self.state, listen=self.listen)
        if text != self._loaded or certs_changed:
            if text == self._rejected and not certs_changed:
                return  # already reported; wait for the objects to change
            if not self.nginx.apply(text):
                self._rejected = text
                return
            self._loaded, self._rejected = text, None
            log.info("config applied: %d Ingress(es)", len(ingresses))
        self._publish(ingresses)

    def _publish(self, ingresses: Iterable[Mapping[str, Any]]) -> None:
        for ingress in ingresses:
            if published(ingress):
                continue
            try:
                self.cluster.publish_status(ingress)
                log.info("%s: status address %s", object_key(ingress), ADDRESS)
            except Exception as err:  # noqa: BLE001 - retried on the next turn
                log.warning("%s: could not write the status: %s", object_key(ingress), _short(err))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlstack_local.ingressctl", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state", required=True, type=Path, help="the ingress state directory (nginx prefix)")
    parser.add_argument("--services", required=True, type=Path, help="the pod runner's services.json")
    parser.add_argument("--address", default=ADDRESS)
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--https-port", type=int, default=443)
    args = parser.parse_args(argv)
    setup_daemon_logging()
    state: Path = args.state.resolve()
    ensure_default_certificate(state)
    listen = Listen(args.address, args.http_port, args.https_port)
    return Controller(Cluster(args.kubeconfig), state, args.services, listen).run()


if __name__ == "__main__":
    sys.exit(main())
