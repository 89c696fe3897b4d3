"""A real Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

All four are built from the Go module proxy (:mod:`mlstack_local.gobuild`) and run as our own
daemons, each with a client certificate from the cluster CA (:mod:`mlstack_local.pki`). The API server
listens on, and advertises, the node IP: the ``kubernetes`` Service's endpoint is then an address pods
can reach, and nothing points outside the machine. etcd and the controllers' own ports stay on
loopback. Authorization is Node + RBAC, admission includes NodeRestriction and Pod Security.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from .base import Context
from .config import BIND, CLUSTER_DOMAIN, NODE_IP, NODE_NAME, PORTS, SERVICE_CIDR, VERSIONS
from .gobuild import build_etcd, build_kubernetes
from .pki import CertSpec, Pki, write_private
from .proc import recorded_pid, start_daemon, stop, tcp_open, wait_until

ETCD_CLIENT_PORT = PORTS["etcd_client"]
ETCD_PEER_PORT = PORTS["etcd_peer"]
CONTROLLER_MANAGER_PORT = PORTS["kube_controller_manager"]
SCHEDULER_PORT = PORTS["kube_scheduler"]
DAEMONS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def first_service_ip(cidr: str = SERVICE_CIDR) -> str:
    """The ClusterIP of the ``kubernetes`` Service: the first address of the Service range."""
    return str(next(ipaddress.ip_network(cidr).hosts()))


def server_url() -> str:
    return f"https://{NODE_IP}:{PORTS['kube_apiserver']}"


CERTS = {
    "apiserver": CertSpec(
        "apiserver",
        "kube-apiserver",
        server=True,
        client=False,
        dns_names=(
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
            "localhost",
        ),
        ip_addresses=(NODE_IP, BIND, first_service_ip()),
    ),
    "admin": CertSpec("admin", "mlstack-admin", ("system:masters",)),
    "controller-manager": CertSpec("controller-manager", "system:kube-controller-manager"),
    "scheduler": CertSpec("scheduler", "system:kube-scheduler"),
    # The API server's identity towards the kubelet (logs, exec, port-forward).
    "apiserver-kubelet-client": CertSpec(
        "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
    ),
    "kubelet": CertSpec("kubelet", f"system:node:{NODE_NAME}", ("system:nodes",)),
    "kubelet-serving": CertSpec(
        "kubelet-serving",
        f"system:node:{NODE_NAME}",
        ("system:nodes",),
        server=True,
        client=False,
        dns_names=(NODE_NAME,),
        ip_addresses=(NODE_IP,),
    ),
    "kube-proxy": CertSpec("kube-proxy", "system:kube-proxy"),
    "coredns": CertSpec("coredns", "mlstack:coredns"),
    "local-path-provisioner": CertSpec("local-path-provisioner", "mlstack:local-path-provisioner"),
}


def etcd_args(data_dir: Path) -> list[str]:
    client = f"http://{BIND}:{ETCD_CLIENT_PORT}"
    peer = f"http://{BIND}:{ETCD_PEER_PORT}"
    return [
        "--name=mlstack",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=mlstack={peer}",
        "--listen-metrics-urls=",
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]


def apiserver_args(pki: Pki) -> list[str]:
    cert, key = pki.issue(CERTS["apiserver"])
    kubelet_cert, kubelet_key = pki.issue(CERTS["apiserver-kubelet-client"])
    sa_pub, sa_key = pki.service_account_keys()
    return [
        f"--bind-address={NODE_IP}",
        f"--advertise-address={NODE_IP}",
        f"--secure-port={PORTS['kube_apiserver']}",
        f"--etcd-servers=http://{BIND}:{ETCD_CLIENT_PORT}",
        f"--tls-cert-file={cert}",
        f"--tls-private-key-file={key}",
        f"--client-ca-file={pki.ca_cert_path}",
        f"--service-account-key-file={sa_pub}",
        f"--service-account-signing-key-file={sa_key}",
        f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--anonymous-auth=false",
        # As on kubeadm clusters: Pod Security admission, not this flag, decides who may run privileged.
        "--allow-privileged=true",
        f"--kubelet-client-certificate={kubelet_cert}",
        f"--kubelet-client-key={kubelet_key}",
        f"--kubelet-certificate-authority={pki.ca_cert_path}",
        # Otherwise logs/exec look the node's name up in the machine's DNS.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--service-node-port-range=30000-32767",
        "--profiling=false",
        "--endpoint-reconciler-type=lease",
    ]


class Kube:
    name = "kube"
    title = f"Kubernetes {VERSIONS['kubernetes']} control plane"
    wanted_secrets: dict[str, str] = {}

    def __init__(self) -> None:
        self._bins: dict[str, Path] = {}

    def _dir(self, ctx: Context) -> Path:
        return ctx.paths.component_dir(self.name)

    def pki(self, ctx: Context) -> Pki:
        return Pki(self._dir(ctx) / "pki")

    def kubeconfig(self, ctx: Context) -> Path:
        return self._dir(ctx) / "admin.kubeconfig"

    def component_kubeconfig(self, ctx: Context, name: str) -> Path:
        """The kubeconfig of one identity in CERTS (written on first use)."""
        path = self._dir(ctx) / f"{name}.kubeconfig"
        if not path.exists():
            write_private(path, self.pki(ctx).kubeconfig(CERTS[name], server_url()))
        return path

    def bin_dir(self, ctx: Context) -> Path:
        return ctx.paths.bin / f"k8s-{VERSIONS['kubernetes']}"

    def kubectl(self, ctx: Context) -> Path:
        return self.bin_dir(ctx) / "kubectl"

    def prepare(self, ctx: Context) -> None:
        self._bins = {
            "kubernetes": build_kubernetes(ctx, VERSIONS["kubernetes"]),
            "etcd": build_etcd(ctx, VERSIONS["etcd"]),
        }
        pki = self.pki(ctx)
        for spec in CERTS.values():
            pki.issue(spec)
        pki.service_account_keys()
        for name in ("admin", "controller-manager", "scheduler"):
            self.component_kubeconfig(ctx, name)

    def _readyz(self, ctx: Context) -> bool:
        if not self.kubeconfig(ctx).exists():
            return False
        result = subprocess.run(  # noqa: S603
            [str(self.kubectl(ctx)), "--kubeconfig", str(self.kubeconfig(ctx)), "get", "--raw", "/readyz"]
            + ["--request-timeout=3s"],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode == 0 and result.stdout.strip() == "ok"

    def is_up(self, ctx: Context) -> bool:
        return all(recorded_pid(ctx.paths, name) is not None for name in DAEMONS) and self._readyz(ctx)

    def start(self, ctx: Context) -> None:
        directory = self._dir(ctx)
        k8s = self.bin_dir(ctx)
        etcd_bin = ctx.paths.bin / f"etcd-{VERSIONS['etcd']}" / "etcd"
        pki = self.pki(ctx)
        if recorded_pid(ctx.paths, "etcd") is None:
            data = directory / "etcd"
            data.mkdir(parents=True, exist_ok=True)
            data.chmod(0o700)
            start_daemon(ctx.paths, "etcd", [str(etcd_bin), *etcd_args(data)])
            wait_until("etcd", lambda: tcp_open(BIND, ETCD_CLIENT_PORT), timeout=60, paths=ctx.paths, name="etcd")
        if recorded_pid(ctx.paths, "kube-apiserver") is None:
            start_daemon(ctx.paths, "kube-apiserver", [str(k8s / "kube-apiserver"), *apiserver_args(pki)])
        wait_until(
            "kube-apiserver /readyz", lambda: self._readyz(ctx), timeout=180, paths=ctx.paths, name="kube-apiserver"
        )
        cm_config = self.component_kubeconfig(ctx, "controller-manager")
        _, sa_key = pki.service_account_keys()
        if recorded_pid(ctx.paths, "kube-controller-manager") is None:
            start_daemon(
                ctx.paths,
                "kube-controller-manager",
                [
                    str(k8s / "kube-controller-manager"),
                    f"--kubeconfig={cm_config}",
                    f"--authentication-kubeconfig={cm_config}",
                    f"--authorization-kubeconfig={cm_config}",
                    f"--bind-address={BIND}",
                    f"--secure-port={CONTROLLER_MANAGER_PORT}",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={pki.ca_cert_path}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--use-service-account-credentials=true",
                    "--leader-elect=false",
                    "--profiling=false",
                ],
            )
        sched_config = self.component_kubeconfig(ctx, "scheduler")
        if recorded_pid(ctx.paths, "kube-scheduler") is None:
            start_daemon(
                ctx.paths,
                "kube-scheduler",
                [
                    str(k8s / "kube-scheduler"),
                    f"--kubeconfig={sched_config}",
                    f"--authentication-kubeconfig={sched_config}",
                    f"--authorization-kubeconfig={sched_config}",
                    f"--bind-address={BIND}",
                    f"--secure-port={SCHEDULER_PORT}",
                    "--leader-elect=false",
                    "--profiling=false",
                ],
            )
        for name, port in (("kube-controller-manager", CONTROLLER_MANAGER_PORT), ("kube-scheduler", SCHEDULER_PORT)):
            wait_until(name, lambda p=port: tcp_open(BIND, p), timeout=60, paths=ctx.paths, name=name)

    def stop(self, ctx: Context) -> None:
        for name in reversed(DAEMONS):
            stop(ctx.paths, name)

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig(ctx)),
            "KUBECTL": str(self.kubectl(ctx)),
            "K8S_BIN_DIR": str(self.bin_dir(ctx)),
            "KUBE_CA_CERT": str(self.pki(ctx).ca_cert_path),
        }
