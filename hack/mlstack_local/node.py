"""The real node: containerd + runc + a CNI bridge, the kubelet, kube-proxy, CoreDNS, a volume provisioner.

containerd, runc and the CNI plugins are Debian's; the kubelet and kube-proxy are built from
k8s.io/kubernetes like the control plane; CoreDNS, crictl and rancher's local-path-provisioner from
the Go module proxy. Pods are real containers: the restricted security context, memory limits,
probes, restarts and image pulls are the kubelet's and runc's. Notes that shaped this (see
../shared/reference/real-node/README.md):

- containerd needs ``restrict_oom_score_adj`` (root here lacks CAP_SYS_RESOURCE); its own root, state
  and socket; network namespaces under its state dir; images from the stack's registry over plain
  HTTP through a ``hosts.toml``. The pause and tools images are imported, not pulled.
- The kubelet runs with cgroup v1 and the cgroupfs driver under its own cgroup root, authenticates
  callers with client certificates from the cluster CA and authorizes them by webhook; it serves
  with a certificate the API server verifies.
- CoreDNS answers ``cluster.local`` on the node IP (the kubelet's clusterDNS) and nothing else: no
  forwarder, so no pod query leaves the machine. kube-proxy serves NodePorts on the node IP only.
- ``stop`` removes every pod sandbox through the CRI (so CNI releases veths and addresses), stops the
  daemons, removes kube-proxy's rules, unmounts what is left under our directories, removes our
  cgroups, and deletes the system directories the components created that were not there before.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .base import Context
from .config import (
    BIND,
    BRIDGE,
    CLUSTER_DNS,
    CLUSTER_DOMAIN,
    NODE_IP,
    NODE_NAME,
    POD_SUBNET,
    PORTS,
    VERSIONS,
)
from .gobuild import build_module, go_install
from .kube import Kube
from .proc import StackError, http_status, recorded_pid, run_logged, say, start_daemon, stop, wait_until
from .secrets import read_env_file

CGROUP_ROOT = "mlstack"
CGROUP_BASE = Path("/sys/fs/cgroup")
# Directories the kubelet, containerd and CNI may create outside our state dir; each one that did not
# exist before the first start is removed by `stop`.
SYSTEM_PATHS = (
    "/run/containerd",
    "/var/lib/cni",
    "/var/run/netns",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/kubelet",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
    "/usr/libexec/kubernetes",
)
PAUSE_IMAGE = "localhost/mlstack/pause:3.10"
LOCAL_PATH_NAMESPACE = "local-path-storage"
STORAGE_CLASS = "local-path"
COREDNS_MAIN = """package main

import (
\t"github.com/coredns/coredns/core/dnsserver"
\t"github.com/coredns/coredns/coremain"

\t_ "github.com/coredns/coredns/plugin/bind"
\t_ "github.com/coredns/coredns/plugin/cache"
\t_ "github.com/coredns/coredns/plugin/errors"
\t_ "github.com/coredns/coredns/plugin/health"
\t_ "github.com/coredns/coredns/plugin/kubernetes"
\t_ "github.com/coredns/coredns/plugin/ready"
)

// Only what the node needs: no forward plugin, so nothing outside cluster.local is resolved.
func init() {
\tdnsserver.Directives = []string{"bind", "ready", "health", "errors", "cache", "kubernetes"}
}

func main() { coremain.Run() }
"""


# --- configuration (pure, unit-tested) ------------------------------------------------------------


def containerd_config(state: Path, socket: Path, pause_image: str = PAUSE_IMAGE) -> str:
    c = state / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[{cri}]
  sandbox_image = "{pause_image}"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "{BIND}"
  enable_unprivileged_ports = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        Root = "{c / "runc"}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{state / "cni" / "net.d"}"
  [{cri}.registry]
    config_path = "{c / "certs.d"}"
"""


