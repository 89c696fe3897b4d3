"""The runner's Node: registration and heartbeats.

The Node has no ``kwok.x-k8s.io/node`` annotation, so KWOK leaves it (and its pods) alone; workloads
choose it with ``nodeSelector: {mlstack.io/pod-runner: "true"}``. Like kubelet, the runner renews a Lease
in ``kube-node-lease`` every 10 s and reports node status every 30 s, so the node lifecycle controller
never marks it unreachable while the runner lives.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from typing import Any

from . import NODE_LABEL, NODE_NAME
from .common import rfc3339, rfc3339_micro
from .envs import NODE_ALLOCATABLE
from .kubeapi import Api

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
LEASE_EVERY = 10.0
STATUS_EVERY = 30.0
KUBELET_VERSION = "v1.35.4"
log = logging.getLogger("podrunner")


def node_labels() -> dict[str, str]:
    return {
        "kubernetes.io/hostname": NODE_NAME,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        NODE_LABEL: "true",
    }


def node_status(now: float, port: int, since: float) -> dict[str, Any]:
    """Capacity, conditions (Ready), address and node info, as kubelet reports them."""
    stamp = rfc3339(now)
    transition = rfc3339(since)

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": transition,
        }

    return {
        "capacity": dict(NODE_ALLOCATABLE),
        "allocatable": dict(NODE_ALLOCATABLE),
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "mlstack pod runner is posting ready status"),
        ],
        # No Hostname address: the API server would try to resolve "mlstack-runner" for `kubectl logs`.
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "osImage": "mlstack pod runner",
            "kernelVersion": platform.release(),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "mlstack://1",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


def is_ready(node: dict[str, Any] | None) -> bool:
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class NodeAgent:
    """Registers the Node, then keeps its Lease and status fresh from a thread."""

    def __init__(self, api: Api, port: int) -> None:
        self.api = api
        self.port = port
        self.ready = False
        self.last_lease = 0.0
        self._uid = ""
        self._since = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node", daemon=True)

    def register(self) -> None:
        """Create the Node (or adopt an existing one: labels are re-applied), then report status."""
        existing = self.api.get_node(NODE_NAME)
        if existing is None:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": NODE_NAME, "labels": node_labels()},
                "spec": {},
                "status": node_status(time.time(), self.port, self._since),
            }
            existing = self.api.create_node(body)
            log.info("node %s registered", NODE_NAME)
        else:
            existing = self.api.patch_node(NODE_NAME, {"metadata": {"labels": node_labels()}})
        self._uid = existing["metadata"]["uid"]
        self.post_status()
        self.renew_lease()

    def post_status(self) -> None:
        status = node_status(time.time(), self.port, self._since)
        # Drop a Hostname address an older runner registered (strategic-merge delete directive).
        status["addresses"] = [*status["addresses"], {"type": "Hostname", "$patch": "delete"}]
        node = self.api.patch_node_status(NODE_NAME, status)
        self.ready = is_ready(node)

    def renew_lease(self) -> None:
        """Create or renew ``kube-node-lease/<node>``, owned by the Node like kubelet's."""
        now = time.time()
        lease = self.api.get_lease(LEASE_NAMESPACE, NODE_NAME)
        spec = {
            "holderIdentity": NODE_NAME,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": rfc3339_micro(now),
        }
        if lease is None:
            owner = {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME, "uid": self._uid}
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": NODE_NAME, "namespace": LEASE_NAMESPACE, "ownerReferences": [owner]},
                "spec": spec,
            }
            self.api.create_lease(LEASE_NAMESPACE, body)
        else:
            lease["spec"] = {**(lease.get("spec") or {}), **spec}
            self.api.replace_lease(LEASE_NAMESPACE, NODE_NAME, lease)
        self.last_lease = now

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def healthy(self) -> bool:
        return self.ready and time.time() - self.last_lease < LEASE_SECONDS

    def _loop(self) -> None:
        next_status = time.monotonic() + STATUS_EVERY
        while not self._stop.wait(LEASE_EVERY):
            try:
                self.renew_lease()
                if time.monotonic() >= next_status:
                    self.post_status()
                    next_status = time.monotonic() + STATUS_EVERY
            except Exception as err:  # noqa: BLE001 - a heartbeat must survive any API hiccup
                log.warning("node heartbeat failed: %s", _short(err))
                try:
                    if "404" in str(err) or "Not Found" in str(err):
                        self.register()  # the Node was deleted: register again, as kubelet does
                except Exception as again:  # noqa: BLE001
                    log.warning("node re-registration failed: %s", _short(again))


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__
