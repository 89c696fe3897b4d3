"""19_uninstall keeps the data unless mlflow_purge is true, and a new deploy finds the old runs.

The keep-and-redeploy test runs as users of the installed collection do: the tarball built and
installed outside the checkout, playbooks by name (``mlstack.mlflow.site``, ``mlstack.mlflow.19_rollback``,
the installers' name for the uninstall, same contract).
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import psycopg2
import pytest
from botocore.config import Config

from .conftest import Kubectl, run_playbook, service_url

NAME = "mlflow-u"
SCENARIO = {
    "mlflow_namespace": NAME,
    "mlflow_hostname": f"{NAME}.mlstack.test",
    "mlflow_db_name": "mlflow_u",
    "mlflow_auth_db_name": "mlflow_u_auth",
    "mlflow_db_user": "mlflow_u",
    "mlflow_artifacts_bucket": NAME,
    "mlflow_client_id": NAME,
    "mlflow_oidc_admin_group": f"{NAME}-admin",
    "mlflow_oidc_user_group": f"{NAME}-user",
}


def playbook(
    tmp_path: Path, name: str, *args: str, installed: Path | None = None, **extra: object
) -> subprocess.CompletedProcess[str]:
    return run_playbook(tmp_path, name, {**SCENARIO, **extra}, *args, installed=installed)


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
    with urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=15) as response:
        return json.loads(response.read())["access_token"]


def mlflow_api(env: dict[str, str], kubectl: Kubectl, path: str, payload: dict) -> dict:
    request = urllib.request.Request(
        service_url(kubectl, NAME) + "/api/2.0/mlflow" + path,
        data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {token(env, kubectl)}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def database_exists(env: dict[str, str], name: str) -> bool:
    with (
        psycopg2.connect(
            host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"], dbname="postgres"
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute("select 1 from pg_database where datname = %s", (name,))
        return cursor.fetchone() is not None


def s3_client(env: dict[str, str]):  # noqa: ANN201 - a boto3 client
    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["S3_ACCESS_KEY"],
        aws_secret_access_key=env["S3_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def bucket_exists(env: dict[str, str], name: str = NAME) -> bool:
    return name in [bucket["Name"] for bucket in s3_client(env).list_buckets()["Buckets"]]


def test_a_purge_keeps_a_bucket_the_collection_did_not_create(stack_env: dict[str, str], tmp_path: Path) -> None:
    """Someone else's bucket: the purge empties the MLflow prefixes (artifacts, backups) and keeps the rest."""
    foreign = f"{NAME}-foreign"
    s3 = s3_client(stack_env)
    s3.create_bucket(Bucket=foreign)
    for key in ("artifacts/1/model.pkl", "backups/b1/mlflow.dump", "theirs/data.csv"):
        s3.put_object(Bucket=foreign, Key=key, Body=b"x")
    try:
        result = playbook(tmp_path, "playbooks/19_uninstall.yaml", mlflow_purge=True, mlflow_artifacts_bucket=foreign)
        assert result.returncode == 0, result.stdout[-3000:]
        assert bucket_exists(stack_env, foreign)
        keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=foreign).get("Contents", [])]
        assert keys == ["theirs/data.csv"]
        assert f"Kept bucket {foreign}: the collection did not create it" in " ".join(result.stdout.split())
    finally:
        for obj in s3.list_objects_v2(Bucket=foreign).get("Contents", []):
            s3.delete_object(Bucket=foreign, Key=obj["Key"])
        s3.delete_bucket(Bucket=foreign)


@pytest.fixture
def clean(tmp_path: Path):  # noqa: ANN201
    playbook(tmp_path, "playbooks/19_uninstall.yaml", mlflow_purge=True)
    yield
    result = playbook(tmp_path, "playbooks/19_uninstall.yaml", mlflow_purge=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_rollback_keeps_data_and_a_new_deploy_finds_old_runs(
    stack_env: dict[str, str], kubectl: Kubectl, tmp_path: Path, clean: None, installed_collection: Path
) -> None:
    deployed = playbook(tmp_path, "mlstack.mlflow.site", "--tags", "mlflow", installed=installed_collection)
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    experiment = mlflow_api(stack_env, kubectl, "/experiments/create", {"name": "kept-across-uninstall"})

    data = kubectl.get("secret", "mlflow-db", NAME)["data"]
    removed = playbook(tmp_path, "mlstack.mlflow.19_rollback", "-vvv", installed=installed_collection)
    assert removed.returncode == 0, removed.stdout[-3000:]
    # At any verbosity: no Secret's data, encoded or not, in the output.
    for encoded in (data["password"], data["MLFLOW_BACKEND_STORE_URI"]):
        assert encoded not in removed.stdout
        assert base64.b64decode(encoded).decode() not in removed.stdout
    assert kubectl.run("-n", NAME, "get", "deployment", "mlflow", check=False).returncode != 0
    assert kubectl.run("-n", NAME, "get", "secret", "mlflow-db", check=False).returncode != 0
    claims = json.loads(kubectl.run("-n", NAME, "get", "pvc", "-o", "json").stdout)["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["mlflow-models", "mlflow-storage"]
    assert database_exists(stack_env, "mlflow_u")
    assert bucket_exists(stack_env)

    redeployed = playbook(tmp_path, "mlstack.mlflow.site", "--tags", "mlflow", installed=installed_collection)
    assert redeployed.returncode == 0, redeployed.stdout[-3000:]
    found = mlflow_api(
        stack_env, kubectl, "/experiments/search", {"filter": "name = 'kept-across-uninstall'", "max_results": 1}
    )
    assert found["experiments"][0]["experiment_id"] == experiment["experiment_id"]

    purged = playbook(tmp_path, "playbooks/19_uninstall.yaml", mlflow_purge=True)
    assert purged.returncode == 0, purged.stdout[-3000:]
    assert kubectl.run("get", "namespace", NAME, check=False).returncode != 0
    assert not database_exists(stack_env, "mlflow_u")
    assert not bucket_exists(stack_env)
