"""playbooks/17_configure_discovery.yaml against the local stack, the way an installer runs it.

MLflow is deployed in namespace ``mlflow`` (make deploy). One module-scoped fixture runs the playbook
first without code-server (the workstation part must change nothing), then with a stand-in code-server:
a Deployment of the stack's tools image (bash, fish, curl) in namespace ``code-server`` on the node,
with a user ConfigMap and a Secret holding the user's password in ``envFrom``. The stand-in's command
sources both helper scripts from the mounted ConfigMap when they are there and logs whether each got a
token, so the restarted pod proves the delivery: mount, environment, the client secret of the
confidential client and a real token from the local Keycloak. A second
run and a ``--check --diff`` run must report ``changed=0``. The code-server namespace belongs to the test:
it is deleted before (a leftover of an interrupted run) and after.

Needs the local stack (``make up``) with MLflow deployed (``make deploy``); skipped without it, failed
when ``CI=true``.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT, Kubectl, restricted_container, unavailable

PLAYBOOK = "playbooks/17_configure_discovery.yaml"
NAMESPACE = "mlflow"
CODE_SERVER = "code-server"
HELPERS = "/etc/mlflow-helpers"
RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
# The stand-in code-server: sources the mounted helpers (if any) with the credentials from its own
# Secret, logs the outcome, then idles like an editor would.
STAND_IN = f"""
if [ -r {HELPERS}/mlflow-auth.sh ]; then
  ( . {HELPERS}/mlflow-auth.sh && echo "bash token ${{#MLFLOW_TRACKING_TOKEN}} chars for $MLFLOW_TRACKING_URI" )
  fish -c 'source {HELPERS}/mlflow-auth.fish; and echo "fish token" (string length -- $MLFLOW_TRACKING_TOKEN) chars'
else
  echo "no helpers"
fi
exec sleep 3600
"""


@dataclass
class Run:
    returncode: int
    output: str

    @property
    def changed(self) -> int:
        found = RECAP.findall(self.output)
        assert found, f"no PLAY RECAP in the output:\n{self.output[-3000:]}"
        return sum(int(host[1]) for host in found)

    def task_results(self, role: str) -> list[str]:
        """The result lines (ok/changed/skipping) of every task of one role."""
        results = []
        for block in self.output.split("TASK [")[1:]:
            if block.startswith(f"mlstack.mlflow.{role} :"):
                results += re.findall(r"^(ok|changed|skipping|failed|fatal):", block, re.MULTILINE)
        return results


def ansible_playbook() -> str:
    here = Path(sys.executable).parent / "ansible-playbook"
    return str(here) if here.exists() else (shutil.which("ansible-playbook") or "ansible-playbook")


def run_playbook(*args: str) -> Run:
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "with-stack-env"), ansible_playbook(), "-i", "inventory/local", PLAYBOOK, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return Run(result.returncode, result.stdout + result.stderr)


def secret_data(kubectl: Kubectl, name: str, namespace: str = NAMESPACE) -> dict[str, str]:
    data = kubectl.get("secret", name, namespace).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def differing_keys(actual: dict[str, str], expected: dict[str, str]) -> list[str]:
    """Keys whose values differ, so a failing assertion names keys and never prints a secret."""
    return sorted(key for key in set(actual) | set(expected) if actual.get(key) != expected.get(key))


def delete_code_server(kubectl: Kubectl) -> None:
    kubectl.run("delete", "namespace", CODE_SERVER, "--ignore-not-found", "--wait=true", "--timeout=180s")


def stand_in_code_server(login: dict[str, str], image: str) -> list[dict[str, Any]]:
    container = restricted_container("code-server", image, ["bash", "-c", STAND_IN])
    container["imagePullPolicy"] = "Never"  # imported into the node's containerd, never pulled
    container["envFrom"] = [{"configMapRef": {"name": "user-env"}}, {"secretRef": {"name": "user-mlflow-login"}}]
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": CODE_SERVER, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "user-env", "namespace": CODE_SERVER},
            "data": {"EDITOR": "vim"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "user-mlflow-login", "namespace": CODE_SERVER},
            "stringData": login,
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": CODE_SERVER, "namespace": CODE_SERVER},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": CODE_SERVER}},
                "template": {
                    "metadata": {"labels": {"app": CODE_SERVER}},
                    "spec": {
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [container],
                    },
                },
            },
        },
    ]


@pytest.fixture(scope="module")
def deployed(stack_env: dict[str, str], kubectl: Kubectl) -> dict[str, str]:
    """The local MLflow's OIDC client secret (the stack deploys with mlflow_auth_mode=oidc)."""
    if kubectl.run("-n", NAMESPACE, "get", "deployment", "mlflow", check=False).returncode != 0:
        unavailable(f"MLflow is not deployed in namespace {NAMESPACE}: run `make deploy`")
    if kubectl.run("-n", NAMESPACE, "get", "secret", "mlflow-oidc", check=False).returncode != 0:
        unavailable("mlflow/mlflow-oidc is missing: the local stack deploys with mlflow_auth_mode=oidc (make deploy)")
    for key in ("ADMIN_PASSWORD", "PLATFORM_ADMIN_PASSWORD", "KEYCLOAK_URL"):
        if key not in stack_env:
            unavailable(f"stack.env lacks {key}")
    return {"client_secret": secret_data(kubectl, "mlflow-oidc")["OIDC_CLIENT_SECRET"]}


