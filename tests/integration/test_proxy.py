"""mlflow_auth_mode=proxy end to end: oauth2-proxy in front of MLflow, on the local stack.

One module-scoped deploy (site.yml: 10 creates the Keycloak client, 11 deploys oauth2-proxy and MLflow with
the proxy's authorization function) with names of its own; the tests then act as a browser, an API client
and a pod in another namespace, re-run the deploy, run --check against a fresh namespace and uninstall.

Needs the local stack with the oauth2-proxy image (``python -m mlstack_local up oauth2-proxy``).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlstack_local.images import image_specs
from playwright.sync_api import Browser
from playwright.sync_api import Error as PlaywrightError

from .conftest import Kubectl, changed_count, run_playbook, service_url, state_dir, unavailable, wait_for
from .test_node import finished, pod, pod_logs, tools_container
from .test_oidc import terminating_namespaces

NAME = "t10b-proxy"
# The tests after the Ingress's switch the deploy to a Gateway (the stack's traefik/mlstack) and uninstall there.
GATEWAY = {"mlflow_expose": "httproute"}
MIDDLEWARE = "mlflow-forward-auth"
HOST = f"{NAME}.mlstack.test"
SCENARIO = {
    "mlflow_auth_mode": "proxy",
    "mlflow_namespace": NAME,
    "mlflow_hostname": HOST,
    "mlflow_db_name": "t10b_proxy",
    "mlflow_auth_db_name": "t10b_proxy_auth",
    "mlflow_db_user": "t10b_proxy",
    "mlflow_artifacts_bucket": NAME,
    "mlflow_client_id": NAME,
    "mlflow_oidc_admin_group": f"{NAME}-admin",
    "mlflow_oidc_user_group": f"{NAME}-user",
}


def playbook(tmp_path: Path, name: str, *args: str, **extra: object) -> subprocess.CompletedProcess[str]:
    return run_playbook(tmp_path, name, {**SCENARIO, **extra}, *args)


def changed(result: subprocess.CompletedProcess[str]) -> int:
    return changed_count(result.stdout)


def image_in_registry(env: dict[str, str]) -> bool:
    url = f"{env['REGISTRY_URL']}/v2/{env['REGISTRY_PROJECT']}/oauth2-proxy/tags/list"
    token = base64.b64encode(f"{env['REGISTRY_USER']}:{env['REGISTRY_PASSWORD']}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the local registry
            return bool(json.loads(response.read()).get("tags"))
    except urllib.error.URLError:
        return False


@pytest.fixture(scope="module")
def deployed(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not image_in_registry(stack_env):
        unavailable("the oauth2-proxy image is not in the registry: run `python -m mlstack_local up oauth2-proxy`")
    tmp_path = tmp_path_factory.mktemp("proxy")
    playbook(tmp_path, "playbooks/19_uninstall.yaml", mlflow_purge=True)
    result = playbook(tmp_path, "site.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    yield tmp_path
    purged = playbook(tmp_path, "playbooks/19_uninstall.yaml", mlflow_purge=True)
    assert purged.returncode == 0, purged.stdout[-3000:]


def client_secret(kubectl: Kubectl) -> str:
    return base64.b64decode(kubectl.get("secret", "mlflow-oidc", NAME)["data"]["OIDC_CLIENT_SECRET"]).decode()


def token_for(env: dict[str, str], kubectl: Kubectl, user: str, password: str) -> str:
    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": NAME,
            "client_secret": client_secret(kubectl),
            "username": user,
            "password": password,
            "scope": "openid",
        }
    ).encode()
    url = f"{env['KEYCLOAK_URL']}/realms/{env['KEYCLOAK_REALM']}/protocol/openid-connect/token"
    with urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=15) as response:  # noqa: S310
        return json.loads(response.read())["access_token"]


def public(
    env: dict[str, str],
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
    host: str = HOST,
) -> tuple[int, dict[str, str], bytes]:
    """A request to https://<host> through the local ingress, like curl --resolve; redirects not followed."""
    context = ssl.create_default_context(cafile=env["MLSTACK_CA_CERT"])
    address = ("127.0.0.1", int(env.get("INGRESS_HTTPS_PORT", "443")))
    connection = http.client.HTTPSConnection(host, address[1], context=context, timeout=60)
    connection._create_connection = lambda *_args, **_kw: socket.create_connection(address, timeout=60)  # type: ignore[attr-defined]
    try:
        data = json.dumps(body) if body is not None else None
        connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def keycloak_admin(env: dict[str, str], method: str, path: str, body: object = None) -> Any:
    """A call to the realm's admin API as Keycloak's master admin; the JSON answer, or None."""
    form = {
        "grant_type": "password",
        "client_id": "admin-cli",
        "username": env["KEYCLOAK_ADMIN"],
        "password": env["KEYCLOAK_ADMIN_PASSWORD"],
    }
    url = f"{env['KEYCLOAK_URL']}/realms/master/protocol/openid-connect/token"
    with urllib.request.urlopen(url, data=urllib.parse.urlencode(form).encode(), timeout=15) as response:  # noqa: S310
        admin = json.loads(response.read())["access_token"]
    request = urllib.request.Request(
        f"{env['KEYCLOAK_URL']}/admin/realms/{env['KEYCLOAK_REALM']}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
        answer = response.read()
    return json.loads(answer) if answer else None


def keycloak_clients(env: dict[str, str], client_id: str) -> list[dict[str, Any]]:
    """The realm's clients named ``client_id``."""
    return keycloak_admin(env, "GET", f"/clients?clientId={urllib.parse.quote(client_id)}")


def realm_role_exists(env: dict[str, str], name: str) -> bool:
    try:
        keycloak_admin(env, "GET", f"/roles/{urllib.parse.quote(name)}")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise
    return True


@pytest.mark.parametrize("expose", ["ingress", "httproute"])
def test_check_mode_on_a_fresh_namespace_creates_nothing(
    stack_env: dict[str, str], kubectl: Kubectl, tmp_path: Path, expose: str
) -> None:
    fresh = "t10b-check"
    names = {
        **SCENARIO,
        "mlflow_namespace": fresh,
        "mlflow_hostname": f"{fresh}.mlstack.test",
        "mlflow_client_id": fresh,
        "mlflow_oidc_admin_group": f"{fresh}-admin",
        "mlflow_oidc_user_group": f"{fresh}-user",
    }
    result = playbook(tmp_path, "site.yml", "--check", **names, mlflow_expose=expose)
    assert result.returncode == 0, result.stdout[-4000:]
    assert kubectl.run("get", "namespace", fresh, check=False).returncode != 0
    assert keycloak_clients(stack_env, fresh) == []


def test_a_request_without_a_session_gets_the_proxys_redirect_never_mlflow(
    stack_env: dict[str, str], deployed: Path
) -> None:
    for path in ("/", "/api/2.0/mlflow/experiments/search?max_results=1", "/ajax-api/2.0/mlflow/users/current"):
        status, headers, _ = public(stack_env, "GET", path)
        assert status == 302, (path, status)
        assert headers["location"].startswith(f"https://{HOST}/oauth2/start?rd="), headers["location"]
    status, _, _ = public(stack_env, "GET", "/api/2.0/mlflow/experiments/search", headers={"Authorization": "Bearer x"})
    assert status in (302, 401, 403)
    # Health checks need no login; nothing below /health/ is MLflow's data.
    assert public(stack_env, "GET", "/health")[0] == 200
    assert public(stack_env, "GET", "/health/../api/2.0/mlflow/experiments/search")[0] == 302
    # The auth answer carries the shared secret: it is not served on the public host.
    status, headers, _ = public(stack_env, "GET", "/oauth2/auth")
    assert status == 302 and "x-mlflow-proxy-secret" not in headers


def test_forged_identity_headers_through_the_ingress_are_replaced(stack_env: dict[str, str], deployed: Path) -> None:
    forged = {"X-Auth-Request-User": stack_env["PLATFORM_ADMIN_USER"], "X-Mlflow-Proxy-Secret": "guessed"}
    status, headers, _ = public(stack_env, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers=forged)
    assert status == 302 and headers["location"].startswith(f"https://{HOST}/oauth2/start")


def test_a_user_without_an_mlflow_role_is_refused(stack_env: dict[str, str], kubectl: Kubectl, deployed: Path) -> None:
    """A valid Keycloak token without an MLflow realm role: oauth2-proxy refuses it, MLflow never sees it."""
    token = token_for(stack_env, kubectl, stack_env["PLATFORM_USER"], stack_env["PLATFORM_USER_PASSWORD"])
    bearer = {"Authorization": f"Bearer {token}"}
    status, headers, _ = public(stack_env, "GET", "/api/2.0/mlflow/experiments/search", headers=bearer)
    assert status == 302 and headers["location"].startswith(f"https://{HOST}/oauth2/start"), (status, headers)
    request = urllib.request.Request(service_url(kubectl, NAME, "oauth2-proxy") + "/oauth2/auth", headers=bearer)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=15)  # noqa: S310 - the in-cluster Service
    assert refused.value.code in (401, 403)


