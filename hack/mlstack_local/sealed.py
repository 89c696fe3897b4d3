"""The Sealed Secrets controller and ``kubeseal``, built with ``go install`` from the Go module proxy.

The controller only knows in-cluster configuration (no ``--kubeconfig``): it reads
``KUBERNETES_SERVICE_HOST``/``_PORT`` and the files under ``/var/run/secrets/kubernetes.io/serviceaccount``.
So it runs in a private mount namespace (``unshare --mount``; the stack runs as root) with a tmpfs over
the real directory behind ``/var/run`` holding a service-account token, the cluster CA and the namespace.
Nothing is written outside the state directory, and the host's ``/run`` is untouched.

Its HTTP API (``/healthz``, ``/v1/cert.pem``, ``/v1/verify``) listens on 127.0.0.1 only; ``kubeseal``
gets the certificate as a file (``--cert``): the controller is a host process, not a pod behind a
Service, so kubeseal's default fetch through the API server's service proxy finds nothing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .base import Context
from .config import BIND, PORTS, VERSIONS, Paths
from .gobuild import go_install, module_dir
from .proc import StackError, http_status, recorded_pid, say, start_daemon, stop, tcp_open, wait_until
from .secrets import read_env_file

NAME = "sealed"
NAMESPACE = "kube-system"
CONTROLLER_NAME = "sealed-secrets-controller"  # kubeseal's default --controller-name
KEY_PREFIX = "sealed-secrets-key"
# Names from upstream's controller.jsonnet (the manifest published as controller.yaml).
CLUSTER_ROLE = "secrets-unsealer"
KEY_ADMIN_ROLE = "sealed-secrets-key-admin"
MODULE = "github.com/bitnami-labs/sealed-secrets"
PACKAGES = [f"{MODULE}/cmd/controller", f"{MODULE}/cmd/kubeseal"]
BINARIES = ["controller", "kubeseal"]
CRD_NAME = "sealedsecrets.bitnami.com"
CRD_IN_MODULE = Path("helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml")
# Where client-go's in-cluster config looks; the mount goes over the real directory behind /var/run.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# No kubelet rotates this token, so it must outlive any session of the stack; a restart makes a new one.
TOKEN_DURATION = "8760h"  # noqa: S105 - a duration, not a secret
# Not in config.PORTS yet; the controller's default (:8081, all interfaces) must not be used.
METRICS_PORT = PORTS.get("sealed_secrets_metrics", 38291)
READY_TIMEOUT = 120.0  # first start generates a 4096-bit RSA key

# Run inside the new mount namespace: $1 = directory to cover (what /var/run points to), $2 = staged
# files; the rest is the controller's argv. The token is copied from a file, never passed in argv.
LAUNCH_SCRIPT = """set -eu
root=$1; stage=$2; shift 2
mount -t tmpfs -o mode=0755,size=1m mlstack-sealed "$root"
sa="$root/secrets/kubernetes.io/serviceaccount"
mkdir -p "$sa"
umask 077
cp "$stage/token" "$stage/ca.crt" "$stage/namespace" "$sa/"
exec "$@"
"""


# --- paths, manifests and command lines (pure, unit-tested) ----------------------------------------


def bin_dir(paths: Paths, version: str = VERSIONS["sealed_secrets"]) -> Path:
    return paths.bin / f"sealed-secrets-{version}"


def state_dir(paths: Paths) -> Path:
    return paths.component_dir(NAME)


def stage_dir(paths: Paths) -> Path:
    """Files copied into the controller's service-account mount (mode 0700, files 0600)."""
    return state_dir(paths) / "serviceaccount"


def cert_path(paths: Paths) -> Path:
    return state_dir(paths) / "cert.pem"


def base_url() -> str:
    return f"http://{BIND}:{PORTS['sealed_secrets']}"


def controller_args() -> list[str]:
    """Controller flags: both listeners on loopback (the defaults bind all interfaces)."""
    return [
        "--listen-addr",
        f"{BIND}:{PORTS['sealed_secrets']}",
        "--listen-metrics-addr",
        f"{BIND}:{METRICS_PORT}",
        "--key-prefix",
        KEY_PREFIX,
    ]


def mount_root(service_account_dir: str = SERVICE_ACCOUNT_DIR) -> str:
    """The existing directory to cover with the tmpfs: what ``/var/run`` resolves to (``/run`` here).

    Mounting over a directory that exists leaves no trace on the host; creating
    ``/run/secrets/...`` first would.
    """
    var_run = Path(service_account_dir).parents[2]  # /var/run
    return os.path.realpath(var_run)


def controller_env(host: str, port: int) -> dict[str, str]:
    """The controller's whole environment; ``env -i`` drops the rest.

    The controller maps any ``SEALED_SECRETS_<FLAG>`` variable onto its flags, and the stack
    exports ``SEALED_SECRETS_*`` for kubeseal, so inheriting the caller's environment is unsafe.
    """
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "POD_NAMESPACE": NAMESPACE,
    }


