"""A hostile admin password, passed the documented way (exported, as an installer does), works end to end.

The password holds quotes, ``$``, ``%``, a backslash, spaces and Jinja braces. It is the PostgreSQL
admin's password (a superuser made for this test), MLflow's basic-auth admin password and the password
18_test logs in with. The deploy, its re-run, 18_test and the purge succeed; MLflow accepts it and refuses
it changed; it is in no task output, ConfigMap or container argument.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from psycopg2 import sql

from .conftest import Kubectl, admin_sql, changed_count, run_playbook, service_url

NAME = "mlflow-h"
HOSTILE = "q'\"uo $HOME %41%% \\back slash {{ lookup('env', 'HOME') }} {% raw %}#!`id`"
ADMIN = "mlflow_h_admin"
SCENARIO = {
    "mlflow_namespace": NAME,
    "mlflow_hostname": f"{NAME}.mlstack.test",
    "mlflow_db_name": "mlflow_h",
    "mlflow_auth_db_name": "mlflow_h_auth",
    "mlflow_db_user": "mlflow_h",
    "mlflow_artifacts_bucket": NAME,
    "mlflow_auth_mode": "basic",
}
ENVIRONMENT = {"PGUSER": ADMIN, "PGPASSWORD": HOSTILE, "ADMIN_PASSWORD": HOSTILE, "PLATFORM_ADMIN_PASSWORD": HOSTILE}


def playbook(tmp_path: Path, name: str, *args: str, **extra: object) -> subprocess.CompletedProcess[str]:
    return run_playbook(tmp_path, name, {**SCENARIO, **extra}, *args, environment=ENVIRONMENT)


def search(kubectl: Kubectl, user: str, password: str) -> int:
    request = urllib.request.Request(
        service_url(kubectl, NAME) + "/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1}).encode(),
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def hostile_admin(stack_env: dict[str, str], tmp_path: Path):  # noqa: ANN201
    admin_sql(stack_env, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ADMIN)))
    admin_sql(stack_env, sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD %s").format(sql.Identifier(ADMIN)), HOSTILE)
    yield
    purged = playbook(tmp_path, "playbooks/19_uninstall.yaml", mlflow_purge=True)
    admin_sql(stack_env, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ADMIN)))
    assert purged.returncode == 0, purged.stdout[-3000:]
    assert HOSTILE not in purged.stdout


def test_a_hostile_admin_password_deploys_logs_in_and_never_shows(
    stack_env: dict[str, str], kubectl: Kubectl, tmp_path: Path, hostile_admin: None
) -> None:
    deployed = playbook(tmp_path, "site.yml", "--tags", "mlflow")
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    rerun = playbook(tmp_path, "site.yml", "--tags", "mlflow")
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert changed_count(rerun.stdout) == 0, rerun.stdout[-3000:]
    tested = playbook(tmp_path, "playbooks/18_test.yaml")
    assert tested.returncode == 0, tested.stdout[-3000:]
    for result in (deployed, rerun, tested):
        assert HOSTILE not in result.stdout + result.stderr

    user = stack_env["PLATFORM_ADMIN_USER"]
    assert search(kubectl, user, HOSTILE) == 200
    assert search(kubectl, user, HOSTILE + "x") == 401

    configmaps = kubectl.run("-n", NAME, "get", "configmap", "-o", "json").stdout
    assert HOSTILE not in configmaps and json.dumps(HOSTILE)[1:-1] not in configmaps
    for container in kubectl.get("deployment", "mlflow", NAME)["spec"]["template"]["spec"]["containers"]:
        words = container.get("command", []) + container.get("args", [])
        words += [item.get("value", "") for item in container.get("env", [])]
        assert not [word for word in words if HOSTILE in word or "$HOME" in word], container["name"]
