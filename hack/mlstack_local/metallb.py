"""MetalLB: LoadBalancer Services get an address from a pool inside the node's bridge subnet.

Only MetalLB's controller runs. It allocates: it watches LoadBalancer Services and writes an address
of the ``IPAddressPool`` (10.89.0.200-10.89.0.250, free in the bridge's /24) into
``status.loadBalancer.ingress``. kube-proxy (iptables) then matches that address in nat PREROUTING
and OUTPUT and DNATs it to the Service's endpoints, so the host and the pods reach it. The speaker
is not run: it announces addresses to *other* machines on the L2 segment (ARP/NDP replies) or to BGP
peers, and the bridge holds only the host and pods, which never ask by ARP for an address kube-proxy
already rewrote. Running it would need host networking, NET_RAW and a memberlist secret for nothing.

Version: v0.15.2. v0.16.2 requires ``github.com/metallb/frr-k8s`` v0.0.27, which the Go module proxy
refuses (403 "not available"), and no served frr-k8s has the API it compiles against; v0.15.2
requires frr-k8s v0.0.20, which is served. Its go.mod has no replace directives, so ``go install``
builds it (cached under ~/.cache/mlstack/bin/metallb-<version>/).

Runs as a host process, like Traefik: a ServiceAccount ``metallb-system/controller`` bound to the
rules the controller uses with its webhook off (MetalLB's own manifests less the webhook, CRD,
memberlist and PodSecurityPolicy rules), a TokenRequest token in a 0600 kubeconfig named by
``--kubeconfig``, under ``env -i`` (no admin KUBECONFIG). ``--webhook-mode=disabled``: the validating
webhook would need the API server to call back into this host process with a rotated certificate;
a bad pool shows in the controller's log instead. MetalLB 0.15 serves ``/metrics`` on every
interface (no flag for the address) at ``PORTS["metallb_metrics"]``; it carries no secret.

Ready when the pool's status reports its available addresses: the controller has read the pool and
writes to the API server.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from .base import Context
from .config import PORTS, VERSIONS, Paths
from .gobuild import go_install, module_dir
from .proc import StackError, recorded_pid, start_daemon, stop, wait_until
from .sealed import write_private
from .traefik import account_rbac, apiserver_from_view, crd_names, kubectl, server_side_apply

NAME = "metallb"
VERSION = VERSIONS["metallb"]
MODULE = "go.universe.tf/metallb"
COMMAND = f"{MODULE}/controller"

NAMESPACE = "metallb-system"
SERVICE_ACCOUNT = "controller"
# No kubelet rotates this token, so it must outlive any session of the stack; a restart makes a new one.
TOKEN_DURATION = "8760h"  # noqa: S105 - a duration, not a secret
POOL_NAME = "mlstack"
POOL_RANGE = "10.89.0.200-10.89.0.250"
METRICS_PORT = PORTS["metallb_metrics"]
READY_TIMEOUT = 60.0


def bin_dir(paths: Paths, version: str = VERSION) -> Path:
    return paths.bin / f"metallb-{version}"


def state_dir(paths: Paths) -> Path:
    return paths.component_dir(NAME)


def kubeconfig_path(paths: Paths) -> Path:
    return state_dir(paths) / "kubeconfig"


# --- manifests and configuration (pure, unit-tested) -------------------------------------------------


def cluster_role_rules() -> list[dict[str, Any]]:
    """What the controller reads and writes across namespaces: Services and their status, namespaces
    (pools may select them), events."""
    return [
        {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["services/status"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ]


def role_rules() -> list[dict[str, Any]]:
    """What it reads in its own namespace: the pools (and their status), and the BGP communities pools
    may name."""
    return [
        {
            "apiGroups": ["metallb.io"],
            "resources": ["ipaddresspools", "communities"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": ["metallb.io"], "resources": ["ipaddresspools/status"], "verbs": ["update"]},
    ]


# Pod Security of the namespace: nothing runs as a pod in it.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def rbac_manifests(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    rbac = "rbac.authorization.k8s.io/v1"
    cluster_role = f"mlstack-{namespace}"
    subjects = [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]
    return [
        # Nothing runs as a pod here; the strictest level keeps it that way.
        *account_rbac(namespace, SERVICE_ACCOUNT, cluster_role, cluster_role_rules(), RESTRICTED),
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
            "rules": role_rules(),
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SERVICE_ACCOUNT},
            "subjects": subjects,
        },
    ]


def pool_manifest(namespace: str = NAMESPACE, addresses: str = POOL_RANGE) -> dict[str, Any]:
    return {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": POOL_NAME, "namespace": namespace},
        "spec": {"addresses": [addresses]},
    }


def controller_kubeconfig(
    server: str, ca_pem: bytes, token: str, namespace: str = NAMESPACE, service_account: str = SERVICE_ACCOUNT
) -> str:
    """A kubeconfig for the ServiceAccount: the API server verified by its CA, the token inline (0600 file)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mlstack",
                "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()},
            }
        ],
        "users": [{"name": f"{namespace}-{service_account}", "user": {"token": token}}],
        "contexts": [
            {
                "name": "mlstack",
                "context": {"cluster": "mlstack", "user": f"{namespace}-{service_account}", "namespace": namespace},
            }
        ],
        "current-context": "mlstack",
    }
    return yaml.safe_dump(config, sort_keys=False)