def launch_argv(controller: Path, stage: Path, host: str, port: int, root: str, tools: dict[str, str]) -> list[str]:
    """``env -i … unshare --mount … sh -c LAUNCH_SCRIPT``; unshare and sh exec, so the PID stays the controller's."""
    env_pairs = [f"{key}={value}" for key, value in controller_env(host, port).items()]
    return [
        tools["env"],
        "-i",
        *env_pairs,
        tools["unshare"],
        "--mount",
        "--propagation",
        "private",
        "--",
        tools["sh"],
        "-c",
        LAUNCH_SCRIPT,
        "mlstack-sealed",  # $0 of the script
        root,
        str(stage),
        str(controller),
        *controller_args(),
    ]


def apiserver_endpoint(server: str) -> tuple[str, int]:
    """Host and port of a kubeconfig ``server`` URL (``https://127.0.0.1:36443``)."""
    parts = urllib.parse.urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        raise StackError(f"the kubeconfig's server {server!r} is not an https URL")
    return parts.hostname, parts.port or 443


def cluster_from_view(view: dict[str, Any]) -> tuple[str, int, bytes]:
    """(host, port, CA PEM) of the current cluster in ``kubectl config view --raw --minify --flatten -o json``."""
    clusters = view.get("clusters") or []
    if len(clusters) != 1:
        raise StackError(f"expected one cluster in the minified kubeconfig, found {len(clusters)}")
    cluster = clusters[0]["cluster"]
    ca_data = cluster.get("certificate-authority-data")
    if not ca_data:
        raise StackError("the kubeconfig has no certificate-authority-data; the controller must verify the API server")
    host, port = apiserver_endpoint(cluster["server"])
    return host, port, base64.b64decode(ca_data)


def rbac_manifests() -> list[dict[str, Any]]:
    """ServiceAccount and RBAC of upstream's controller.yaml (the Helm chart grants the same rules)."""
    subject = {"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": NAMESPACE}
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": CONTROLLER_NAME, "namespace": NAMESPACE}},
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": CLUSTER_ROLE},
            "rules": [
                {"apiGroups": ["bitnami.com"], "resources": ["sealedsecrets"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["bitnami.com"], "resources": ["sealedsecrets/status"], "verbs": ["update"]},
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["get", "list", "create", "update", "delete", "watch"],
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": CONTROLLER_NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
            "subjects": [subject],
        },
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": {"name": KEY_ADMIN_ROLE, "namespace": NAMESPACE},
            # Sealing keys are created on the fly, so create cannot be limited by name.
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "list"]}],
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": CONTROLLER_NAME, "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": KEY_ADMIN_ROLE},
            "subjects": [subject],
        },
    ]


