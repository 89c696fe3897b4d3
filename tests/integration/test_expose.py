"""mlflow_expose on the local stack: Ingress, Gateway API HTTPRoute, NodePort and LoadBalancer.

One MLflow in namespace ``t10a-expose`` goes through every mode in turn, the way an operator would
switch: ingress -> httproute -> ingress -> httproute on its own Gateway -> nodeport -> loadbalancer
-> ingress. Each switch must
converge with nothing left of the previous mode (Ingress, HTTPRoute, copied certificate, node port,
load balancer address) and a re-run must report ``changed=0``. Proven as a user would:

- httproute: playbooks/18_test.yaml passes through Traefik's Gateway API provider (the stack's
  Gateway ``traefik/mlstack`` with the wildcard certificate, verified against the stack's CA) while
  the Ingress is absent, and again on a Gateway the collection creates in the namespace;
- nodeport and loadbalancer: an MLflow client round trip (experiment, run, metric, artifact in the
  bucket) on the node IP's node port, and on the address MetalLB's controller assigned (the
  ``metallb`` stack component), from the host; MLflow's --allowed-hosts lists exactly what the client
  sends as Host.

Before anything exists, ``11_deploy.yaml --check`` in every mode creates nothing; at the end
``19_uninstall.yaml`` removes what each mode created. The tests run in file order and share the
deployment. Needs the local stack (``make up``) with the metallb component; skipped without it,
failed when ``CI=true``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO_ROOT, Kubectl, changed_count, run_playbook, unavailable, wait_for

NAME = "t10a-expose"
SCENARIO = {
    "mlflow_namespace": NAME,
    "mlflow_hostname": f"{NAME}.mlstack.test",
    "mlflow_db_name": "t10a_expose",
    "mlflow_auth_db_name": "t10a_expose_auth",
    "mlflow_db_user": "t10a_expose",
    "mlflow_artifacts_bucket": NAME,
    "mlflow_client_id": NAME,
    "mlflow_oidc_admin_group": f"{NAME}-admin",
    "mlflow_oidc_user_group": f"{NAME}-user",
    # 19_uninstall also cleans code-server; this scenario has none, so point it at nothing shared.
    "mlflow_workstation_namespace": f"{NAME}-code-server",
}
# Inside MetalLB's pool (10.89.0.200-10.89.0.250), asked for by annotation.
LB_ADDRESS = "10.89.0.210"
LOADBALANCER = {
    "mlflow_expose": "loadbalancer",
    "mlflow_loadbalancer_annotations": {"metallb.io/loadBalancerIPs": LB_ADDRESS},
    # The host reaches the bridge from 10.89.0.1.
    "mlflow_loadbalancer_source_ranges": ["10.89.0.0/24"],
}
NODE_PORT = 30517


@dataclass
class Run:
    returncode: int
    output: str

    @property
    def changed(self) -> int:
        return changed_count(self.output)

    def changed_tasks(self) -> list[str]:
        blocks = self.output.split("TASK [")[1:]
        return [block.split("]", 1)[0] for block in blocks if re.search(r"^changed:", block, re.MULTILINE)]


def playbook(tmp_path: Path, name: str, *args: str, **extra: object) -> Run:
    result = run_playbook(tmp_path, name, {**SCENARIO, **extra}, *args)
    return Run(result.returncode, result.stdout + result.stderr)


def deploy(tmp_path: Path, *args: str, **extra: object) -> Run:
    run = playbook(tmp_path, "playbooks/11_deploy.yaml", *args, **extra)
    assert run.returncode == 0, run.output[-4000:]
    return run


def deploy_converged(tmp_path: Path, **extra: object) -> None:
    """Deploy, then deploy again: the second run changes nothing."""
    deploy(tmp_path, **extra)
    again = deploy(tmp_path, **extra)
    assert again.changed == 0, "re-run changed: " + ", ".join(again.changed_tasks())


def exists(kubectl: Kubectl, kind: str, name: str = "mlflow", namespace: str = NAME) -> bool:
    return kubectl.run("-n", namespace, "get", kind, name, check=False).returncode == 0


def allowed_hosts(kubectl: Kubectl) -> list[str]:
    args = kubectl.get("deployment", "mlflow", NAME)["spec"]["template"]["spec"]["containers"][0]["args"]
    (flag,) = [arg for arg in args if arg.startswith("--allowed-hosts=")]
    return flag.removeprefix("--allowed-hosts=").split(",")


def token(env: dict[str, str], kubectl: Kubectl) -> str:
    secret = base64.b64decode(kubectl.get("secret", "mlflow-oidc", NAME)["data"]["OIDC_CLIENT_SECRET"]).decode()
    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": NAME,
            "client_secret": secret,
            "username": env["PLATFORM_ADMIN_USER"],
            "password": env["PLATFORM_ADMIN_PASSWORD"],
        }
    ).encode()
    url = f"{env['KEYCLOAK_URL']}/realms/{env['KEYCLOAK_REALM']}/protocol/openid-connect/token"
    with urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=15) as response:  # noqa: S310
        return json.loads(response.read())["access_token"]


def round_trip(env: dict[str, str], kubectl: Kubectl, uri: str) -> dict[str, Any]:
    """hack/mlflow_roundtrip.py as a client outside the cluster: experiment, run, metric, artifact."""
    client_env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_TRACKING_TOKEN": token(env, kubectl),
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
        "MLFLOW_BUCKET": NAME,
        "S3_ENDPOINT_URL": env["S3_ENDPOINT_URL"],
        "S3_ACCESS_KEY": env["S3_ACCESS_KEY"],
        "S3_SECRET_KEY": env["S3_SECRET_KEY"],
    }
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "hack" / "mlflow_roundtrip.py")],
        env=client_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    created = json.loads(result.stdout.strip().splitlines()[-1])
    assert any(key.endswith("/model.bin") for key in created["bucket_keys"]), created
    return created


def assert_18_test_passes(tmp_path: Path) -> None:
    run = playbook(tmp_path, "playbooks/18_test.yaml")
    assert run.returncode == 0, run.output[-4000:]
    assert re.search(r"\d+ passed, 0 failed", run.output), run.output[-3000:]


def service(kubectl: Kubectl) -> dict[str, Any]:
    return kubectl.get("service", "mlflow", NAME)


def assert_cluster_ip_only(kubectl: Kubectl) -> None:
    """Nothing of a node port or load balancer is left on the Service."""
    svc = service(kubectl)
    assert svc["spec"]["type"] == "ClusterIP"
    assert all("nodePort" not in port for port in svc["spec"]["ports"]), svc["spec"]["ports"]
    assert not svc["spec"].get("loadBalancerSourceRanges")
    assert not (svc.get("metadata", {}).get("annotations") or {}).get("metallb.io/loadBalancerIPs")
    assert not (svc.get("status", {}).get("loadBalancer") or {}).get("ingress")


@pytest.fixture(scope="module")
def env(
    stack_env: dict[str, str], kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    if "LOADBALANCER_POOL" not in stack_env:
        unavailable("the metallb component is not up: python -m mlstack_local up metallb")
    tmp = tmp_path_factory.mktemp("expose")
    playbook(tmp, "playbooks/19_uninstall.yaml", mlflow_purge=True)  # a leftover of an interrupted run
    yield stack_env
    purged = playbook(tmp, "playbooks/19_uninstall.yaml", mlflow_purge=True)
    assert purged.returncode == 0, purged.output[-3000:]


@pytest.mark.parametrize("mode", ["ingress", "httproute", "nodeport", "loadbalancer"])
def test_check_mode_on_a_fresh_namespace_creates_nothing(
    env: dict[str, str], kubectl: Kubectl, tmp_path: Path, mode: str
) -> None:
    extra: dict[str, object] = LOADBALANCER if mode == "loadbalancer" else {"mlflow_expose": mode}
    deploy(tmp_path, "--check", **extra)
    assert kubectl.run("get", "namespace", NAME, check=False).returncode != 0


def test_ingress_deploys_and_converges(env: dict[str, str], kubectl: Kubectl, tmp_path: Path) -> None:
    keycloak = playbook(tmp_path, "playbooks/10_configure_keycloak.yaml")
    assert keycloak.returncode == 0, keycloak.output[-3000:]
    deploy_converged(tmp_path, mlflow_expose="ingress")
    assert exists(kubectl, "ingress")
    assert not exists(kubectl, "httproute")


def test_httproute_replaces_the_ingress_and_serves_18_test_through_the_gateway(
    env: dict[str, str], kubectl: Kubectl, tmp_path: Path
) -> None:
    deploy_converged(tmp_path, mlflow_expose="httproute")
    assert not exists(kubectl, "ingress")
    # TLS ends at the stack's Gateway (its wildcard certificate): no copy is left in the namespace.
    assert not exists(kubectl, "secret", "mlflow-tls")
    route = kubectl.get("httproute", "mlflow", NAME)
    assert route["spec"]["hostnames"] == [f"{NAME}.mlstack.test"]
    assert route["spec"]["parentRefs"][0] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": env["GATEWAY_NAME"],
        "namespace": env["GATEWAY_NAMESPACE"],
        "sectionName": env["GATEWAY_SECTION"],
    }
    conditions = {c["type"]: c["status"] for c in route["status"]["parents"][0]["conditions"]}
    assert conditions["Accepted"] == "True" and conditions["ResolvedRefs"] == "True", conditions
    assert_18_test_passes(tmp_path)


def test_switching_back_to_ingress_removes_the_httproute(env: dict[str, str], kubectl: Kubectl, tmp_path: Path) -> None:
    deploy_converged(tmp_path, mlflow_expose="ingress")
    assert not exists(kubectl, "httproute")
    assert exists(kubectl, "ingress") and exists(kubectl, "secret", "mlflow-tls")
    assert_18_test_passes(tmp_path)


def test_httproute_on_a_gateway_the_collection_creates(env: dict[str, str], kubectl: Kubectl, tmp_path: Path) -> None:
    deploy_converged(
        tmp_path,
        mlflow_expose="httproute",
        mlflow_gateway_create=True,
        mlflow_gateway_class="traefik",
        mlflow_gateway_name="mlflow",
        mlflow_gateway_namespace="",
        mlflow_gateway_section="",
    )
    assert not exists(kubectl, "ingress")
    gateway = kubectl.get("gateway", "mlflow", NAME)
    (listener,) = gateway["spec"]["listeners"]
    assert listener["hostname"] == f"{NAME}.mlstack.test" and listener["port"] == 443
    assert listener["tls"]["certificateRefs"][0]["name"] == "mlflow-tls"
    assert exists(kubectl, "secret", "mlflow-tls")  # the certificate copied for the Gateway
    route = kubectl.get("httproute", "mlflow", NAME)
    assert route["spec"]["parentRefs"][0]["namespace"] == NAME and route["spec"]["parentRefs"][0]["name"] == "mlflow"
    assert_18_test_passes(tmp_path)


def test_nodeport_answers_a_client_on_the_node_ip(env: dict[str, str], kubectl: Kubectl, tmp_path: Path) -> None:
    deploy_converged(tmp_path, mlflow_expose="nodeport", mlflow_node_port=NODE_PORT)
    # Nothing of the previous mode: neither its HTTPRoute, nor the Gateway it created, nor its certificate.
    for kind, name in [("ingress", "mlflow"), ("httproute", "mlflow"), ("gateway", "mlflow"), ("secret", "mlflow-tls")]:
        assert not exists(kubectl, kind, name), f"{kind}/{name} left"
    svc = service(kubectl)
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"][0]["nodePort"] == NODE_PORT
    host = f"{env['NODE_IP']}:{NODE_PORT}"
    assert host in allowed_hosts(kubectl)
    round_trip(env, kubectl, f"http://{host}")


def test_loadbalancer_answers_a_client_on_the_assigned_address(
    env: dict[str, str], kubectl: Kubectl, tmp_path: Path
) -> None:
    deploy_converged(tmp_path, **LOADBALANCER)
    svc = service(kubectl)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.89.0.0/24"]
    assert svc["status"]["loadBalancer"]["ingress"][0]["ip"] == LB_ADDRESS
    hosts = allowed_hosts(kubectl)
    assert f"{LB_ADDRESS}:5000" in hosts
    assert not any(host.endswith(f":{NODE_PORT}") for host in hosts)
    round_trip(env, kubectl, f"http://{LB_ADDRESS}:5000")


def test_switching_back_to_ingress_releases_the_node_port_and_the_address(
    env: dict[str, str], kubectl: Kubectl, tmp_path: Path
) -> None:
    deploy_converged(tmp_path, mlflow_expose="ingress")
    assert_cluster_ip_only(kubectl)
    assert not any(host.startswith(LB_ADDRESS) for host in allowed_hosts(kubectl))
    assert exists(kubectl, "ingress")


# ingress is covered by test_uninstall.py; nodeport's only object is the Service loadbalancer also has.
@pytest.mark.parametrize("mode", ["httproute", "loadbalancer"])
def test_uninstall_removes_what_the_mode_created(
    env: dict[str, str], kubectl: Kubectl, tmp_path: Path, mode: str
) -> None:
    extra: dict[str, object] = LOADBALANCER if mode == "loadbalancer" else {"mlflow_expose": mode}
    # 19 removed the OIDC client secret with the other Secrets: 10 stores it again (as site.yml would).
    keycloak = playbook(tmp_path, "playbooks/10_configure_keycloak.yaml")
    assert keycloak.returncode == 0, keycloak.output[-3000:]
    deploy(tmp_path, **extra)
    removed = playbook(tmp_path, "playbooks/19_uninstall.yaml", **extra)
    assert removed.returncode == 0, removed.output[-3000:]
    for kind, name in [("ingress", "mlflow"), ("httproute", "mlflow"), ("service", "mlflow"), ("secret", "mlflow-tls")]:
        assert not exists(kubectl, kind, name), f"{kind}/{name} left after 19 ({mode})"
    assert not exists(kubectl, "deployment")
    if mode == "loadbalancer":
        # MetalLB gives the address back to its pool: another Service can have it.
        probe = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "address-probe",
                "namespace": NAME,
                "annotations": {"metallb.io/loadBalancerIPs": LB_ADDRESS},
            },
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"none": "none"}},
        }
        kubectl.apply(probe)
        try:
            wait_for(
                "the released address to be assigned again",
                lambda: (service_status(kubectl, "address-probe").get("ingress") or [{}])[0].get("ip") == LB_ADDRESS,
                timeout=60,
            )
        finally:
            kubectl.run("-n", NAME, "delete", "service", "address-probe", "--ignore-not-found")


def service_status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return (kubectl.get("service", name, NAME).get("status") or {}).get("loadBalancer") or {}
