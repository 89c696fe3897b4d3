"""A real Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler) under kwokctl.

kwokctl's binary runtime runs the binaries we built from the Go module proxy; KWOK simulates one node
(``kwok-node-0``) and binds PVCs through its volume stages (a default StorageClass ``kwok-volume``).
The KWOK controller is told to manage only nodes annotated ``kwok.x-k8s.io/node=fake``, so the pod
runner's own node is left to the runner, which really runs what lands there.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .base import Context
from .config import BIND, PORTS, VERSIONS
from .gobuild import build_etcd, build_kubernetes, go_install
from .proc import StackError, record_pid, recorded_pid, run_logged, stop, wait_until

CLUSTER = "mlstack"
KWOK_NODE = "kwok-node-0"
# The stages kwokctl uses when given none, plus volume binding; a stages file replaces the defaults.
STAGE_DIRS = ["node/fast", "node/heartbeat-with-lease", "pod/fast", "volume/fast"]
STAGE_FILES = {
    "node/fast": ["node-initialize.yaml"],
    "node/heartbeat-with-lease": None,
    "pod/fast": ["pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml"],
    "volume/fast": ["pv-bind.yaml", "pv-delete.yaml", "pvc-provision.yaml", "pvc-delete.yaml"],
}


def kwokctl_configuration(bin_dirs: dict[str, Path]) -> str:
    """The KwokctlConfiguration document: local binaries, loopback only, fixed apiserver port."""
    k8s = bin_dirs["kubernetes"]
    config = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {
            "runtime": "binary",
            "bindAddress": BIND,
            "kubeApiserverPort": PORTS["kube_apiserver"],
            "kubeVersion": VERSIONS["kubernetes"],
            "kubeApiserverBinary": str(k8s / "kube-apiserver"),
            "kubeControllerManagerBinary": str(k8s / "kube-controller-manager"),
            "kubeSchedulerBinary": str(k8s / "kube-scheduler"),
            "kubectlBinary": str(k8s / "kubectl"),
            "etcdBinary": str(bin_dirs["etcd"] / "etcd"),
            "kwokControllerBinary": str(bin_dirs["kwok"] / "kwok"),
            "kubeAuthorization": True,
            "kubeAdmission": True,
        },
        "componentsPatches": [
            {
                "name": "kwok-controller",
                "extraArgs": [
                    {"key": "manage-all-nodes", "value": "false", "override": True},
                    {"key": "manage-nodes-with-annotation-selector", "value": "kwok.x-k8s.io/node=fake"},
                ],
            }
        ],
    }
    return json.dumps(config)


def kwok_node_manifest() -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": KWOK_NODE,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": KWOK_NODE,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }


def _gomodcache() -> Path:
    out = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True)  # noqa: S607
    return Path(out.stdout.strip())


class Kube:
    name = "kube"
    title = f"Kubernetes {VERSIONS['kubernetes']} (kwokctl)"
    wanted_secrets: dict[str, str] = {}

    def __init__(self) -> None:
        self._bins: dict[str, Path] = {}

    def _workdir(self, ctx: Context) -> Path:
        return ctx.paths.component_dir("kwok")

    def _cluster_dir(self, ctx: Context) -> Path:
        return self._workdir(ctx) / "clusters" / CLUSTER

    def kubeconfig(self, ctx: Context) -> Path:
        return self._cluster_dir(ctx) / "kubeconfig.yaml"

    def kubectl(self, ctx: Context) -> Path:
        return ctx.paths.bin / f"k8s-{VERSIONS['kubernetes']}" / "kubectl"

    def prepare(self, ctx: Context) -> None:
        self._bins = {
            "kubernetes": build_kubernetes(ctx, VERSIONS["kubernetes"]),
            "etcd": build_etcd(ctx, VERSIONS["etcd"]),
            "kwok": go_install(
                ctx,
                label="kwok",
                version=VERSIONS["kwok"],
                packages=["sigs.k8s.io/kwok/cmd/kwok", "sigs.k8s.io/kwok/cmd/kwokctl"],
                names=["kwok", "kwokctl"],
            ),
        }

    def _stages_yaml(self) -> str:
        base = _gomodcache() / f"sigs.k8s.io/kwok@{VERSIONS['kwok']}" / "kustomize" / "stage"
        docs: list[str] = []
        for stage_dir, files in STAGE_FILES.items():
            directory = base / stage_dir
            names = files or sorted(p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
            docs += [(directory / name).read_text() for name in names]
        return "\n---\n".join(docs)

    def _env(self, ctx: Context) -> dict[str, str]:
        k8s_bin = self.kubectl(ctx).parent
        return {
            "KWOK_WORKDIR": str(self._workdir(ctx)),
            # kwokctl shells out to kubectl: make it ours, not whatever else is on PATH.
            "PATH": f"{k8s_bin}:{os.environ.get('PATH', '')}",
        }

    def _kwokctl(self, ctx: Context) -> str:
        return str(ctx.paths.bin / f"kwok-{VERSIONS['kwok']}" / "kwokctl")

    def _readyz(self, ctx: Context) -> bool:
        if not self.kubeconfig(ctx).exists():
            return False
        result = subprocess.run(  # noqa: S603
            [
                str(self.kubectl(ctx)),
                "--kubeconfig",
                str(self.kubeconfig(ctx)),
                "get",
                "--raw",
                "/readyz",
                "--request-timeout=3s",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode == 0 and result.stdout.strip() == "ok"

    def _adopt_pids(self, ctx: Context) -> list[str]:
        """Record kwokctl's component PIDs as ours, so `down` stops them by PID."""
        names = []
        for pidfile in sorted((self._cluster_dir(ctx) / "pids").glob("*.pid")):
            component = f"kube-{pidfile.stem}"
            record_pid(ctx.paths, component, int(pidfile.read_text().strip()))
            names.append(component)
        (ctx.paths.pids / "kube-components.json").write_text(json.dumps(names))
        return names

    def _component_names(self, ctx: Context) -> list[str]:
        try:
            return list(json.loads((ctx.paths.pids / "kube-components.json").read_text()))
        except (OSError, ValueError):
            return []

    def is_up(self, ctx: Context) -> bool:
        names = self._component_names(ctx)
        return bool(names) and all(recorded_pid(ctx.paths, n) is not None for n in names) and self._readyz(ctx)

    def start(self, ctx: Context) -> None:
        workdir = self._workdir(ctx)
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "kwokctl.yaml"
        config.write_text(kwokctl_configuration(self._bins) + "\n---\n" + self._stages_yaml())
        exists = (self._cluster_dir(ctx) / "kwok.yaml").exists()
        argv = [self._kwokctl(ctx), "--name", CLUSTER]
        if exists:
            argv += ["start", "cluster", "--timeout", "5m"]
        else:
            argv += [
                "create",
                "cluster",
                "--runtime",
                "binary",
                "--config",
                str(config),
                "--timeout",
                "5m",
                "--wait",
                "3m",
            ]
        run_logged(ctx.paths, "kwokctl", argv, env=self._env(ctx), what="kwokctl " + argv[3])
        self._adopt_pids(ctx)
        wait_until("kube-apiserver /readyz", lambda: self._readyz(ctx), timeout=180)
        self._apply_defaults(ctx)

    def _apply_defaults(self, ctx: Context) -> None:
        """The KWOK node and the default StorageClass that KWOK's volume stages provision for."""
        base = _gomodcache() / f"sigs.k8s.io/kwok@{VERSIONS['kwok']}" / "kustomize" / "stage" / "volume" / "fast"
        storage_class = base / "storage-class.yaml"
        if not storage_class.exists():
            raise StackError(f"KWOK's volume stages were not found under {base}")
        manifests = json.dumps(kwok_node_manifest()) + "\n---\n" + storage_class.read_text()
        subprocess.run(  # noqa: S603
            [str(self.kubectl(ctx)), "--kubeconfig", str(self.kubeconfig(ctx)), "apply", "-f", "-"],
            input=manifests,
            text=True,
            check=True,
            capture_output=True,
        )
        wait_until(f"node {KWOK_NODE} Ready", lambda: self._node_ready(ctx, KWOK_NODE), timeout=60)

    def _node_ready(self, ctx: Context, node: str) -> bool:
        result = subprocess.run(  # noqa: S603
            [
                str(self.kubectl(ctx)),
                "--kubeconfig",
                str(self.kubeconfig(ctx)),
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip() == "True"

    def stop(self, ctx: Context) -> None:
        names = self._component_names(ctx)
        if any(recorded_pid(ctx.paths, name) is not None for name in names):
            # kwokctl stops its components by the PIDs it recorded and marks the cluster stopped, so
            # the next `kwokctl start cluster` starts every component again (etcd included).
            run_logged(
                ctx.paths,
                "kwokctl",
                [self._kwokctl(ctx), "--name", CLUSTER, "stop", "cluster"],
                env=self._env(ctx),
                what="kwokctl stop cluster",
            )
        for name in reversed(names):
            stop(ctx.paths, name)  # whatever kwokctl left running, by our recorded PID
        (ctx.paths.pids / "kube-components.json").unlink(missing_ok=True)

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig(ctx)),
            "KUBECTL": str(self.kubectl(ctx)),
            "K8S_BIN_DIR": str(self.kubectl(ctx).parent),
        }
