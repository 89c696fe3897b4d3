"""Where the local stack keeps things, which versions it runs and on which ports.

Everything listens on 127.0.0.1. State (data dirs, logs, PIDs, generated passwords) lives under
``.local/`` in the repository; built or downloaded artifacts live under ``~/.cache/mlstack/``, keyed by
version, so a second ``make up`` on the same machine builds nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIND = "127.0.0.1"

VERSIONS = {
    "kubernetes": "v1.35.4",
    "etcd": "v3.6.16",
    "sealed_secrets": "v0.36.6",
    "keycloak": "26.7.3",
    "postgresql": "15",
    "coredns": "v1.14.7",
    "cri_tools": "v1.34.0",
    "local_path_provisioner": "v0.0.30",
    "traefik": "v3.7.13",
    "metallb": "v0.15.2",
    "kube_router": "v2.1.0",
}

# The node's network: a bridge whose first address is the node IP; pods get the rest of the /24.
# Platform services that pods reach listen on NODE_IP too; nothing routes beyond the bridge.
NODE_NAME = "mlstack-node"
BRIDGE = "mlstack0"
POD_SUBNET = "10.89.0.0/24"
NODE_IP = "10.89.0.1"
SERVICE_CIDR = "10.96.0.0/24"
CLUSTER_DNS = NODE_IP
CLUSTER_DOMAIN = "cluster.local"

PORTS = {
    "kube_apiserver": 36443,
    "kube_controller_manager": 36257,
    "kube_scheduler": 36259,
    "etcd_client": 32379,
    "etcd_peer": 32380,
    "kubelet": 10250,
    "kubelet_healthz": 10248,
    "kube_proxy_healthz": 10256,
    "kube_proxy_metrics": 10249,
    "coredns_health": 38053,
    "coredns_ready": 38054,
    "postgres": 35432,
    "s3": 38333,
    "weed_master": 39333,
    "weed_volume": 38380,
    "weed_filer": 38888,
    "weed_master_grpc": 49333,
    "weed_volume_grpc": 48380,
    "weed_filer_grpc": 48888,
    "weed_s3_grpc": 48333,
    "keycloak": 38180,
    "keycloak_management": 38190,
    "sealed_secrets": 38290,
    "sealed_secrets_metrics": 38291,
    "registry": 35000,
    "traefik_ping": 38080,
    "ingress_https": 443,
    "ingress_http": 80,
    "metallb_metrics": 37472,
}


@dataclass(frozen=True)
class Paths:
    """All filesystem locations used by the stack."""

    state: Path
    cache: Path

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def stack_env(self) -> Path:
        return self.state / "stack.env"

    @property
    def secrets_file(self) -> Path:
        return self.state / "secrets.json"

    @property
    def bin(self) -> Path:
        return self.cache / "bin"

    @property
    def src(self) -> Path:
        return self.cache / "src"

    def component_dir(self, name: str) -> Path:
        return self.state / name


def default_paths() -> Paths:
    state = Path(os.environ.get("MLSTACK_STATE_DIR", REPO_ROOT / ".local"))
    cache = Path(os.environ.get("MLSTACK_CACHE_DIR", Path.home() / ".cache" / "mlstack"))
    return Paths(state=state.resolve(), cache=cache.resolve())