def registry_hosts_toml(registry_host: str) -> str:
    """containerd's hosts.toml for the stack's plain-HTTP registry (credentials come from pull secrets)."""
    return (
        f'server = "http://{registry_host}"\n\n[host."http://{registry_host}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def cni_conflist(state: Path) -> str:
    prefix_ip = NODE_IP.rsplit(".", 1)[0]
    config = {
        "cniVersion": "1.0.0",
        "name": "mlstack",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    # .200-.254 stay free for load-balancer addresses.
                    "ranges": [
                        [
                            {
                                "subnet": POD_SUBNET,
                                "gateway": NODE_IP,
                                "rangeStart": f"{prefix_ip}.10",
                                "rangeEnd": f"{prefix_ip}.199",
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(state / "cni" / "ipam"),
                },
            }
        ],
    }
    return json.dumps(config, indent=2)


def kubelet_config(state: Path, socket: Path, pki: Path) -> dict[str, object]:
    kubelet = state / "kubelet"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": PORTS["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": BIND,
        "healthzPort": PORTS["kubelet_healthz"],
        "containerRuntimeEndpoint": f"unix://{socket}",
        "imageServiceEndpoint": f"unix://{socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(kubelet / "pod-logs"),
        "volumePluginDir": str(kubelet / "volume-plugins"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "registerNode": True,
        "serializeImagePulls": True,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
            "nodefs.inodesFree": "2%",
        },
        "maxPods": 60,
        "makeIPTablesUtilChains": False,
        "resolvConf": "/etc/resolv.conf",
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"{BIND}:{PORTS['kube_proxy_healthz']}",
        "metricsBindAddress": f"{BIND}:{PORTS['kube_proxy_metrics']}",
        "mode": "iptables",
        "clusterCIDR": POD_SUBNET,
        "detectLocalMode": "ClusterCIDR",
        # NodePorts answer on the node IP only, never on the machine's own interfaces.
        "nodePortAddresses": [POD_SUBNET],
        # Zero: kube-proxy leaves the conntrack sysctls as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "iptables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
    }


