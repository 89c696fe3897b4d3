"""MLflow's NetworkPolicy, enforced by the local stack's kube-router: it names its peers.

Runs after `make deploy` (the MLflow pods in namespace ``mlflow``). Ingress: only the ingress controller
(Traefik, a host process: the node's address) and code-server's namespace reach port 5000; a pod in any
other namespace does not. Egress: the endpoints of PostgreSQL and S3 (after kube-proxy's DNAT: the node's
35432 and 38333 behind the Services' 5432 and 8333) and nothing else on the node or in the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from mlstack_local.config import PORTS

from .conftest import Kubectl, wait_for
from .test_node import NAMESPACE, finished, mlflow_pod, pod, pod_logs, tools_container, tools_image

__all__ = ["mlflow_pod", "tools_image"]  # fixtures shared with test_node

HEALTH = f"http://mlflow.{NAMESPACE}.svc.cluster.local:5000/health"
WORKSTATIONS = "code-server"


def curl_from(kubectl: Kubectl, namespace: str, image: str, name: str, url: str) -> str:
    """The HTTP status a pod in ``namespace`` gets from ``url`` ("000": no connection). Up to 15 tries a
    second apart: kube-router admits a new pod's address once its next sync has seen the pod."""
    script = (
        "for i in $(seq 15); do code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "
        f"'{url}'); [ \"$code\" = 000 ] || break; sleep 1; done; echo $code"
    )
    kubectl.apply(pod(name, namespace, tools_container(image, script), restartPolicy="Never"))
    wait_for(f"pod {namespace}/{name} to finish", lambda: finished(kubectl, namespace, name), timeout=120)
    return pod_logs(kubectl, namespace, name).strip()


@pytest.fixture
def workstation_namespace(kubectl: Kubectl) -> Iterator[str]:
    """code-server's namespace, made for the test unless it exists (then only the probe pod is removed)."""
    existed = kubectl.run("get", "namespace", WORKSTATIONS, check=False).returncode == 0
    if not existed:
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": WORKSTATIONS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
            }
        )
    yield WORKSTATIONS
    if existed:
        kubectl.run("-n", WORKSTATIONS, "delete", "pod", "np-probe", "--wait=false", check=False)
    else:
        kubectl.run("delete", "namespace", WORKSTATIONS, "--wait=false", check=False)


def exec_python(kubectl: Kubectl, mlflow_pod: dict[str, Any], code: str) -> str:
    name = mlflow_pod["metadata"]["name"]
    return kubectl.run("-n", NAMESPACE, "exec", name, "-c", "mlflow", "--", "python", "-c", code).stdout


CONNECT = """
import json, socket, sys
result = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        result[target] = "open"
    except OSError as err:
        result[target] = type(err).__name__
print(json.dumps(result))
"""


def test_the_policy_names_its_peers(kubectl: Kubectl) -> None:
    spec = kubectl.get("networkpolicy", "mlflow", NAMESPACE)["spec"]
    assert all(rule.get("from") for rule in spec["ingress"]), spec["ingress"]
    # Every egress rule but DNS names where it goes.
    for rule in spec["egress"]:
        ports = {port["port"] for port in rule["ports"]}
        assert rule.get("to") or ports <= {53, 5353}, rule


def test_a_pod_in_another_namespace_cannot_reach_mlflow(kubectl: Kubectl, namespace: str, tools_image: str) -> None:
    assert curl_from(kubectl, namespace, tools_image, "np-probe", HEALTH) == "000"


def test_code_servers_namespace_reaches_mlflow(kubectl: Kubectl, workstation_namespace: str, tools_image: str) -> None:
    assert curl_from(kubectl, workstation_namespace, tools_image, "np-probe", HEALTH) == "200"


def test_the_host_and_the_ingress_still_reach_mlflow(stack_env: dict[str, str], kubectl: Kubectl) -> None:
    """Traefik (a host process on the node) and the tests' ClusterIP calls come from the node's address."""
    out = kubectl.run("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/services/mlflow:5000/proxy/health").stdout
    assert "ok" in out.lower(), out


def test_mlflow_reaches_its_services_and_nothing_else(
    stack_env: dict[str, str], kubectl: Kubectl, mlflow_pod: dict[str, Any], namespace: str, tools_image: str
) -> None:
    node = stack_env["NODE_IP"]
    # Another pod that listens: MLflow has no rule for it.
    listener = pod("np-listener", namespace, tools_container(tools_image, "exec python3 -m http.server 8080"))
    kubectl.apply(listener)
    wait_for(
        "the listener pod to get an address",
        lambda: kubectl.get("pod", "np-listener", namespace)["status"].get("podIP"),
        timeout=120,
    )
    other_pod = kubectl.get("pod", "np-listener", namespace)["status"]["podIP"]
    wait_for(
        "the listener to serve",
        lambda: kubectl.get("pod", "np-listener", namespace)["status"].get("phase") == "Running",
        timeout=120,
    )
    targets = [
        "postgresql-official.postgres.svc.cluster.local:5432",
        "seaweedfs-s3.seaweedfs.svc.cluster.local:8333",
        f"{node}:{PORTS['kube_apiserver']}",  # listens on the node's address, no rule for it
        f"{other_pod}:8080",
    ]
    result = json.loads(exec_python(kubectl, mlflow_pod, CONNECT.replace("sys.argv[1:]", json.dumps(targets))))
    assert result[targets[0]] == "open" and result[targets[1]] == "open", result
    assert result[targets[2]] != "open" and result[targets[3]] != "open", result
