"""The local stack's node is a real kubelet with containerd: what a user's cluster enforces, it enforces.

Runs after `make deploy` (the MLflow pods in namespace ``mlflow``); the other tests make their own
namespaces and pods with the stack's tools image, pulled by nobody (imported into containerd).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from .conftest import REPO_ROOT, Kubectl, restricted_container, unavailable, wait_for

sys.path.insert(0, str(REPO_ROOT / "hack"))

from mlstack_local.network import drop_counter  # noqa: E402

NODE = "mlstack-node"
NAMESPACE = "mlflow"


@pytest.fixture(scope="module")
def tools_image(stack_env: dict[str, str]) -> str:
    image = stack_env.get("MLSTACK_TOOLS_IMAGE")
    if not image:
        unavailable("stack.env lacks MLSTACK_TOOLS_IMAGE: is the images component up?")
    return image


@pytest.fixture(scope="module")
def mlflow_pod(kubectl: Kubectl) -> dict[str, Any]:
    pods = json.loads(
        kubectl.run("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=mlflow", "-o", "json").stdout
    )["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    if not running:
        unavailable("no running MLflow pod in namespace mlflow: run `make deploy` first")
    return running[0]


def pod(name: str, namespace: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            **spec,
        },
    }


def tools_container(image: str, script: str, **extra: Any) -> dict[str, Any]:
    container = restricted_container("tools", image, ["sh", "-c", script])
    container["imagePullPolicy"] = "Never"
    container.update(extra)
    return container


def pod_logs(kubectl: Kubectl, namespace: str, name: str) -> str:
    return kubectl.run("-n", namespace, "logs", name, check=False).stdout


def finished(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    phase = kubectl.get("pod", name, namespace)["status"].get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def test_the_node_is_a_ready_kubelet_with_containerd(kubectl: Kubectl) -> None:
    node = kubectl.get("node", NODE)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"].startswith("v1.35.")
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert not node["spec"].get("taints"), "the node must take pods without tolerations"
    assert {"type": "InternalIP", "address": "10.89.0.1"} in node["status"]["addresses"]
    nodes = json.loads(kubectl.run("get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == [NODE], "one node, no fake ones"


def test_the_kubelet_refuses_anonymous_requests() -> None:
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen("https://10.89.0.1:10250/pods", context=context, timeout=10)  # noqa: S310
    assert refused.value.code == 401


def test_mlflow_runs_on_the_node_from_the_registry_image(mlflow_pod: dict[str, Any], stack_env: dict[str, str]) -> None:
    assert mlflow_pod["spec"]["nodeName"] == NODE
    assert mlflow_pod["spec"]["imagePullSecrets"] == [{"name": "mlflow-registry"}]
    status = mlflow_pod["status"]["containerStatuses"][0]
    registry = stack_env["REGISTRY_HOST"]
    assert status["image"].startswith(f"{registry}/{stack_env['REGISTRY_PROJECT']}/mlflow:")
    # The image ID is the digest the kubelet pulled from the stack's registry.
    assert status["imageID"].startswith(f"{registry}/{stack_env['REGISTRY_PROJECT']}/mlflow@sha256:")


def test_a_pod_without_the_pull_secret_gets_a_401(kubectl: Kubectl, namespace: str, mlflow_pod: dict) -> None:
    image = mlflow_pod["spec"]["containers"][0]["image"]
    container = restricted_container("mlflow", image, ["mlflow", "--version"])
    container["imagePullPolicy"] = "Always"
    kubectl.apply(pod("no-secret", namespace, container))

    def pull_error() -> str | None:
        statuses = kubectl.get("pod", "no-secret", namespace)["status"].get("containerStatuses") or []
        waiting = (statuses[0]["state"].get("waiting") if statuses else None) or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") and waiting.get("message"):
            return waiting["message"]
        return None

    message = wait_for("ErrImagePull", pull_error, timeout=90)
    assert "401 Unauthorized" in message


def test_the_mlflow_container_is_locked_down(kubectl: Kubectl, mlflow_pod: dict[str, Any]) -> None:
    script = (
        "id -u; if touch /probe 2>/dev/null; then echo writable; else echo read-only; fi;"
        ' grep -E "^(CapEff|Seccomp):" /proc/self/status'
    )
    result = kubectl.run(
        "-n", NAMESPACE, "exec", mlflow_pod["metadata"]["name"], "-c", "mlflow", "--", "sh", "-c", script
    )
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["1000"]
    assert lines[1] == ["read-only"]
    fields = {line[0]: line[1] for line in lines[2:]}
    assert fields["CapEff:"] == "0000000000000000"
    assert fields["Seccomp:"] == "2", "seccomp filter mode"


def test_mlflow_uses_the_default_in_cluster_names(kubectl: Kubectl, mlflow_pod: dict[str, Any]) -> None:
    env = {e["name"]: e for e in mlflow_pod["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://seaweedfs-s3.seaweedfs.svc.cluster.local:8333"
    uri = kubectl.get("secret", "mlflow-db", NAMESPACE)["data"]["MLFLOW_BACKEND_STORE_URI"]
    assert "@postgresql-official.postgres.svc.cluster.local:5432/" in base64.b64decode(uri).decode()
    # And the pod resolves and reaches both through the cluster's DNS and Services.
    probe = (
        "import socket\n"
        "for host, port in (('postgresql-official.postgres.svc.cluster.local', 5432),"
        " ('seaweedfs-s3.seaweedfs.svc.cluster.local', 8333)):\n"
        "    socket.create_connection((host, port), timeout=5).close()\n"
        "    print(host, 'ok')\n"
    )
    result = kubectl.run(
        "-n", NAMESPACE, "exec", mlflow_pod["metadata"]["name"], "-c", "mlflow", "--", "python", "-c", probe
    )
    assert result.stdout.count(" ok") == 2, result.stdout + result.stderr


def test_a_pod_over_its_memory_limit_is_oom_killed_and_restarted(
    kubectl: Kubectl, namespace: str, tools_image: str
) -> None:
    hog = "python3 -c 'b = bytearray(256 * 1024 * 1024); import time; time.sleep(60)'"
    container = tools_container(tools_image, hog, resources={"limits": {"memory": "64Mi", "cpu": "500m"}})
    kubectl.apply(pod("hog", namespace, container))

    def oom_restarted() -> dict | None:
        statuses = kubectl.get("pod", "hog", namespace)["status"].get("containerStatuses") or []
        if not statuses:
            return None
        last = statuses[0].get("lastState", {}).get("terminated") or {}
        return statuses[0] if last.get("reason") == "OOMKilled" and statuses[0]["restartCount"] >= 1 else None

    status = wait_for("an OOM kill and a restart", oom_restarted, timeout=120)
    assert status["lastState"]["terminated"]["exitCode"] == 137


def test_pod_traffic_leaving_the_bridge_is_dropped(kubectl: Kubectl, namespace: str, tools_image: str) -> None:
    before = drop_counter()
    # A documentation address (TEST-NET-2): the drop rule stops it before it could leave anyway.
    script = "if curl -q -s --max-time 3 http://198.51.100.7/ 2>/dev/null; then echo reached; else echo blocked; fi"
    kubectl.apply(pod("egress", namespace, tools_container(tools_image, script), restartPolicy="Never"))
    wait_for("the egress probe to finish", lambda: finished(kubectl, namespace, "egress"))
    assert pod_logs(kubectl, namespace, "egress").split() == ["blocked"]
    assert drop_counter() > before


def test_pods_resolve_cluster_names_and_nothing_outside(kubectl: Kubectl, namespace: str, tools_image: str) -> None:
    script = (
        "import socket\n"
        "print(socket.gethostbyname('kubernetes.default.svc.cluster.local'))\n"
        "try:\n"
        "    socket.gethostbyname('pypi.org')\n"
        "    print('outside resolved')\n"
        "except OSError:\n"
        "    print('outside refused')\n"
    )
    container = tools_container(tools_image, "")
    container["command"] = ["python3", "-c", script]
    kubectl.apply(pod("dns", namespace, container, restartPolicy="Never"))
    wait_for("the DNS probe to finish", lambda: finished(kubectl, namespace, "dns"))
    assert pod_logs(kubectl, namespace, "dns").split() == ["10.96.0.1", "outside", "refused"]


def test_a_claim_binds_and_a_non_root_pod_writes_to_it(kubectl: Kubectl, namespace: str, tools_image: str) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    token = uuid.uuid4().hex
    container = tools_container(tools_image, f"echo {token} > /data/probe && cat /data/probe")
    container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    kubectl.apply(
        claim,
        pod(
            "writer",
            namespace,
            container,
            restartPolicy="Never",
            volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        ),
    )
    wait_for("the writer to finish", lambda: finished(kubectl, namespace, "writer"), timeout=180)
    assert kubectl.get("pvc", "data", namespace)["status"]["phase"] == "Bound"
    assert pod_logs(kubectl, namespace, "writer").strip() == token


def test_logs_and_exec_go_through_the_kubelet(kubectl: Kubectl, mlflow_pod: dict[str, Any]) -> None:
    name = mlflow_pod["metadata"]["name"]
    logs = kubectl.run("-n", NAMESPACE, "logs", name, "-c", "mlflow", "--tail=50")
    assert logs.returncode == 0
    exec_result = subprocess.run(  # noqa: S603
        [
            kubectl.binary,
            "--kubeconfig",
            kubectl.kubeconfig,
            "-n",
            NAMESPACE,
            "exec",
            name,
            "--",
            "mlflow",
            "--version",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert exec_result.returncode == 0 and "version" in exec_result.stdout