def test_an_existing_forward_auth_service_given_by_url_guards_another_instance(
    stack_env: dict[str, str], kubectl: Kubectl, deployed: Path, tmp_path: Path
) -> None:
    """Bring your own proxy (as with Authentik's outpost): a second MLflow, without an oauth2-proxy of its own,
    names the first one's auth endpoint (mlflow_proxy_auth_url) and shares its secret."""
    byo = f"{NAME}-byo"
    proxy_url = service_url(kubectl, NAME, "oauth2-proxy")
    shared = base64.b64decode(kubectl.get("secret", "mlflow-proxy", NAME)["data"]["PROXY_SECRET"]).decode()
    names = {
        **SCENARIO,
        "mlflow_namespace": byo,
        "mlflow_hostname": f"{byo}.mlstack.test",
        "mlflow_db_name": "t10b_byo",
        "mlflow_auth_db_name": "t10b_byo_auth",
        "mlflow_db_user": "t10b_byo",
        "mlflow_artifacts_bucket": byo,
        "mlflow_proxy_deploy_oauth2_proxy": False,
        "mlflow_proxy_auth_url": f"{proxy_url}/oauth2/auth",
        "mlflow_proxy_signin_url": f"https://{HOST}/oauth2/start",
        "mlflow_proxy_shared_secret": shared,
    }
    try:
        result = run_playbook(tmp_path, "playbooks/11_deploy.yaml", names)
        assert result.returncode == 0, result.stdout[-4000:]
        assert kubectl.run("-n", byo, "get", "deployment", "oauth2-proxy", check=False).returncode != 0
        annotations = kubectl.get("ingress", "mlflow", byo)["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/auth-url"] == f"{proxy_url}/oauth2/auth"
        token = token_for(stack_env, kubectl, stack_env["PLATFORM_ADMIN_USER"], stack_env["PLATFORM_ADMIN_PASSWORD"])
        status, _, body = public(
            stack_env,
            "GET",
            "/ajax-api/2.0/mlflow/users/current",
            headers={"Authorization": f"Bearer {token}"},
            host=f"{byo}.mlstack.test",
        )
        assert status == 200 and json.loads(body)["user"]["username"] == stack_env["PLATFORM_ADMIN_USER"], body[:300]
        status, headers, _ = public(stack_env, "GET", "/", host=f"{byo}.mlstack.test")
        assert status == 302 and headers["location"].startswith(f"https://{HOST}/oauth2/start?rd="), headers
    finally:
        purged = run_playbook(tmp_path, "playbooks/19_uninstall.yaml", {**names, "mlflow_purge": True})
        assert purged.returncode == 0, purged.stdout[-3000:]


