"""SSO end to end on the local stack: Keycloak login in a real browser, bearer tokens, refusals.

The deploy (make deploy / the local inventory) runs MLflow with mlflow_auth_mode=oidc behind the local
ingress (Traefik on 127.0.0.1:443 with the platform's wildcard certificate).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Browser
from playwright.sync_api import Error as PlaywrightError

from .conftest import REPO_ROOT, Kubectl, service_url, state_dir, unavailable, wait_for

PUBLIC_HOST = "mlflow.mlstack.test"
NAMESPACE = "mlflow"


@pytest.fixture(scope="module")
def deployment(stack_env: dict[str, str], kubectl: Kubectl) -> dict[str, str]:
    """Where the deployed MLflow answers, and its OIDC client secret."""
    if kubectl.run("-n", NAMESPACE, "get", "service", "mlflow", check=False).returncode != 0:
        unavailable("MLflow is not deployed on the local stack: run `make deploy`")
    secret = kubectl.get("secret", "mlflow-oidc", NAMESPACE)["data"]["OIDC_CLIENT_SECRET"]
    return {
        "uri": service_url(kubectl, NAMESPACE),
        "client_secret": base64.b64decode(secret).decode(),
    }


def token_for(stack_env: dict[str, str], deployment: dict[str, str], user: str, password: str) -> str:
    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": "mlflow",
            "client_secret": deployment["client_secret"],
            "username": user,
            "password": password,
            "scope": "openid",
        }
    ).encode()
    url = f"{stack_env['KEYCLOAK_URL']}/realms/{stack_env['KEYCLOAK_REALM']}/protocol/openid-connect/token"
    with urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=15) as response:
        return json.loads(response.read())["access_token"]


def status_of(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_request_without_a_token_is_refused(deployment: dict[str, str]) -> None:
    assert status_of(deployment["uri"] + "/api/2.0/mlflow/experiments/search?max_results=1") == 401


def test_health_stays_open(deployment: dict[str, str]) -> None:
    assert status_of(deployment["uri"] + "/health") == 200


def test_user_without_an_mlflow_role_is_refused(stack_env: dict[str, str], deployment: dict[str, str]) -> None:
    token = token_for(stack_env, deployment, stack_env["PLATFORM_USER"], stack_env["PLATFORM_USER_PASSWORD"])
    url = deployment["uri"] + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert status_of(url, token) in (401, 403)


def test_admin_token_lets_the_mlflow_client_log_a_run(stack_env: dict[str, str], deployment: dict[str, str]) -> None:
    token = token_for(stack_env, deployment, stack_env["PLATFORM_ADMIN_USER"], stack_env["PLATFORM_ADMIN_PASSWORD"])
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "MLFLOW_TRACKING_URI": deployment["uri"],
        "MLFLOW_TRACKING_TOKEN": token,
        "MLFLOW_BUCKET": "mlflow",
        "S3_ENDPOINT_URL": stack_env["S3_ENDPOINT_URL"],
        "S3_ACCESS_KEY": stack_env["S3_ACCESS_KEY"],
        "S3_SECRET_KEY": stack_env["S3_SECRET_KEY"],
    }
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "hack" / "mlflow_roundtrip.py")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    created = json.loads(result.stdout.strip().splitlines()[-1])
    assert any(key.endswith("/model.bin") for key in created["bucket_keys"])


def test_admin_logs_in_through_keycloak_in_a_real_browser(
    stack_env: dict[str, str], deployment: dict[str, str], kubectl: Kubectl
) -> None:
    from playwright.sync_api import sync_playwright

    if not Path("/usr/bin/chromium").exists():
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    https_port = stack_env.get("INGRESS_HTTPS_PORT", "443")
    artifacts = state_dir() / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
                # The public name reaches the local ingress, as DNS would in production.
                f"--host-resolver-rules=MAP {PUBLIC_HOST} 127.0.0.1:{https_port}",
            ],
        )
        try:
            # Chromium aborts a navigation with ERR_NETWORK_CHANGED when the machine's interfaces change,
            # and on the node they do whenever a pod's veth comes or goes (the namespaces of earlier
            # tests are still being torn down). Let those settle, then allow a bounded retry.
            wait_for("earlier test namespaces to be gone", lambda: not terminating_namespaces(kubectl), timeout=180)
            for attempt in range(3):
                try:
                    log_in(browser, stack_env, artifacts)
                    break
                except PlaywrightError as err:
                    if "ERR_NETWORK_CHANGED" not in str(err) or attempt == 2:
                        raise
        finally:
            browser.close()


def terminating_namespaces(kubectl: Kubectl) -> list[str]:
    items = json.loads(kubectl.run("get", "namespaces", "-o", "json").stdout)["items"]
    return [n["metadata"]["name"] for n in items if n.get("status", {}).get("phase") == "Terminating"]


def log_in(browser: Browser, stack_env: dict[str, str], artifacts: Path) -> None:
    """Open the UI, log in on Keycloak's page, and land in MLflow; screenshots in ``artifacts``."""
    # Chromium has its own trust store; the certificate itself is checked by the ingress tests.
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    try:
        page.goto(f"https://{PUBLIC_HOST}/", wait_until="domcontentloaded", timeout=60_000)
        page.wait_for_selector("#username", timeout=60_000)
        assert page.url.startswith(stack_env["KEYCLOAK_URL"]), page.url
        page.fill("#username", stack_env["PLATFORM_ADMIN_USER"])
        page.fill("#password", stack_env["PLATFORM_ADMIN_PASSWORD"])
        page.click("#kc-login")
        page.wait_for_url(f"https://{PUBLIC_HOST}/**", timeout=60_000)
        # The UI keeps polling, so wait for content rather than for the network to go idle.
        page.get_by_text("Experiments").first.wait_for(timeout=60_000)
        page.get_by_text("Logout").first.wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / "oidc-login.png"), full_page=True)
        assert page.url.startswith(f"https://{PUBLIC_HOST}/")
    finally:
        page.screenshot(path=str(artifacts / "oidc-login-last.png"))
        context.close()