def as_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` with mode 0600 from the first byte (no window where it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def kube_env(ctx: Context) -> dict[str, str]:
    """KUBECONFIG and KUBECTL: from the kube component in this run, else from ``.local/stack.env``."""
    if "KUBECONFIG" in ctx.env and "KUBECTL" in ctx.env:
        return {"KUBECONFIG": ctx.env["KUBECONFIG"], "KUBECTL": ctx.env["KUBECTL"]}
    if ctx.paths.stack_env.exists():
        stored = read_env_file(ctx.paths.stack_env)
        if "KUBECONFIG" in stored and "KUBECTL" in stored:
            return {"KUBECONFIG": stored["KUBECONFIG"], "KUBECTL": stored["KUBECTL"]}
    raise StackError(
        "Sealed Secrets needs the Kubernetes component: start it first "
        "(`PYTHONPATH=hack .venv/bin/python -m mlstack_local up kube sealed`)"
    )


def is_certificate(body: bytes) -> bool:
    return body.lstrip().startswith(b"-----BEGIN CERTIFICATE-----")


# --- talking to the cluster and the controller ------------------------------------------------------


def kubectl(kenv: dict[str, str], *args: str, stdin: str | None = None) -> str:
    argv = [kenv["KUBECTL"], "--kubeconfig", kenv["KUBECONFIG"], *args]
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise StackError(f"kubectl {' '.join(args[:3])} failed (exit {result.returncode}):\n{result.stderr.strip()}")
    return result.stdout


def fetch_certificate(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"{url}/v1/cert.pem", timeout=5) as response:  # noqa: S310 - loopback
            body = response.read()
    except (OSError, urllib.error.URLError):
        return None
    return body if is_certificate(body) else None


def _tools() -> dict[str, str]:
    tools = {}
    for tool in ("env", "unshare", "sh"):
        found = shutil.which(tool)
        if not found:
            raise StackError(f"`{tool}` is not installed; the Sealed Secrets controller needs it")
        tools[tool] = found
    return tools


class SealedSecrets:
    name = NAME
    title = "Sealed Secrets controller"
    wanted_secrets: dict[str, str] = {}

    def __init__(self) -> None:
        self._crd: Path | None = None

    def prepare(self, ctx: Context) -> None:
        go_install(
            ctx,
            label="sealed-secrets",
            version=VERSIONS["sealed_secrets"],
            packages=PACKAGES,
            names=BINARIES,
        )
        self._crd = self._find_crd(ctx)

    def _find_crd(self, ctx: Context) -> Path:
        ctx.paths.cache.mkdir(parents=True, exist_ok=True)
        crd = module_dir(MODULE, VERSIONS["sealed_secrets"], ctx.paths.cache) / CRD_IN_MODULE
        if not crd.is_file():
            raise StackError(f"the SealedSecret CRD is not at {crd}")
        return crd

    def is_up(self, ctx: Context) -> bool:
        return recorded_pid(ctx.paths, NAME) is not None and http_status(f"{base_url()}/healthz") == 200

    def start(self, ctx: Context) -> None:
        if tcp_open(BIND, PORTS["sealed_secrets"]) and recorded_pid(ctx.paths, NAME) is None:
            raise StackError(f"port {PORTS['sealed_secrets']} is taken by a process the stack did not start")
        stop(ctx.paths, NAME)  # a recorded controller that does not answer: replace it
        kenv = kube_env(ctx)
        self._install_api(ctx, kenv)
        host, port = self._stage_credentials(ctx, kenv)
        try:
            argv = launch_argv(
                bin_dir(ctx.paths) / "controller", stage_dir(ctx.paths), host, port, mount_root(), _tools()
            )
            start_daemon(ctx.paths, NAME, argv, cwd=state_dir(ctx.paths))
            took = wait_until(
                "Sealed Secrets /healthz", self._healthy, timeout=READY_TIMEOUT, paths=ctx.paths, name=NAME
            )
            certificate: list[bytes] = []
            wait_until(
                "Sealed Secrets /v1/cert.pem",
                lambda: self._got_cert(certificate),
                timeout=60,
                paths=ctx.paths,
                name=NAME,
            )
        finally:
            # The controller has its own copy in its tmpfs; a restart asks for a new token.
            (stage_dir(ctx.paths) / "token").unlink(missing_ok=True)
        cert_path(ctx.paths).write_bytes(certificate[0])
        say(f"    controller healthy after {took:.1f}s; certificate in {cert_path(ctx.paths)}")

    def _healthy(self) -> bool:
        return http_status(f"{base_url()}/healthz") == 200

    def _got_cert(self, sink: list[bytes]) -> bool:
        body = fetch_certificate(base_url())
        if body:
            sink.append(body)
        return body is not None

    def _install_api(self, ctx: Context, kenv: dict[str, str]) -> None:
        """The CRD (server-side apply: idempotent, no last-applied annotation) and the controller's RBAC."""
        crd = self._crd or self._find_crd(ctx)
        kubectl(kenv, "apply", "--server-side", "--force-conflicts", "--field-manager=mlstack", "-f", str(crd))
        kubectl(kenv, "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
        kubectl(
            kenv,
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=mlstack",
            "-f",
            "-",
            stdin=as_list(rbac_manifests()),
        )

    def _stage_credentials(self, ctx: Context, kenv: dict[str, str]) -> tuple[str, int]:
        """Token, CA and namespace for the controller's mount; returns the API server's host and port."""
        view = json.loads(kubectl(kenv, "config", "view", "--raw", "--minify", "--flatten", "-o", "json"))
        host, port, ca_pem = cluster_from_view(view)
        token = kubectl(kenv, "-n", NAMESPACE, "create", "token", CONTROLLER_NAME, f"--duration={TOKEN_DURATION}")
        stage = stage_dir(ctx.paths)
        stage.mkdir(parents=True, exist_ok=True)
        os.chmod(stage, 0o700)
        write_private(stage / "token", token.strip().encode())
        write_private(stage / "ca.crt", ca_pem)
        write_private(stage / "namespace", NAMESPACE.encode())
        return host, port

    def stop(self, ctx: Context) -> None:
        stop(ctx.paths, NAME)

    def env(self, ctx: Context) -> dict[str, str]:
        # kubeseal reads SEALED_SECRETS_CERT / _CONTROLLER_NAMESPACE / _CONTROLLER_NAME as its flags.
        return {
            "SEALED_SECRETS_CERT": str(cert_path(ctx.paths)),
            "SEALED_SECRETS_URL": base_url(),
            "KUBESEAL": str(bin_dir(ctx.paths) / "kubeseal"),
            "SEALED_SECRETS_CONTROLLER_NAMESPACE": NAMESPACE,
            "SEALED_SECRETS_CONTROLLER_NAME": CONTROLLER_NAME,
        }
