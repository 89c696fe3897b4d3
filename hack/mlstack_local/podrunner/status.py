"""Pod status as kubelet reports it: phase, conditions and container statuses.

The functions here are pure: the pod worker describes its containers as :class:`ContainerView` s and
gets back the ``status`` object to patch through the ``pods/status`` subresource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .common import rfc3339

CONDITION_TYPES = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled")


@dataclass
class ContainerView:
    """One container's status fields (Kubernetes names, ``state`` and ``last_state`` as API dicts)."""

    name: str
    image: str
    image_id: str = ""
    container_id: str = ""
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def exit_code(self) -> int | None:
        terminated = self.state.get("terminated")
        return None if terminated is None else int(terminated.get("exitCode", 0))


def pod_phase(restart_policy: str, init_pending: bool, init_failed: bool, views: Sequence[ContainerView]) -> str:
    """The pod phase from container states, following kubelet's getPhase."""
    if init_failed:
        return "Failed"
    if init_pending:
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for view in views:
        if view.running:
            running += 1
        elif view.exit_code is not None:
            stopped += 1
            succeeded += int(view.exit_code == 0)
        elif view.last_state.get("terminated"):
            stopped += 1  # waiting to restart after a run: counts as stopped, like kubelet
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded and all(v.exit_code is not None for v in views):
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def conditions(
    previous: Mapping[str, Mapping[str, Any]],
    values: Mapping[str, tuple[bool, str]],
    now: float,
) -> list[dict[str, Any]]:
    """Conditions for ``values`` (type -> (status, reason)), keeping lastTransitionTime when unchanged."""
    out = []
    for kind in CONDITION_TYPES:
        if kind not in values:
            continue
        ok, reason = values[kind]
        status = "True" if ok else "False"
        before = previous.get(kind) or {}
        transition = before.get("lastTransitionTime") if before.get("status") == status else None
        # reason and message are always present (null when unset) so a strategic-merge patch clears
        # the reason of a condition that became true instead of keeping the old one.
        out.append(
            {
                "type": kind,
                "status": status,
                "lastProbeTime": None,
                "lastTransitionTime": transition or rfc3339(now),
                "reason": reason if reason and not ok else None,
                "message": None,
            }
        )
    return out


def condition_values(
    sandbox_ready: bool, init_pending: bool, phase: str, views: Sequence[ContainerView]
) -> dict[str, tuple[bool, str]]:
    """Which pod conditions hold, with kubelet's reasons for the false ones."""
    terminal = phase in ("Succeeded", "Failed")
    all_ready = bool(views) and all(v.ready for v in views) and not terminal
    not_ready = [v.name for v in views if not v.ready]
    reason = "PodCompleted" if terminal else "ContainersNotReady"
    return {
        "PodScheduled": (True, ""),
        "PodReadyToStartContainers": (sandbox_ready and not terminal, ""),
        "Initialized": (not init_pending, "ContainersNotInitialized"),
        "ContainersReady": (all_ready, reason if not_ready or terminal else ""),
        "Ready": (all_ready, reason if not_ready or terminal else ""),
    }


def build_status(
    *,
    phase: str,
    pod_ip: str,
    start_time: str,
    conds: list[dict[str, Any]],
    init_views: Sequence[ContainerView],
    views: Sequence[ContainerView],
    message: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """The ``status`` object for a strategic-merge patch of ``pods/status``."""
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": conds,
        "containerStatuses": [v.as_status() for v in views],
    }
    if init_views:
        status["initContainerStatuses"] = [v.as_status() for v in init_views]
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    return status