def test_a_200_mb_artifact_goes_up_through_the_public_host(
    stack_env: dict[str, str], deployment: dict[str, str]
) -> None:
    """Through Traefik (the Ingress's unlimited body size honoured) and MLflow's proxy into the bucket."""
    import hashlib
    import http.client
    import socket
    import ssl

    import boto3
    from botocore.config import Config

    token = token_for(stack_env, deployment, stack_env["PLATFORM_ADMIN_USER"], stack_env["PLATFORM_ADMIN_PASSWORD"])
    context = ssl.create_default_context(cafile=stack_env["MLSTACK_CA_CERT"])
    address = ("127.0.0.1", int(stack_env.get("INGRESS_HTTPS_PORT", "443")))

    def call(method: str, path: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPSConnection(PUBLIC_HOST, address[1], context=context, timeout=600)
        # Like curl --resolve: the public name (SNI, Host, certificate check), the ingress's address.
        connection._create_connection = lambda *_args, **_kw: socket.create_connection(address, timeout=600)  # type: ignore[attr-defined]
        try:
            sent = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    status, body = call("POST", "/api/2.0/mlflow/experiments/create", json.dumps({"name": f"big-{os.getpid()}"}))
    assert status == 200, body[:300]
    experiment_id = json.loads(body)["experiment_id"]
    status, body = call("POST", "/api/2.0/mlflow/runs/create", json.dumps({"experiment_id": experiment_id}))
    run_id = json.loads(body)["run"]["info"]["run_id"]
    size, block = 200 * 1024 * 1024, os.urandom(1024 * 1024)
    digest = hashlib.sha256()

    def chunks():  # noqa: ANN202
        for _ in range(size // len(block)):
            digest.update(block)
            yield block

    path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/big.bin"
    status, body = call(
        "PUT", path, chunks(), {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    )
    assert status == 200, body[:300]
    s3 = boto3.client(
        "s3",
        endpoint_url=stack_env["S3_ENDPOINT_URL"],
        aws_access_key_id=stack_env["S3_ACCESS_KEY"],
        aws_secret_access_key=stack_env["S3_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    stored = s3.head_object(Bucket="mlflow", Key=f"artifacts/{experiment_id}/{run_id}/artifacts/big.bin")
    assert stored["ContentLength"] == size
    streamed = hashlib.sha256()
    for part in s3.get_object(Bucket="mlflow", Key=f"artifacts/{experiment_id}/{run_id}/artifacts/big.bin")[
        "Body"
    ].iter_chunks(1024 * 1024):
        streamed.update(part)
    assert streamed.hexdigest() == digest.hexdigest()
    call("POST", "/api/2.0/mlflow/experiments/delete", json.dumps({"experiment_id": experiment_id}))


def test_a_new_user_with_the_mlflow_role_sees_nothing_they_were_not_granted(
    stack_env: dict[str, str], deployment: dict[str, str]
) -> None:
    """Deny by default (mlflow_oidc_default_permission NO_PERMISSIONS): the user role lets someone in, and
    they see their own experiments only, until a permission is granted."""
    from mlstack_local import keycloak as stack_keycloak

    api = stack_keycloak.AdminApi(
        stack_env["KEYCLOAK_URL"], stack_env["KEYCLOAK_ADMIN"], stack_env["KEYCLOAK_ADMIN_PASSWORD"]
    )
    realm = stack_env["KEYCLOAK_REALM"]
    suffix = os.urandom(4).hex()
    username, password = f"t-new-{suffix}", f"pw-{os.urandom(12).hex()}"
    stack_keycloak.ensure_user(api, realm, stack_keycloak.user_payload(username, "New", "User"), password)
    _, found = api.call("GET", f"/{realm}/users?username={username}&exact=true")
    user_id = found[0]["id"]
    admin_token = token_for(
        stack_env, deployment, stack_env["PLATFORM_ADMIN_USER"], stack_env["PLATFORM_ADMIN_PASSWORD"]
    )

    def call(token: str, method: str, path: str, body: dict[str, object] | None = None) -> tuple[int, dict]:
        url = deployment["uri"] + path
        data = None
        if method == "GET":
            url += "?" + urllib.parse.urlencode(body or {})
        else:
            data = json.dumps(body or {}).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, {}

    status, created = call(admin_token, "POST", "/api/2.0/mlflow/experiments/create", {"name": f"t-admins-{suffix}"})
    assert status == 200, status
    admins = created["experiment_id"]
    try:
        _, role = api.call("GET", f"/{realm}/roles/mlflow-user")  # mlflow_oidc_user_group
        api.call("POST", f"/{realm}/users/{user_id}/role-mappings/realm", [role])
        token = token_for(stack_env, deployment, username, password)
        # Let in (the role), yet the admin's experiment is neither readable nor listed.
        assert call(token, "GET", "/api/2.0/mlflow/experiments/get", {"experiment_id": admins})[0] == 403
        status, listed = call(token, "POST", "/api/2.0/mlflow/experiments/search", {"max_results": 1000})
        assert status == 200, status
        assert admins not in [e["experiment_id"] for e in listed.get("experiments", [])]
        # What they create is theirs.
        status, own = call(token, "POST", "/api/2.0/mlflow/experiments/create", {"name": f"t-own-{suffix}"})
        assert status == 200, status
        assert call(token, "GET", "/api/2.0/mlflow/experiments/get", {"experiment_id": own["experiment_id"]})[0] == 200
        call(admin_token, "POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": own["experiment_id"]})
    finally:
        call(admin_token, "POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": admins})
        api.call("DELETE", f"/{realm}/users/{user_id}")