def test_runs_created_through_the_proxy_carry_the_users_name(
    stack_env: dict[str, str], kubectl: Kubectl, deployed: Path
) -> None:
    assert_runs_carry_the_users_name(stack_env, kubectl, "proxy-owner")


def assert_runs_carry_the_users_name(env: dict[str, str], kubectl: Kubectl, experiment: str) -> None:
    token = token_for(env, kubectl, env["PLATFORM_ADMIN_USER"], env["PLATFORM_ADMIN_PASSWORD"])
    bearer = {"Authorization": f"Bearer {token}"}
    status, _, body = public(env, "POST", "/api/2.0/mlflow/experiments/create", {"name": experiment}, bearer)
    assert status == 200, body[:300]
    experiment_id = json.loads(body)["experiment_id"]
    # The MLflow client sends the local OS user; the server must record the user the proxy authenticated.
    status, _, body = public(
        env, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id, "user_id": "root"}, bearer
    )
    assert status == 200, body[:300]
    run_id = json.loads(body)["run"]["info"]["run_id"]
    status, _, body = public(env, "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}", headers=bearer)
    assert json.loads(body)["run"]["info"]["user_id"] == env["PLATFORM_ADMIN_USER"]
    status, _, body = public(env, "GET", "/ajax-api/2.0/mlflow/users/current", headers=bearer)
    assert json.loads(body)["user"]["username"] == env["PLATFORM_ADMIN_USER"]