def logs(kubectl: Kubectl) -> str:
    return kubectl.run("-n", CODE_SERVER, "logs", f"deployment/{CODE_SERVER}", check=False).stdout


@pytest.fixture(scope="module")
def runs(stack_env: dict[str, str], kubectl: Kubectl, deployed: dict[str, str]) -> Iterator[dict[str, Any]]:
    found: dict[str, Any] = {}
    delete_code_server(kubectl)
    try:
        found["without_code_server"] = run_playbook()
        found["code_server_after_none"] = kubectl.run("get", "namespace", CODE_SERVER, check=False).returncode == 0
        # The user's own password; the client secret must come from the playbook.
        login = {"MLFLOW_AUTH_PASSWORD": stack_env["PLATFORM_ADMIN_PASSWORD"]}
        kubectl.apply(*stand_in_code_server(login, stack_env["MLSTACK_TOOLS_IMAGE"]))
        rollout = kubectl.run("-n", CODE_SERVER, "rollout", "status", f"deployment/{CODE_SERVER}", "--timeout=180s")
        assert "successfully rolled out" in rollout.stdout
        found["logs_before"] = logs(kubectl)
        found["first"] = run_playbook("--diff")
        found["second"] = run_playbook()
        found["check"] = run_playbook("--check", "--diff")
        found["deployment"] = kubectl.get("deployment", CODE_SERVER, CODE_SERVER)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "fish token" not in (found.setdefault("logs_after", "") or ""):
            time.sleep(2)
            found["logs_after"] = logs(kubectl)
        yield found
    finally:
        delete_code_server(kubectl)


def test_without_code_server_the_workstation_part_changes_nothing(runs: dict[str, Any]) -> None:
    run = runs["without_code_server"]
    assert run.returncode == 0, run.output[-4000:]
    assert f"No Deployment {CODE_SERVER}/{CODE_SERVER}" in run.output
    results = run.task_results("workstation")
    assert results and "changed" not in results, results
    assert runs["code_server_after_none"] is False


def test_discovery_configmap_has_the_labels_and_the_service(
    runs: dict[str, Any], kubectl: Kubectl, stack_env: dict[str, str]
) -> None:
    configmap = kubectl.get("configmap", "thinkube-service-config", NAMESPACE)
    labels = configmap["metadata"]["labels"]
    assert labels["thinkube.io/managed"] == "true"
    assert labels["thinkube.io/service-type"] == "core"
    assert labels["thinkube.io/service-name"] == "mlflow"
    service = yaml.safe_load(configmap["data"]["service.yaml"])["service"]
    host = f"https://mlflow.{stack_env['DOMAIN_NAME']}"
    assert service["name"] == "mlflow"
    assert service["display_name"] == "MLflow"
    assert service["category"] == "ai"
    assert service["icon"] == "/icons/tk_ai.svg"
    assert service["endpoints"][0]["url"] == host
    assert service["endpoints"][0]["health_url"] == f"{host}/health"
    assert service["endpoints"][0]["primary"] is True
    assert service["dependencies"] == ["postgres", "seaweedfs", "keycloak"]
    assert service["scaling"] == {
        "resource_type": "deployment",
        "resource_name": "mlflow",
        "namespace": NAMESPACE,
        "min_replicas": 1,
        "can_disable": True,
    }
    token_url = f"{stack_env['KEYCLOAK_URL']}/realms/{stack_env['KEYCLOAK_REALM']}/protocol/openid-connect/token"
    assert service["environment"] == {
        "MLFLOW_TRACKING_URI": host,
        "MLFLOW_KEYCLOAK_TOKEN_URL": token_url,
        "MLFLOW_KEYCLOAK_CLIENT_ID": "mlflow",
        "MLFLOW_AUTH_USERNAME": stack_env["PLATFORM_ADMIN_USER"],
    }
    assert service["credentials_secret"] == {
        "name": "mlflow-discovery-credentials",
        "namespace": NAMESPACE,
        "keys": ["MLFLOW_AUTH_PASSWORD", "MLFLOW_KEYCLOAK_CLIENT_SECRET"],
    }


