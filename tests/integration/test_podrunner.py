"""The pod runner really runs what lands on its node: rollouts, Job outcomes and deletions are real.

Needs the local stack with the runner (`make up`); see conftest.py for skip/fail rules (CI=true fails).
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlstack_local.config import PORTS

from .conftest import Kubectl, restricted_container, state_dir, unavailable

NODE = "mlstack-runner"
BUSYBOX = "docker.io/library/busybox:1.36"
ON_RUNNER = {"mlstack.io/pod-runner": "true"}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last: {last!r})")


@pytest.fixture(scope="module")
def services_file(kubectl: Kubectl, stack_env: dict[str, str]) -> Path:
    """The runner's services.json, once the runner's Node is Ready."""
    node = kubectl.run("get", "node", NODE, "-o", "json", check=False)
    if node.returncode != 0:
        unavailable(f"node {NODE} not registered: is the pod runner up (`make up`)?")
    conditions = {c["type"]: c["status"] for c in json.loads(node.stdout)["status"].get("conditions", [])}
    if conditions.get("Ready") != "True":
        unavailable(f"node {NODE} is not Ready: is the pod runner up (`make up`)?")
    return Path(stack_env.get("RUNNER_SERVICES") or state_dir() / "runner" / "services.json")


def pid_of(container_status: dict[str, Any]) -> int:
    container_id = container_status["containerID"]
    assert container_id.startswith("mlstack://")
    return int(container_id.removeprefix("mlstack://"))


def group_alive(pgid: int) -> bool:
    """Whether any process of the container's process group still exists (zombies count as gone)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def tcp_listeners(port: int) -> set[str]:
    """IPv4 addresses listening on ``port`` (from /proc/net/tcp: little-endian hex, state 0A)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback test URL
            return response.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def pods(kubectl: Kubectl, namespace: str, selector: str) -> list[dict[str, Any]]:
    return json.loads(kubectl.run("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]


def web_deployment(name: str, container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": ON_RUNNER,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def test_deployment_rollout_and_service_are_real(kubectl: Kubectl, namespace: str, services_file: Path) -> None:
    token = secrets.token_hex(8) + "@:/%#?"
    message = f"configmap says {secrets.token_hex(4)}"
    script = (
        'printf "%s" "$APP_TOKEN" > /www/secret.txt && cp /config/message.txt /www/message.txt'
        " && exec python3 -m http.server 8080 --bind 0.0.0.0 --directory /www"
    )
    container = restricted_container("web", BUSYBOX, ["sh", "-c", script])
    container |= {
        "env": [{"name": "APP_TOKEN", "valueFrom": {"secretKeyRef": {"name": "app", "key": "token"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/secret.txt", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [
            {"name": "config", "mountPath": "/config", "readOnly": True},
            {"name": "www", "mountPath": "/www"},
        ],
    }
    volumes = [{"name": "config", "configMap": {"name": "app"}}, {"name": "www", "emptyDir": {}}]
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app", "namespace": namespace},
            "stringData": {"token": token},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app", "namespace": namespace},
            "data": {"message.txt": message},
        },
        {**web_deployment("web", container, volumes), "metadata": {"name": "web", "namespace": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        },
    )
    kubectl.run("rollout", "status", "deployment/web", "-n", namespace, "--timeout=120s")

    pod = pods(kubectl, namespace, "app=web")[0]
    assert pod["spec"]["nodeName"] == NODE
    assert pod["status"]["podIP"].startswith("127.0.1.")
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True
    assert group_alive(pid_of(status)), "the Ready pod has no live process"
    assert pod["status"]["podIP"] in tcp_listeners(8080)
    assert "0.0.0.0" not in tcp_listeners(8080), "--bind 0.0.0.0 should have become the pod IP"

    def address() -> str | None:
        entry = json.loads(services_file.read_text()).get(f"{namespace}/web") if services_file.exists() else None
        return entry["address"] if entry else None

    service = wait_for("the Service in services.json", address, timeout=30)
    assert json.loads(services_file.read_text())[f"{namespace}/web"]["ports"] == {"http": 80}
    assert wait_for("the Secret through the Service", lambda: http_get(f"http://{service}:80/secret.txt"), 30) == token
    assert http_get(f"http://{service}:80/message.txt") == message


def test_job_outcomes_follow_exit_codes(kubectl: Kubectl, namespace: str) -> None:
    def job(name: str, script: str) -> dict[str, Any]:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": ON_RUNNER,
                        "containers": [restricted_container("main", BUSYBOX, ["sh", "-c", script])],
                    }
                },
            },
        }

    kubectl.apply(job("fails", "echo about to fail; exit 3"), job("works", "echo job output from $HOSTNAME"))
    kubectl.run("wait", "-n", namespace, "--for=condition=Failed", "job/fails", "--timeout=120s")
    kubectl.run("wait", "-n", namespace, "--for=condition=Complete", "job/works", "--timeout=120s")

    failed = pods(kubectl, namespace, "job-name=fails")[0]
    assert failed["status"]["phase"] == "Failed"
    assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    succeeded = pods(kubectl, namespace, "job-name=works")[0]
    assert succeeded["status"]["phase"] == "Succeeded"
    assert succeeded["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    logs = kubectl.run("logs", "-n", namespace, "job/works").stdout  # served by the runner's kubelet port
    assert logs.strip() == f"job output from {succeeded['metadata']['name']}"


def test_deleting_a_deployment_kills_its_processes(kubectl: Kubectl, namespace: str) -> None:
    # A child in the background: the whole process group must go, not just the main process.
    container = restricted_container("sleeper", BUSYBOX, ["sh", "-c", "sleep 3600 & exec sleep 3601"])
    deployment = web_deployment("sleeper", container, [])
    deployment["metadata"]["namespace"] = namespace
    kubectl.apply(deployment)
    kubectl.run("rollout", "status", "deployment/sleeper", "-n", namespace, "--timeout=120s")
    pod = pods(kubectl, namespace, "app=sleeper")[0]
    pgid = pid_of(pod["status"]["containerStatuses"][0])
    assert group_alive(pgid)

    kubectl.run("delete", "deployment", "sleeper", "-n", namespace, "--wait=true")
    wait_for("the pod object to be deleted", lambda: not pods(kubectl, namespace, "app=sleeper"), timeout=60)
    wait_for("the container's process group to exit", lambda: not group_alive(pgid), timeout=30)


def test_runner_reports_healthy(services_file: Path) -> None:
    """The endpoint `make status` relies on (the runner's HTTPS port, self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{PORTS['runner_health']}/healthz"
    with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310 - loopback
        assert response.status == 200