def test_a_pod_in_another_namespace_cannot_use_mlflow_directly(
    stack_env: dict[str, str], kubectl: Kubectl, namespace: str, deployed: Path
) -> None:
    """With forged identity headers, straight to the Service: not reached (kube-router enforces the policy,
    which admits only the ingress controller); were it reached, MLflow would answer 401 without the secret."""
    url = f"http://mlflow.{NAME}.svc.cluster.local:5000/api/2.0/mlflow/experiments/search?max_results=1"
    user = stack_env["PLATFORM_ADMIN_USER"]
    script = (
        f"curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 10 -H 'X-Auth-Request-User: {user}' '{url}'; "
        f"curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 10 -H 'X-Auth-Request-User: {user}' "
        f"-H 'X-Mlflow-Proxy-Secret: guessed' -H 'X-Auth-Request-Groups: role:{NAME}-admin' '{url}'"
    )
    tools = stack_env.get("MLSTACK_TOOLS_IMAGE") or image_specs().tools.ref
    kubectl.apply(pod("direct", namespace, tools_container(tools, script), restartPolicy="Never"))
    wait_for("the direct probe to finish", lambda: finished(kubectl, namespace, "direct"), timeout=120)
    codes = pod_logs(kubectl, namespace, "direct").split()
    assert codes == ["000", "000"], codes


def test_the_admin_logs_in_through_keycloak_in_a_real_browser(
    stack_env: dict[str, str], kubectl: Kubectl, deployed: Path
) -> None:
    run = browser_run(stack_env, kubectl, "proxy-browser")
    assert run["info"]["user_id"] == stack_env["PLATFORM_ADMIN_USER"]


def browser_run(env: dict[str, str], kubectl: Kubectl, experiment: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    if not Path("/usr/bin/chromium").exists():
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    https_port = env.get("INGRESS_HTTPS_PORT", "443")
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
                f"--host-resolver-rules=MAP {HOST} 127.0.0.1:{https_port}",
            ],
        )
        try:
            # As in test_oidc: veths of namespaces being torn down make Chromium abort with ERR_NETWORK_CHANGED.
            wait_for("earlier test namespaces to be gone", lambda: not terminating_namespaces(kubectl), timeout=180)
            for attempt in range(3):
                try:
                    return log_in_and_create_a_run(browser, env, artifacts, experiment)
                except PlaywrightError as err:
                    if "ERR_NETWORK_CHANGED" not in str(err) or attempt == 2:
                        raise
        finally:
            browser.close()
    raise AssertionError("unreachable")


