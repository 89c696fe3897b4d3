"""Pod phase and conditions as kubelet computes them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local.podrunner.status import (  # noqa: E402
    ContainerView,
    build_status,
    condition_values,
    conditions,
    pod_phase,
)


def running() -> ContainerView:
    return ContainerView("c", "img", state={"running": {"startedAt": "2026-01-01T00:00:00Z"}}, ready=True)


def exited(code: int) -> ContainerView:
    return ContainerView("c", "img", state={"terminated": {"exitCode": code}})


def restarting() -> ContainerView:
    return ContainerView(
        "c", "img", state={"waiting": {"reason": "CrashLoopBackOff"}}, last_state={"terminated": {"exitCode": 1}}
    )


@pytest.mark.parametrize(
    ("policy", "views", "phase"),
    [
        ("Always", [ContainerView("c", "img")], "Pending"),
        ("Always", [running()], "Running"),
        ("Always", [restarting()], "Running"),
        ("Always", [exited(0)], "Running"),
        ("Never", [exited(0), exited(0)], "Succeeded"),
        ("Never", [exited(0), exited(3)], "Failed"),
        ("Never", [running(), exited(3)], "Running"),
        ("OnFailure", [exited(0)], "Succeeded"),
        ("OnFailure", [restarting()], "Running"),
    ],
)
def test_phase(policy: str, views: list[ContainerView], phase: str) -> None:
    assert pod_phase(policy, False, False, views) == phase


def test_init_phases() -> None:
    assert pod_phase("Always", True, False, [running()]) == "Pending"
    assert pod_phase("Never", False, True, [ContainerView("c", "img")]) == "Failed"


def test_conditions_keep_transition_time() -> None:
    first = conditions({}, condition_values(True, False, "Running", [running()]), now=1_000_000)
    by_type = {c["type"]: c for c in first}
    assert by_type["Ready"]["status"] == "True"
    assert by_type["Ready"]["lastTransitionTime"] == "1970-01-12T13:46:40Z"
    later = conditions(by_type, condition_values(True, False, "Running", [running()]), now=2_000_000)
    assert {c["type"]: c for c in later}["Ready"]["lastTransitionTime"] == "1970-01-12T13:46:40Z"
    not_ready = ContainerView("c", "img", state={"running": {}}, ready=False)
    flipped = conditions(by_type, condition_values(True, False, "Running", [not_ready]), now=2_000_000)
    ready = {c["type"]: c for c in flipped}["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"
    assert ready["lastTransitionTime"] == "1970-01-24T03:33:20Z"


def test_completed_pod_is_not_ready() -> None:
    values = condition_values(True, False, "Succeeded", [exited(0)])
    assert values["Ready"] == (False, "PodCompleted")
    assert values["PodReadyToStartContainers"][0] is False


def test_build_status_shape() -> None:
    view = running()
    view.container_id = "mlstack://42"
    status = build_status(phase="Running", pod_ip="127.0.1.9", start_time="t", conds=[], init_views=[], views=[view])
    assert status["podIP"] == "127.0.1.9"
    assert status["podIPs"] == [{"ip": "127.0.1.9"}]
    assert status["hostIP"] == "127.0.0.1"
    assert status["containerStatuses"][0]["containerID"] == "mlstack://42"
    assert "initContainerStatuses" not in status
