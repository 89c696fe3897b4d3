"""The local stack's components are real: each accepts the right credentials and refuses wrong ones."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from .conftest import Kubectl


def test_server_reports_the_built_version(kubectl: Kubectl) -> None:
    version = json.loads(kubectl.run("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"].startswith("v1.35.")


def test_restricted_namespace_rejects_a_privileged_pod(kubectl: Kubectl, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {
            "containers": [{"name": "bad", "image": "registry.invalid/bad:1", "securityContext": {"privileged": True}}]
        },
    }
    result = kubectl.apply(pod, check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted' in result.stderr


def _psql(env: dict[str, str], password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-w", "-At", "-c", "select current_user"],  # noqa: S607
        env={
            "PATH": "/usr/bin:/bin",
            "PGHOST": env["PGHOST"],
            "PGPORT": env["PGPORT"],
            "PGUSER": env["PGUSER"],
            "PGPASSWORD": password,
            "PGDATABASE": "postgres",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_postgres_accepts_the_password_and_refuses_a_wrong_one(stack_env: dict[str, str]) -> None:
    good = _psql(stack_env, stack_env["PGPASSWORD"])
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == stack_env["PGUSER"]
    bad = _psql(stack_env, stack_env["PGPASSWORD"] + "x")
    assert bad.returncode != 0
    assert "password authentication failed" in bad.stderr


def _s3(env: dict[str, str], secret: str):  # noqa: ANN202
    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["S3_ACCESS_KEY"],
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_s3_creates_and_lists_a_bucket_and_refuses_a_wrong_secret(stack_env: dict[str, str]) -> None:
    bucket = f"it-{uuid.uuid4().hex[:8]}"
    s3 = _s3(stack_env, stack_env["S3_SECRET_KEY"])
    s3.create_bucket(Bucket=bucket)
    try:
        assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        with pytest.raises(ClientError) as refused:
            _s3(stack_env, stack_env["S3_SECRET_KEY"] + "x").list_buckets()
        assert refused.value.response["Error"]["Code"] in (
            "SignatureDoesNotMatch",
            "AccessDenied",
            "InvalidAccessKeyId",
        )
    finally:
        s3.delete_bucket(Bucket=bucket)


def _token(env: dict[str, str], password: str) -> tuple[int, dict]:
    body = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": env["PLATFORM_ADMIN_USER"],
            "password": password,
        }
    ).encode()
    url = f"{env['KEYCLOAK_URL']}/realms/{env['KEYCLOAK_REALM']}/protocol/openid-connect/token"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_keycloak_issues_a_password_grant_token(stack_env: dict[str, str]) -> None:
    status, payload = _token(stack_env, stack_env["PLATFORM_ADMIN_PASSWORD"])
    assert status == 200
    claims = json.loads(base64.urlsafe_b64decode(payload["access_token"].split(".")[1] + "=="))
    assert claims["iss"].endswith(f"/realms/{stack_env['KEYCLOAK_REALM']}")
    status, payload = _token(stack_env, stack_env["PLATFORM_ADMIN_PASSWORD"] + "x")
    # RFC 6749 5.2: invalid_grant is a 400 (older Keycloak releases answered 401).
    assert status in (400, 401)
    assert payload.get("error") == "invalid_grant"


def _registry(env: dict[str, str], auth: tuple[str, str] | None) -> int:
    request = urllib.request.Request(f"{env['REGISTRY_URL']}/v2/")
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_registry_requires_credentials(stack_env: dict[str, str]) -> None:
    assert _registry(stack_env, None) == 401
    assert _registry(stack_env, (stack_env["REGISTRY_USER"], stack_env["REGISTRY_PASSWORD"] + "x")) == 401
    assert _registry(stack_env, (stack_env["REGISTRY_USER"], stack_env["REGISTRY_PASSWORD"])) == 200


def test_generated_passwords_contain_hostile_characters(stack_env: dict[str, str]) -> None:
    for key in (
        "PGPASSWORD",
        "S3_SECRET_KEY",
        "KEYCLOAK_ADMIN_PASSWORD",
        "PLATFORM_ADMIN_PASSWORD",
        "REGISTRY_PASSWORD",
    ):
        assert all(char in stack_env[key] for char in "@:/%#?"), key


def test_stack_env_is_private(stack_env: dict[str, str]) -> None:
    from .conftest import state_dir

    assert (state_dir() / "stack.env").stat().st_mode & 0o077 == 0