def corefile(kubeconfig: Path) -> str:
    return f""".:53 {{
    bind {NODE_IP}
    errors
    health {BIND}:{PORTS["coredns_health"]}
    ready {BIND}:{PORTS["coredns_ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} mlstack
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


def cluster_objects() -> list[dict[str, object]]:
    """RBAC for CoreDNS and the provisioner (their client certificates' users), and the storage setup."""

    def cluster_role(name: str, rules: list[dict[str, object]]) -> list[dict[str, object]]:
        return [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}],
            },
        ]

    read = ["list", "watch"]
    objects = cluster_role(
        "mlstack:coredns",
        [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        ],
    )
    # rancher/local-path-provisioner's own rules (deploy/local-path-storage.yaml), for its user.
    objects += cluster_role(
        "mlstack:local-path-provisioner",
        [
            {
                "apiGroups": [""],
                "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods/log"],
                "verbs": ["get", "list", "watch"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
            {
                "apiGroups": [""],
                "resources": ["persistentvolumes"],
                "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
        ],
    )
    objects += [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            # Its helper pods mount the volumes' parent directory (hostPath).
            "metadata": {"name": LOCAL_PATH_NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "local-path-provisioner", "namespace": LOCAL_PATH_NAMESPACE},
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "local-path-config", "namespace": LOCAL_PATH_NAMESPACE},
            "data": {
                # Pods run as non-root users: the volume directory is theirs to write.
                "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
                "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        },
    ]
    return objects


def helper_pod(tools_image: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "containers": [{"name": "helper-pod", "image": tools_image, "imagePullPolicy": "IfNotPresent"}],
        },
    }


# --- host state helpers ---------------------------------------------------------------------------


def mounts_under(prefixes: list[Path], mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Mount points at or below any of ``prefixes``, deepest first."""
    found = []
    for line in mountinfo.read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(p) or point.startswith(f"{p}/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=len, reverse=True)


def unmount_all(prefixes: list[Path]) -> None:
    for point in mounts_under(prefixes):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:  # noqa: S603, S607
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)  # noqa: S603, S607


def cgroup_dirs() -> list[Path]:
    """Our cgroup directories in every v1 hierarchy, deepest first."""
    dirs: list[Path] = []
    if not CGROUP_BASE.exists():
        return dirs
    for hierarchy in CGROUP_BASE.iterdir():
        root = hierarchy / CGROUP_ROOT
        if root.is_dir():
            dirs += [Path(p) for p, _, _ in os.walk(root)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def kill_cgroup_processes() -> int:
    killed = 0
    for directory in cgroup_dirs():
        try:
            pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def remove_cgroups() -> None:
    for _ in range(20):
        for directory in cgroup_dirs():
            try:
                directory.rmdir()
            except OSError:
                pass
        if not cgroup_dirs():
            return
        kill_cgroup_processes()
        time.sleep(0.25)
    raise StackError(f"cgroups under /{CGROUP_ROOT} could not be removed: {[str(d) for d in cgroup_dirs()][:5]}")


def create_cgroup_root() -> None:
    """The kubelet's cgroupRoot in every v1 hierarchy (cpuset needs cpus and mems filled in)."""
    for hierarchy in CGROUP_BASE.iterdir():
        if not hierarchy.is_dir() or hierarchy.name == "unified" or not (hierarchy / "cgroup.procs").exists():
            continue
        root = hierarchy / CGROUP_ROOT
        root.mkdir(exist_ok=True)
        if hierarchy.name.startswith("cpuset"):
            for key in ("cpuset.cpus", "cpuset.mems"):
                if not (root / key).read_text().strip():
                    (root / key).write_text((hierarchy / key).read_text())


IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle")


def kube_chains(saved: str) -> list[str]:
    """The ``KUBE-*`` chains declared in one table of ``iptables-save`` output."""
    return [line[1:].split()[0] for line in saved.splitlines() if line.startswith(":KUBE-")]


def kube_chains_now() -> dict[str, list[str]]:
    """{"iptables/filter": [chains], ...}: the KUBE-* chains that exist now."""
    found = {}
    for binary in IPTABLES:
        for table in TABLES:
            out = subprocess.run([f"{binary}-save", "-t", table], capture_output=True, text=True, check=False)  # noqa: S603
            found[f"{binary}/{table}"] = kube_chains(out.stdout)
    return found


def remove_kube_chains(keep: dict[str, list[str]]) -> None:
    """Delete the KUBE-* chains (and the jumps to them) that were not there before the node started.

    kube-proxy --cleanup removes its own; the kubelet leaves KUBE-FIREWALL (and its jumps) behind.
    """
    for key, chains in kube_chains_now().items():
        binary, table = key.split("/")
        ours = [chain for chain in chains if chain not in keep.get(key, [])]
        if not ours:
            continue
        rules = subprocess.run([f"{binary}-save", "-t", table], capture_output=True, text=True, check=False).stdout  # noqa: S603
        for line in rules.splitlines():
            parts = line.split()
            if line.startswith("-A ") and "-j" in parts and parts[parts.index("-j") + 1] in ours:
                subprocess.run([binary, "-w", "-t", table, "-D", *parts[1:]], capture_output=True, check=False)  # noqa: S603
        for chain in ours:
            subprocess.run([binary, "-w", "-t", table, "-F", chain], capture_output=True, check=False)  # noqa: S603
        for chain in ours:
            subprocess.run([binary, "-w", "-t", table, "-X", chain], capture_output=True, check=False)  # noqa: S603


def node_ready(node: dict, since: float = 0.0) -> bool:
    """Ready is True and its last heartbeat is not older than ``since`` (epoch seconds)."""
    for condition in node.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            beat = datetime.datetime.fromisoformat(condition["lastHeartbeatTime"].replace("Z", "+00:00"))
            return condition.get("status") == "True" and beat.timestamp() >= since
    return False


def shim_pids(socket: Path) -> list[int]:
    """containerd shims started for our containerd (they outlive it by design)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in argv:
            pids.append(int(entry.name))
    return pids


class Node:
    name = "node"
    title = f"Node {NODE_NAME} (kubelet, containerd, kube-proxy, CoreDNS)"
    wanted_secrets: dict[str, str] = {}

    def __init__(self) -> None:
        self._kube = Kube()

    # ---- locations ---------------------------------------------------------------------------
    def state(self, ctx: Context) -> Path:
        return ctx.paths.component_dir(self.name)

    def socket(self, ctx: Context) -> Path:
        # Unix socket paths are limited to 107 bytes: keep it short wherever the clone lives.
        digest = hashlib.sha256(str(self.state(ctx)).encode()).hexdigest()[:10]
        return Path("/run") / f"mlstack-{digest}" / "containerd.sock"

    def _env(self, ctx: Context) -> dict[str, str]:
        return ctx.env or read_env_file(ctx.paths.stack_env)

    def _bins(self, ctx: Context) -> dict[str, Path]:
        k8s = self._kube.bin_dir(ctx)
        return {
            "kubelet": k8s / "kubelet",
            "kube-proxy": k8s / "kube-proxy",
            "coredns": ctx.paths.bin / f"coredns-{VERSIONS['coredns']}" / "coredns",
            "crictl": ctx.paths.bin / f"cri-tools-{VERSIONS['cri_tools']}" / "crictl",
            "local-path-provisioner": ctx.paths.bin
            / f"local-path-provisioner-{VERSIONS['local_path_provisioner']}"
            / "local-path-provisioner",
        }

    def crictl(self, ctx: Context, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        endpoint = f"unix://{self.socket(ctx)}"
        argv = [str(self._bins(ctx)["crictl"]), "--runtime-endpoint", endpoint, "--image-endpoint", endpoint]
        result = subprocess.run([*argv, "--timeout", "30s", *args], capture_output=True, text=True, check=False)  # noqa: S603
        if check and result.returncode != 0:
            raise StackError(f"crictl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def kubectl(self, ctx: Context, *args: str, stdin: str | None = None) -> str:
        env = self._env(ctx)
        result = subprocess.run(  # noqa: S603
            [env["KUBECTL"], "--kubeconfig", env["KUBECONFIG"], *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
        return result.stdout

    # ---- Component -----------------------------------------------------------------------------
    def prepare(self, ctx: Context) -> None:
        for tool in ("containerd", "runc", "ctr", "iptables"):
            if not shutil.which(tool):
                raise StackError(f"`{tool}` not found: run `make system-deps` (apt-get install containerd runc ...)")
        if not Path("/usr/lib/cni/bridge").exists():
            raise StackError("CNI plugins not found in /usr/lib/cni: apt-get install -y containernetworking-plugins")
        bins = self._bins(ctx)
        if not bins["kubelet"].exists() or not bins["kube-proxy"].exists():
            self._kube.prepare(ctx)
        go_install(
            ctx,
            label="cri-tools",
            version=VERSIONS["cri_tools"],
            packages=["sigs.k8s.io/cri-tools/cmd/crictl"],
            names=["crictl"],
        )
        go_install(
            ctx,
            label="local-path-provisioner",
            version=VERSIONS["local_path_provisioner"],
            packages=["github.com/rancher/local-path-provisioner"],
            names=["local-path-provisioner"],
        )
        build_module(
            ctx,
            label="coredns",
            version=VERSIONS["coredns"],
            require=f"github.com/coredns/coredns {VERSIONS['coredns']}",
            main_go=COREDNS_MAIN,
            binary="coredns",
        )
        self._record_system_paths(ctx)

    def _record_system_paths(self, ctx: Context) -> None:
        record = self.state(ctx) / "system-paths.json"
        if record.exists():
            return  # recorded before an earlier start; kept until `stop` has restored the machine
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps([p for p in SYSTEM_PATHS if not Path(p).exists()]))
        (self.state(ctx) / "kube-chains.json").write_text(json.dumps(kube_chains_now()))

    def _node_ready(self, ctx: Context, since: float = 0.0) -> bool:
        """The node reports Ready, from a heartbeat at or after ``since`` (a stale status does not count)."""
        env = self._env(ctx)
        result = subprocess.run(  # noqa: S603
            [env["KUBECTL"], "--kubeconfig", env["KUBECONFIG"], "get", "node", NODE_NAME, "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return False
        return node_ready(json.loads(result.stdout), since)

    def _healthz(self, port: int) -> bool:
        return http_status(f"http://{BIND}:{port}/healthz") == 200

    def _dns_ready(self) -> bool:
        return http_status(f"http://{BIND}:{PORTS['coredns_ready']}/ready") == 200

    def is_up(self, ctx: Context) -> bool:
        daemons = ("containerd", "kubelet", "kube-proxy", "coredns", "local-path-provisioner")
        if any(recorded_pid(ctx.paths, name) is None for name in daemons):
            return False
        return self._healthz(PORTS["kubelet_healthz"]) and self._dns_ready() and self._node_ready(ctx)

    def start(self, ctx: Context) -> None:
        env = self._env(ctx)
        state = self.state(ctx)
        bins = self._bins(ctx)
        pki = self._kube.pki(ctx).directory
        self._start_containerd(ctx, env)
        self._import_infra_images(ctx, env)
        kubelet_started = 0.0
        if recorded_pid(ctx.paths, "kubelet") is None:
            kubelet_started = time.time() - 1  # heartbeats have one-second resolution
            create_cgroup_root()
            config = state / "kubelet" / "config.json"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(json.dumps(kubelet_config(state, self.socket(ctx), pki), indent=2))
            start_daemon(
                ctx.paths,
                "kubelet",
                [
                    str(bins["kubelet"]),
                    f"--config={config}",
                    f"--kubeconfig={self._kube.component_kubeconfig(ctx, 'kubelet')}",
                    f"--root-dir={state / 'kubelet' / 'root'}",
                    f"--cert-dir={state / 'kubelet' / 'pki'}",
                    f"--hostname-override={NODE_NAME}",
                    f"--node-ip={NODE_IP}",
                    "--v=1",
                ],
            )
        wait_until(
            f"node {NODE_NAME} Ready",
            lambda: self._healthz(PORTS["kubelet_healthz"]) and self._node_ready(ctx, since=kubelet_started),
            timeout=120,
            paths=ctx.paths,
            name="kubelet",
        )
        if recorded_pid(ctx.paths, "kube-proxy") is None:
            config = state / "kube-proxy.json"
            config.write_text(
                json.dumps(kube_proxy_config(self._kube.component_kubeconfig(ctx, "kube-proxy")), indent=2)
            )
            start_daemon(ctx.paths, "kube-proxy", [str(bins["kube-proxy"]), f"--config={config}"])
        wait_until(
            "kube-proxy",
            lambda: self._healthz(PORTS["kube_proxy_healthz"]),
            timeout=60,
            paths=ctx.paths,
            name="kube-proxy",
        )
        tools_image = env.get("MLSTACK_TOOLS_IMAGE", "")
        if not tools_image:
            raise StackError("MLSTACK_TOOLS_IMAGE is not published: start the images component first (make up)")
        volumes = state / "volumes"
        volumes.mkdir(parents=True, exist_ok=True)
        self.kubectl(
            ctx,
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            stdin="\n---\n".join(json.dumps(o) for o in cluster_objects()),
        )
        if recorded_pid(ctx.paths, "coredns") is None:
            conf = state / "Corefile"
            conf.write_text(corefile(self._kube.component_kubeconfig(ctx, "coredns")))
            start_daemon(ctx.paths, "coredns", [str(bins["coredns"]), "-conf", str(conf)])
        wait_until("CoreDNS", self._dns_ready, timeout=60, paths=ctx.paths, name="coredns")
        if recorded_pid(ctx.paths, "local-path-provisioner") is None:
            config = state / "local-path-config.json"
            config.write_text(json.dumps({"sharedFileSystemPath": str(volumes)}))
            pod = state / "local-path-helper-pod.json"
            pod.write_text(json.dumps(helper_pod(tools_image)))
            start_daemon(
                ctx.paths,
                "local-path-provisioner",
                [
                    str(bins["local-path-provisioner"]),
                    "start",
                    f"--kubeconfig={self._kube.component_kubeconfig(ctx, 'local-path-provisioner')}",
                    f"--config={config}",
                    f"--helper-pod-file={pod}",
                    f"--namespace={LOCAL_PATH_NAMESPACE}",
                    "--configmap-name=local-path-config",
                    "--service-account-name=local-path-provisioner",
                    "--provisioner-name=rancher.io/local-path",
                    f"--helper-image={tools_image}",
                ],
            )
            time.sleep(1)
            if recorded_pid(ctx.paths, "local-path-provisioner") is None:
                raise StackError("local-path-provisioner exited; see .local/logs/local-path-provisioner.log")

    def _start_containerd(self, ctx: Context, env: dict[str, str]) -> None:
        state = self.state(ctx)
        socket = self.socket(ctx)
        if recorded_pid(ctx.paths, "containerd") is not None and socket.exists():
            return
        (state / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        (state / "cni" / "net.d" / "10-mlstack.conflist").write_text(cni_conflist(state))
        registry = env["REGISTRY_HOST"]
        hosts = state / "containerd" / "certs.d" / registry
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(registry_hosts_toml(registry))
        config = state / "containerd" / "config.toml"
        config.write_text(containerd_config(state, socket))
        socket.parent.mkdir(parents=True, exist_ok=True)
        start_daemon(ctx.paths, "containerd", ["containerd", "--config", str(config)])
        wait_until(
            "containerd",
            lambda: self.crictl(ctx, "info", check=False).returncode == 0,
            timeout=60,
            paths=ctx.paths,
            name="containerd",
        )

    def _import_infra_images(self, ctx: Context, env: dict[str, str]) -> None:
        """The pause and tools images go straight into containerd: the node never pulls them."""
        from .images import import_into_containerd, infra_archives

        present = self.crictl(ctx, "images", "-o", "json").stdout
        for image, archive in infra_archives(ctx.paths).items():
            if image not in present:
                say(f"    importing {image} into containerd")
                import_into_containerd(ctx.paths, str(self.socket(ctx)), archive)

    def stop(self, ctx: Context) -> None:
        state = self.state(ctx)
        socket = self.socket(ctx)
        for name in ("local-path-provisioner", "coredns"):
            stop(ctx.paths, name)
        stop(ctx.paths, "kubelet")
        if recorded_pid(ctx.paths, "containerd") is not None and self._bins(ctx)["crictl"].exists():
            # Through the CRI, so the CNI plugin tears each pod's network down and frees its address.
            pods = self.crictl(ctx, "pods", "-q", check=False).stdout.split()
            for pod in pods:
                self.crictl(ctx, "stopp", pod, check=False)
                self.crictl(ctx, "rmp", "-f", pod, check=False)
        if recorded_pid(ctx.paths, "kube-proxy") is not None or (state / "kube-proxy.json").exists():
            stop(ctx.paths, "kube-proxy")
            kube_proxy = self._bins(ctx)["kube-proxy"]
            if kube_proxy.exists():
                run_logged(ctx.paths, "kube-proxy", [str(kube_proxy), "--cleanup"], what="kube-proxy --cleanup")
        chains = self.state(ctx) / "kube-chains.json"
        if chains.exists():
            remove_kube_chains(json.loads(chains.read_text()))
            chains.unlink()
        stop(ctx.paths, "containerd")
        for pid in shim_pids(socket):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_cgroup_processes()
        unmount_all([state, socket.parent, Path("/run/containerd")])
        remove_cgroups()
        if socket.parent.exists():
            for leftover in socket.parent.iterdir():
                leftover.unlink()
            socket.parent.rmdir()
        self._remove_created_system_paths(ctx)

    def _remove_created_system_paths(self, ctx: Context) -> None:
        record = self.state(ctx) / "system-paths.json"
        if not record.exists():
            return
        for path in json.loads(record.read_text()):
            if Path(path).exists():
                unmount_all([Path(path)])
                shutil.rmtree(path, ignore_errors=True)
        record.unlink()

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "NODE_NAME": NODE_NAME,
            "CONTAINERD_ADDRESS": str(self.socket(ctx)),
            "CRICTL": str(self._bins(ctx)["crictl"]),
            "STORAGE_CLASS": STORAGE_CLASS,
        }
