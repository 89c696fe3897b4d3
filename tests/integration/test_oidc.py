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

from .conftest import REPO_ROOT, Kubectl, service_url, state_dir, unavailable

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
    stack_env: dict[str, str], deployment: dict[str, str]
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
            browser.close()