def daemon_argv(binary: Path, kubeconfig: Path, namespace: str = NAMESPACE, port: int = METRICS_PORT) -> list[str]:
    """``env -i``: the controller sees no admin KUBECONFIG; its own is a flag (a path, not the token)."""
    env_binary = shutil.which("env") or "/usr/bin/env"
    return [
        env_binary,
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--namespace={namespace}",
        "--webhook-mode=disabled",
        f"--port={port}",
        "--log-level=info",
    ]


def pool_ready(pool: dict[str, Any]) -> bool:
    """The controller has taken the pool in: its status counts the addresses."""
    status = pool.get("status") or {}
    return int(status.get("availableIPv4", 0)) + int(status.get("assignedIPv4", 0)) > 0


# --- the component -----------------------------------------------------------------------------------


class MetalLB:
    name = NAME
    title = f"MetalLB {VERSION} controller (LoadBalancer addresses)"
    wanted_secrets: dict[str, str] = {}

    def __init__(self, *, namespace: str = NAMESPACE, port: int = METRICS_PORT) -> None:
        self.namespace = namespace
        self.port = port
        self._crd_files: list[Path] | None = None

    def _kube_env(self, ctx: Context) -> dict[str, str]:
        from .sealed import kube_env

        return kube_env(ctx)

    def prepare(self, ctx: Context) -> None:
        go_install(ctx, label="metallb", version=VERSION, packages=[COMMAND], names=["controller"])
        self._crds(ctx)

    def _crds(self, ctx: Context) -> list[Path]:
        """MetalLB's CRDs, from the module source in the Go module cache."""
        if self._crd_files:
            return self._crd_files
        crd_dir = module_dir(MODULE, VERSION, ctx.paths.cache) / "config" / "crd" / "bases"
        files = sorted(crd_dir.glob("*.yaml"))
        if not files:
            raise StackError(f"no MetalLB CRDs in {crd_dir}")
        self._crd_files = files
        return files

    def _pool(self, kenv: dict[str, str]) -> dict[str, Any]:
        return json.loads(kubectl(kenv, "-n", self.namespace, "get", "ipaddresspool", POOL_NAME, "-o", "json"))

    def is_up(self, ctx: Context) -> bool:
        if recorded_pid(ctx.paths, NAME) is None:
            return False
        try:
            return pool_ready(self._pool(self._kube_env(ctx)))
        except StackError:
            return False

    def start(self, ctx: Context) -> None:
        if self.is_up(ctx):
            return
        stop(ctx.paths, NAME)  # recorded but not working: replace it
        kenv = self._kube_env(ctx)
        files = self._crds(ctx)
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=mlstack"]
        for crd in files:
            args += ["-f", str(crd)]
        kubectl(kenv, *args)
        kubectl(kenv, "wait", "--for=condition=Established", *[f"crd/{n}" for n in crd_names(files)], "--timeout=60s")
        server_side_apply(kenv, [*rbac_manifests(self.namespace), pool_manifest(self.namespace)])
        kubeconfig = self._write_kubeconfig(ctx, kenv)
        argv = daemon_argv(bin_dir(ctx.paths) / "controller", kubeconfig, self.namespace, self.port)
        start_daemon(ctx.paths, NAME, argv)
        wait_until(
            f"the MetalLB pool {POOL_NAME} ({POOL_RANGE}) to be taken in",
            lambda: pool_ready(self._pool(kenv)),
            timeout=READY_TIMEOUT,
            paths=ctx.paths,
            name=NAME,
        )

    def _write_kubeconfig(self, ctx: Context, kenv: dict[str, str]) -> Path:
        view = json.loads(kubectl(kenv, "config", "view", "--raw", "--minify", "--flatten", "-o", "json"))
        server, ca_pem = apiserver_from_view(view)
        token = kubectl(
            kenv, "-n", self.namespace, "create", "token", SERVICE_ACCOUNT, f"--duration={TOKEN_DURATION}"
        ).strip()
        directory = state_dir(ctx.paths)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        write_private(kubeconfig_path(ctx.paths), controller_kubeconfig(server, ca_pem, token, self.namespace).encode())
        return kubeconfig_path(ctx.paths)

    def stop(self, ctx: Context) -> None:
        stop(ctx.paths, NAME)
        kubeconfig_path(ctx.paths).unlink(missing_ok=True)

    def env(self, ctx: Context) -> dict[str, str]:
        return {"LOADBALANCER_POOL": POOL_RANGE, "LOADBALANCER_NAMESPACE": self.namespace}