def log_in_and_create_a_run(browser: Browser, env: dict[str, str], artifacts: Path, experiment: str) -> dict[str, Any]:
    """Open the UI, get sent to Keycloak through oauth2-proxy, log in, land in MLflow, create a run there."""
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    try:
        page.goto(f"https://{HOST}/", wait_until="domcontentloaded", timeout=60_000)
        page.wait_for_selector("#username", timeout=60_000)
        assert page.url.startswith(env["KEYCLOAK_URL"]), page.url
        assert f"redirect_uri={urllib.parse.quote(f'https://{HOST}/oauth2/callback', safe='')}" in page.url
        page.fill("#username", env["PLATFORM_ADMIN_USER"])
        page.fill("#password", env["PLATFORM_ADMIN_PASSWORD"])
        page.click("#kc-login")
        page.wait_for_url(f"https://{HOST}/**", timeout=60_000)
        page.get_by_text("Experiments").first.wait_for(timeout=60_000)
        # MLflow's UI names the user the proxy authenticated.
        page.get_by_text(env["PLATFORM_ADMIN_USER"], exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(artifacts / f"{experiment}-login.png"), full_page=True)
        # The browser's session (oauth2-proxy's cookie) is the identity: a run made with it is the admin's.
        # fetch() in the page: Chromium's own connection, resolver mapping and cookies, as the UI's calls.
        created = page.evaluate(
            """async (name) => {
                const post = async (path, body) => {
                    const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                                 body: JSON.stringify(body)});
                    if (!r.ok) throw new Error(path + " HTTP " + r.status + " " + (await r.text()).slice(0, 300));
                    return r.json();
                };
                const experiment = await post("/ajax-api/2.0/mlflow/experiments/create", {name});
                return post("/ajax-api/2.0/mlflow/runs/create",
                            {experiment_id: experiment.experiment_id, user_id: "somebody-else"});
            }""",
            experiment,
        )
        return created["run"]
    finally:
        page.screenshot(path=str(artifacts / f"{experiment}-login-last.png"))
        context.close()


def test_the_network_policy_admits_only_the_ingress(kubectl: Kubectl, deployed: Path) -> None:
    policy = kubectl.get("networkpolicy", "mlflow", NAME)["spec"]
    assert [rule.get("from") for rule in policy["ingress"]] == [[{"ipBlock": {"cidr": "10.89.0.1/32"}}]]
    proxy_policy = kubectl.get("networkpolicy", "oauth2-proxy", NAME)["spec"]
    assert [rule.get("from") for rule in proxy_policy["ingress"]] == [[{"ipBlock": {"cidr": "10.89.0.1/32"}}]]


def test_no_secret_in_args_or_config_maps(kubectl: Kubectl, deployed: Path) -> None:
    secret = base64.b64decode(kubectl.get("secret", "mlflow-proxy", NAME)["data"]["PROXY_SECRET"]).decode()
    cookie = base64.b64decode(kubectl.get("secret", "mlflow-proxy", NAME)["data"]["COOKIE_SECRET"]).decode()
    visible = json.dumps(
        [
            kubectl.get("deployment", "oauth2-proxy", NAME)["spec"],
            kubectl.get("deployment", "mlflow", NAME)["spec"],
            kubectl.get("configmap", "oauth2-proxy", NAME)["data"],
            kubectl.get("ingress", "mlflow", NAME)["metadata"]["annotations"],
        ]
    )
    for value in (secret, cookie, client_secret(kubectl)):
        assert len(value) >= 16 and value not in visible