def test_credentials_are_in_the_secret(
    runs: dict[str, Any], kubectl: Kubectl, stack_env: dict[str, str], deployed: dict[str, str]
) -> None:
    expected = {
        # The platform admin's Keycloak password: ADMIN_PASSWORD on a real platform; locally the
        # inventory sets mlflow_discovery_auth_password to PLATFORM_ADMIN_PASSWORD.
        "MLFLOW_AUTH_PASSWORD": stack_env["PLATFORM_ADMIN_PASSWORD"],
        "MLFLOW_KEYCLOAK_CLIENT_SECRET": deployed["client_secret"],
    }
    assert differing_keys(secret_data(kubectl, "mlflow-discovery-credentials"), expected) == []


def test_code_server_gets_the_client_secret_and_no_password(
    runs: dict[str, Any], kubectl: Kubectl, deployed: dict[str, str]
) -> None:
    expected = {"MLFLOW_KEYCLOAK_CLIENT_SECRET": deployed["client_secret"]}
    assert differing_keys(secret_data(kubectl, "mlflow-client-credentials", CODE_SERVER), expected) == []


def test_no_secret_value_in_a_configmap_or_the_output(
    runs: dict[str, Any], kubectl: Kubectl, stack_env: dict[str, str], deployed: dict[str, str]
) -> None:
    values = [stack_env["ADMIN_PASSWORD"], stack_env["PLATFORM_ADMIN_PASSWORD"], deployed["client_secret"]]
    configmaps = [kubectl.get("configmap", "thinkube-service-config", NAMESPACE)] + [
        kubectl.get("configmap", name, CODE_SERVER) for name in ("mlflow-helpers", "mlflow-client-env")
    ]
    text = json.dumps([configmap["data"] for configmap in configmaps])
    for value in values:
        assert value not in text
    for name in ("without_code_server", "first", "second", "check"):
        for value in values:
            assert value not in runs[name].output, f"a secret leaked into the {name} run's output"


def test_helpers_and_environment_configmaps(runs: dict[str, Any], kubectl: Kubectl, stack_env: dict) -> None:
    helpers = kubectl.get("configmap", "mlflow-helpers", CODE_SERVER)["data"]
    assert set(helpers) == {"mlflow-auth.sh", "mlflow-auth.fish"}
    user = stack_env["PLATFORM_ADMIN_USER"]
    assert f"_mlflow_auth_default_username={user}" in helpers["mlflow-auth.sh"]
    assert f"\"$MLFLOW_AUTH_USERNAME\" '{user}'" in helpers["mlflow-auth.fish"]
    environment = kubectl.get("configmap", "mlflow-client-env", CODE_SERVER)["data"]
    assert environment == {
        "MLFLOW_TRACKING_URI": f"https://mlflow.{stack_env['DOMAIN_NAME']}",
        "MLFLOW_KEYCLOAK_TOKEN_URL": (
            f"{stack_env['KEYCLOAK_URL']}/realms/{stack_env['KEYCLOAK_REALM']}/protocol/openid-connect/token"
        ),
        "MLFLOW_KEYCLOAK_CLIENT_ID": "mlflow",
        "MLFLOW_AUTH_USERNAME": user,
        "MLFLOW_HELPERS_DIR": HELPERS,
    }


def test_code_server_is_patched_and_available_again(runs: dict[str, Any]) -> None:
    run = runs["first"]
    assert run.returncode == 0, run.output[-4000:]
    assert run.changed > 0
    deployment = runs["deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "mlflow-helpers", "configMap": {"name": "mlflow-helpers", "defaultMode": 0o444}} in pod["volumes"]
    assert {"name": "mlflow-helpers", "mountPath": HELPERS, "readOnly": True} in container["volumeMounts"]
    # The container's own envFrom entries are kept, ours is added once.
    assert container["envFrom"] == [
        {"configMapRef": {"name": "user-env"}},
        {"secretRef": {"name": "user-mlflow-login"}},
        {"configMapRef": {"name": "mlflow-client-env"}},
        {"secretRef": {"name": "mlflow-client-credentials", "optional": True}},
    ]
    status = deployment["status"]
    assert status.get("observedGeneration") == deployment["metadata"]["generation"]
    assert status.get("updatedReplicas") == status.get("availableReplicas") == 1
    available = {c["type"]: c["status"] for c in status["conditions"]}
    assert available["Available"] == "True"


def test_the_restarted_pod_gets_tokens_with_the_mounted_helpers(runs: dict[str, Any]) -> None:
    assert "no helpers" in runs["logs_before"]
    after = runs["logs_after"]
    assert re.search(r"^bash token \d{3,} chars for https://mlflow\.", after, re.MULTILINE), after
    assert re.search(r"^fish token \d{3,} chars$", after, re.MULTILINE), after
    assert "mlflow-auth:" not in after  # no error line from either script


def test_second_run_and_check_change_nothing(runs: dict[str, Any]) -> None:
    for name in ("second", "check"):
        assert runs[name].returncode == 0, runs[name].output[-4000:]
        assert runs[name].changed == 0, runs[name].output[-4000:]