def test_18_test_verifies_the_proxy_deployment_as_a_user(deployed: Path) -> None:
    """/health without login, anonymous API refused, a Keycloak token through oauth2-proxy, artifacts."""
    result = playbook(deployed, "playbooks/18_test.yaml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 failed" in result.stdout


def test_a_rerun_changes_nothing(deployed: Path) -> None:
    result = playbook(deployed, "site.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert changed(result) == 0, [line for line in result.stdout.splitlines() if line.startswith("changed:")]


def test_through_a_gateway_a_forward_auth_filter_guards_mlflow(
    stack_env: dict[str, str], kubectl: Kubectl, deployed: Path
) -> None:
    """ingress -> httproute: the HTTPRoute asks oauth2-proxy about every request (a Traefik forwardAuth
    Middleware named by an ExtensionRef filter); the Ingresses go."""
    result = playbook(deployed, "site.yml", **GATEWAY)
    assert result.returncode == 0, result.stdout[-4000:]
    for name in ("mlflow", "mlflow-health", "oauth2-proxy"):
        assert kubectl.run("-n", NAME, "get", "ingress", name, check=False).returncode != 0, name
    rules = kubectl.get("httproute", "mlflow", NAME)["spec"]["rules"]
    assert rules[0]["filters"] == [
        {"type": "ExtensionRef", "extensionRef": {"group": "traefik.io", "kind": "Middleware", "name": MIDDLEWARE}}
    ]
    forward_auth = kubectl.get("middleware.traefik.io", MIDDLEWARE, NAME)["spec"]["forwardAuth"]
    assert forward_auth["address"].endswith(":4180/") and forward_auth["trustForwardHeader"] is False
    sign_in = kubectl.get("httproute", "oauth2-proxy", NAME)["spec"]["rules"][0]["matches"]
    assert {match["path"]["value"] for match in sign_in} == {
        "/oauth2/start",
        "/oauth2/callback",
        "/oauth2/sign_in",
        "/oauth2/sign_out",
    }
    # A browser without a session: oauth2-proxy's own answer, the redirect to Keycloak; never MLflow.
    wait_for("the Gateway to serve the new route", lambda: public(stack_env, "GET", "/")[0] == 302, timeout=60)
    status, headers, _ = public(stack_env, "GET", "/experiments", headers={"Accept": "text/html"})
    assert status == 302 and headers["location"].startswith(stack_env["KEYCLOAK_URL"]), (status, headers)
    callback = urllib.parse.quote(f"https://{HOST}/oauth2/callback", safe="")
    assert f"redirect_uri={callback}" in headers["location"]
    # API calls without a session, or with forged identity headers: 401 from the proxy.
    forged = {"X-Auth-Request-User": stack_env["PLATFORM_ADMIN_USER"], "X-Mlflow-Proxy-Secret": "guessed"}
    for path in ("/api/2.0/mlflow/experiments/search?max_results=1", "/ajax-api/2.0/mlflow/users/current"):
        assert public(stack_env, "GET", path)[0] == 401, path
        assert public(stack_env, "GET", path, headers=forged)[0] == 401, path
    assert public(stack_env, "GET", "/health")[0] == 200
    # The proxy's auth answer, which carries the shared secret, is not on the public host.
    status, headers, _ = public(stack_env, "GET", "/oauth2/auth")
    assert status == 302 and "x-mlflow-proxy-secret" not in headers
    # A Keycloak user without an MLflow role is refused by the proxy.
    token = token_for(stack_env, kubectl, stack_env["PLATFORM_USER"], stack_env["PLATFORM_USER_PASSWORD"])
    assert public(stack_env, "GET", "/api/2.0/mlflow/experiments/search", headers={"Authorization": f"Bearer {token}"})[
        0
    ] in (401, 403)


def test_through_a_gateway_a_user_group_cannot_be_forged(
    stack_env: dict[str, str], kubectl: Kubectl, deployed: Path
) -> None:
    """The Middleware deletes every header it copies from the auth answer, even one the answer lacks."""
    token = token_for(stack_env, kubectl, stack_env["PLATFORM_ADMIN_USER"], stack_env["PLATFORM_ADMIN_PASSWORD"])
    forward_auth = kubectl.get("middleware.traefik.io", MIDDLEWARE, NAME)["spec"]["forwardAuth"]
    pattern = re.compile(forward_auth["authResponseHeadersRegex"].replace("(?i)", ""), re.IGNORECASE)
    for header in ("X-Auth-Request-User", "X-Auth-Request-Groups", "X-Mlflow-Proxy-Secret", "x-auth-request-groups"):
        assert pattern.match(header), header
    assert not pattern.match("X-Auth-Request-User-Agent") and not pattern.match("Authorization")
    forged = {"Authorization": f"Bearer {token}", "X-Auth-Request-User": "mallory", "X-Auth-Request-Groups": "x"}
    status, _, body = public(stack_env, "GET", "/ajax-api/2.0/mlflow/users/current", headers=forged)
    assert status == 200 and json.loads(body)["user"]["username"] == stack_env["PLATFORM_ADMIN_USER"]


def test_through_a_gateway_runs_carry_the_users_name(
    stack_env: dict[str, str], kubectl: Kubectl, deployed: Path
) -> None:
    assert_runs_carry_the_users_name(stack_env, kubectl, "proxy-gateway-owner")


def test_through_a_gateway_the_admin_logs_in_in_a_real_browser(
    stack_env: dict[str, str], kubectl: Kubectl, deployed: Path
) -> None:
    run = browser_run(stack_env, kubectl, "proxy-gateway-browser")
    assert run["info"]["user_id"] == stack_env["PLATFORM_ADMIN_USER"]


def test_through_a_gateway_a_rerun_changes_nothing(deployed: Path) -> None:
    result = playbook(deployed, "site.yml", **GATEWAY)
    assert result.returncode == 0, result.stdout[-3000:]
    assert changed(result) == 0, [line for line in result.stdout.splitlines() if line.startswith("changed:")]


def test_uninstall_removes_what_the_mode_created(stack_env: dict[str, str], kubectl: Kubectl, deployed: Path) -> None:
    assert service_url(kubectl, NAME, "oauth2-proxy")
    assert len(keycloak_clients(stack_env, NAME)) == 1
    result = playbook(deployed, "playbooks/19_uninstall.yaml", **GATEWAY)
    assert result.returncode == 0, result.stdout[-3000:]
    for kind, name in [
        ("httproute", "mlflow"),
        ("httproute", "oauth2-proxy"),
        ("middleware.traefik.io", MIDDLEWARE),
        ("deployment", "oauth2-proxy"),
        ("service", "oauth2-proxy"),
        ("configmap", "oauth2-proxy"),
        ("networkpolicy", "oauth2-proxy"),
        ("ingress", "oauth2-proxy"),
        ("secret", "mlflow-proxy"),
        ("secret", "mlflow-oidc"),
        ("deployment", "mlflow"),
    ]:
        assert kubectl.run("-n", NAME, "get", kind, name, check=False).returncode != 0, (kind, name)
    # Without purge the client and the realm roles stay: they carry every user's role assignments.
    assert len(keycloak_clients(stack_env, NAME)) == 1
    assert realm_role_exists(stack_env, f"{NAME}-admin") and realm_role_exists(stack_env, f"{NAME}-user")


def test_a_purge_keeps_the_realm_roles_another_instance_names(
    stack_env: dict[str, str], kubectl: Kubectl, deployed: Path
) -> None:
    """Another MLflow client in the realm grants the user role too: the purge removes only the admin role."""
    other = f"{NAME}-other"
    keycloak_admin(
        stack_env,
        "POST",
        "/clients",
        {"clientId": other, "attributes": {"mlstack.mlflow.realm-roles": f"{NAME}-user"}},
    )
    try:
        result = playbook(deployed, "playbooks/19_uninstall.yaml", mlflow_purge=True)
        assert result.returncode == 0, result.stdout[-3000:]
        assert keycloak_clients(stack_env, NAME) == []
        assert not realm_role_exists(stack_env, f"{NAME}-admin")
        assert realm_role_exists(stack_env, f"{NAME}-user")
        assert f"Kept the realm roles {NAME}-user" in " ".join(result.stdout.split())
    finally:
        for client in keycloak_clients(stack_env, other):
            keycloak_admin(stack_env, "DELETE", f"/clients/{client['id']}")
        if realm_role_exists(stack_env, f"{NAME}-user"):
            keycloak_admin(stack_env, "DELETE", f"/roles/{NAME}-user")
