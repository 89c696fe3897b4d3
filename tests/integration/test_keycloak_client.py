"""playbooks/10_configure_keycloak.yaml against the local stack's real Keycloak and Kubernetes.

One module-scoped fixture runs the playbook the way an installer would, with names of its own (client,
realm roles, namespace) so it never touches the stack's `mlflow` client and cleans up after itself:
another auth mode (nothing happens), check mode on a fresh realm, the first run, a second run with -v,
and --check --diff. The tests then look at Keycloak through its admin REST API, at the Secret through
kubectl, and at real tokens from a password grant with the stored client secret.

Needs the local stack (``make up``); skipped without it, failed when ``CI=true``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO_ROOT, Kubectl, unavailable

PLAYBOOK = "playbooks/10_configure_keycloak.yaml"
NEEDED = (
    "KEYCLOAK_URL",
    "KEYCLOAK_ADMIN",
    "KEYCLOAK_ADMIN_PASSWORD",
    "KEYCLOAK_REALM",
    "PLATFORM_ADMIN_USER",
    "PLATFORM_ADMIN_PASSWORD",
    "PLATFORM_USER",
    "PLATFORM_USER_PASSWORD",
)
EXTRA_REDIRECT = "http://127.0.0.1:5999/callback"
RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


@dataclass
class Run:
    returncode: int
    output: str

    @property
    def changed(self) -> int:
        found = RECAP.findall(self.output)
        assert found, f"no PLAY RECAP in the output:\n{self.output[-3000:]}"
        return sum(int(host[1]) for host in found)


class KeycloakAdmin:
    """The few admin REST calls the checks need, as the master realm's admin."""

    def __init__(self, env: dict[str, str]) -> None:
        self.url = env["KEYCLOAK_URL"].rstrip("/")
        self.realm = env["KEYCLOAK_REALM"]
        self.env = env

    def token(self, realm: str, client_id: str, username: str, password: str, secret: str | None = None) -> dict:
        form = {"grant_type": "password", "client_id": client_id, "username": username, "password": password}
        if secret is not None:
            form["client_secret"] = secret
            form["scope"] = "openid"
        endpoint = f"{self.url}/realms/{urllib.parse.quote(realm)}/protocol/openid-connect/token"
        with urllib.request.urlopen(endpoint, data=urllib.parse.urlencode(form).encode(), timeout=30) as response:
            return json.load(response)

    def call(self, method: str, path: str) -> Any:
        admin = self.token("master", "admin-cli", self.env["KEYCLOAK_ADMIN"], self.env["KEYCLOAK_ADMIN_PASSWORD"])
        request = urllib.request.Request(
            f"{self.url}/admin/realms/{urllib.parse.quote(self.realm)}{path}",
            method=method,
            headers={"Authorization": f"Bearer {admin['access_token']}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise
        return json.loads(body) if body else None

    def client(self, client_id: str) -> dict | None:
        found = self.call("GET", f"/clients?clientId={urllib.parse.quote(client_id)}")
        return found[0] if found else None

    def role(self, name: str) -> dict | None:
        return self.call("GET", f"/roles/{urllib.parse.quote(name)}")

    def user_id(self, username: str) -> str:
        return self.call("GET", f"/users?username={urllib.parse.quote(username)}&exact=true")[0]["id"]


@dataclass
class Names:
    client_id: str
    admin_role: str
    user_role: str
    namespace: str
    secret: str = "mlflow-oidc"


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def keycloak(stack_env: dict[str, str]) -> KeycloakAdmin:
    missing = [key for key in NEEDED if key not in stack_env]
    if missing:
        unavailable(f"stack.env lacks {', '.join(missing)}: is the keycloak component up?")
    admin = KeycloakAdmin(stack_env)
    try:
        with urllib.request.urlopen(f"{admin.url}/realms/{admin.realm}", timeout=5) as response:
            ready = response.status == 200
    except OSError:
        ready = False
    if not ready:
        unavailable(f"Keycloak does not serve realm {admin.realm!r} at {admin.url}")
    return admin


def ansible_playbook() -> str:
    here = Path(sys.executable).parent / "ansible-playbook"
    return str(here) if here.exists() else (shutil.which("ansible-playbook") or "ansible-playbook")


def run_playbook(extra_vars: Path, *args: str) -> Run:
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "with-stack-env"), ansible_playbook(), "-i", "inventory/local", PLAYBOOK]
        + ["-e", f"@{extra_vars}", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return Run(result.returncode, result.stdout + result.stderr)


@pytest.fixture(scope="module")
def names() -> Names:
    suffix = uuid.uuid4().hex[:8]
    return Names(
        client_id=f"it-mlflow-{suffix}",
        admin_role=f"it-{suffix}-admin",
        user_role=f"it-{suffix}-user",
        namespace=f"it-kc-{suffix}",
    )


@pytest.fixture(scope="module")
def runs(
    keycloak: KeycloakAdmin, kubectl: Kubectl, names: Names, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The playbook's runs in order, with what existed after the ones that must change nothing."""
    wanted = {
        "mlflow_auth_mode": "oidc",
        "mlflow_client_id": names.client_id,
        "mlflow_oidc_admin_group": names.admin_role,
        "mlflow_oidc_user_group": names.user_role,
        "mlflow_namespace": names.namespace,
        "mlflow_oidc_extra_redirect_uris": [EXTRA_REDIRECT],
    }
    folder = tmp_path_factory.mktemp("keycloak")
    oidc_vars = folder / "oidc.json"
    oidc_vars.write_text(json.dumps(wanted))
    none_vars = folder / "none.json"
    # No login on the default Ingress: preflight wants it acknowledged.
    none_vars.write_text(json.dumps({**wanted, "mlflow_auth_mode": "none", "mlflow_auth_none_acknowledged": True}))

    def leftovers() -> dict[str, bool]:
        namespace = kubectl.run("get", "namespace", names.namespace, check=False).returncode == 0
        return {
            "client": keycloak.client(names.client_id) is not None,
            "role": keycloak.role(names.admin_role) is not None,
            "namespace": namespace,
        }

    found: dict[str, Any] = {}
    try:
        found["none"] = run_playbook(none_vars)
        found["after_none"] = leftovers()
        found["fresh_check"] = run_playbook(oidc_vars, "--check", "--diff")
        found["after_fresh_check"] = leftovers()
        found["first"] = run_playbook(oidc_vars, "--diff")
        found["second"] = run_playbook(oidc_vars, "-v", "--diff")
        found["check"] = run_playbook(oidc_vars, "--check", "--diff")
        yield found
    finally:
        client = keycloak.client(names.client_id)
        if client is not None:
            keycloak.call("DELETE", f"/clients/{client['id']}")
        for role in (names.admin_role, names.user_role):
            if keycloak.role(role) is not None:
                keycloak.call("DELETE", f"/roles/{urllib.parse.quote(role)}")
        kubectl.run("delete", "namespace", names.namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def client(runs: dict[str, Any], keycloak: KeycloakAdmin, names: Names) -> dict[str, Any]:
    assert runs["first"].returncode == 0, runs["first"].output[-4000:]
    found = keycloak.client(names.client_id)
    assert found is not None, f"client {names.client_id} was not created"
    return found


@pytest.fixture(scope="module")
def stored_secret(client: dict[str, Any], kubectl: Kubectl, names: Names) -> str:
    secret = kubectl.get("secret", names.secret, names.namespace)
    return base64.b64decode(secret["data"]["OIDC_CLIENT_SECRET"]).decode()


def test_another_auth_mode_changes_nothing(runs: dict[str, Any]) -> None:
    assert runs["none"].returncode == 0, runs["none"].output[-4000:]
    assert runs["none"].changed == 0
    assert runs["after_none"] == {"client": False, "role": False, "namespace": False}


def test_check_mode_on_a_fresh_realm_reports_changes_and_makes_none(runs: dict[str, Any], names: Names) -> None:
    run = runs["fresh_check"]
    assert run.returncode == 0, run.output[-4000:]
    assert run.changed > 0
    assert f"clientId: {names.client_id}" in run.output  # the diff shows the client to be created
    assert runs["after_fresh_check"] == {"client": False, "role": False, "namespace": False}


def test_second_run_and_check_diff_change_nothing(runs: dict[str, Any]) -> None:
    for name in ("first", "second", "check"):
        assert runs[name].returncode == 0, f"{name} run failed:\n{runs[name].output[-4000:]}"
    assert runs["first"].changed > 0
    assert runs["second"].changed == 0, runs["second"].output[-4000:]
    assert runs["check"].changed == 0, runs["check"].output[-4000:]


def test_client_is_confidential_with_exact_redirects(client: dict[str, Any], names: Names, stack_env: dict) -> None:
    host = f"mlflow.{stack_env['DOMAIN_NAME']}"
    assert client["publicClient"] is False
    assert client["clientAuthenticatorType"] == "client-secret"
    assert client["standardFlowEnabled"] is True
    assert client["implicitFlowEnabled"] is False
    assert client["directAccessGrantsEnabled"] is True
    assert client["serviceAccountsEnabled"] is False
    assert sorted(client["redirectUris"]) == sorted([f"https://{host}/callback", EXTRA_REDIRECT])
    assert not any("*" in uri for uri in client["redirectUris"])
    assert sorted(client["webOrigins"]) == sorted([f"https://{host}", "http://127.0.0.1:5999"])
    assert client["attributes"]["access.token.lifespan"] == "3600"
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    # The realm roles it grants, which an uninstall with purge of another instance keeps.
    assert client["attributes"]["mlstack.mlflow.realm-roles"] == f"{names.admin_role},{names.user_role}"
    assert client["attributes"]["post.logout.redirect.uris"].split("##") == [
        f"https://{host}/",
        "http://127.0.0.1:5999/",
    ]
    assert sorted(client["defaultClientScopes"]) == ["acr", "basic", "email", "profile", "roles", "web-origins"]
    assert sorted(client["optionalClientScopes"]) == ["address", "offline_access", "phone"]


def test_a_browser_login_without_a_pkce_challenge_is_refused(
    client: dict[str, Any], keycloak: KeycloakAdmin, names: Names, stack_env: dict
) -> None:
    """PKCE S256 is enforced: an authorization request that does not carry a challenge gets an error, not
    the login form (one that does, as MLflow's OIDC plugin and oauth2-proxy send it, gets the form)."""
    redirect = f"https://mlflow.{stack_env['DOMAIN_NAME']}/callback"
    endpoint = f"{keycloak.url}/realms/{urllib.parse.quote(keycloak.realm)}/protocol/openid-connect/auth"

    def authorize(**extra: str) -> tuple[int, str]:
        query = {"client_id": names.client_id, "response_type": "code", "redirect_uri": redirect, "scope": "openid"}
        opener = urllib.request.build_opener(NoRedirect())
        try:
            with opener.open(f"{endpoint}?{urllib.parse.urlencode({**query, **extra})}", timeout=30) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Location", "")

    status, location = authorize()
    assert status == 302, status
    assert location.startswith(redirect + "?")
    error = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    assert error["error"] == ["invalid_request"]
    assert "code_challenge_method" in error["error_description"][0]

    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
    status, page = authorize(code_challenge=challenge, code_challenge_method="S256")
    assert status == 200, status
    assert 'id="kc-form-login"' in page


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_client_has_the_three_mappers(client: dict[str, Any], names: Names) -> None:
    mappers = {m["protocolMapper"]: m["config"] for m in client["protocolMappers"]}
    realm_roles = mappers["oidc-usermodel-realm-role-mapper"]
    assert realm_roles["claim.name"] == "realm_access.roles"
    assert realm_roles["multivalued"] == "true"
    assert all(realm_roles[f"{t}.token.claim"] == "true" for t in ("id", "access", "userinfo"))
    audience = mappers["oidc-audience-mapper"]
    assert audience["included.client.audience"] == names.client_id
    assert audience["access.token.claim"] == "true"
    client_roles = mappers["oidc-usermodel-client-role-mapper"]
    assert client_roles["claim.name"] == "resource_access.${client_id}.roles"
    assert client_roles["usermodel.clientRoleMapping.clientId"] == names.client_id


def test_realm_roles_exist_and_only_the_admin_holds_the_admin_role(
    client: dict[str, Any], keycloak: KeycloakAdmin, names: Names, stack_env: dict[str, str]
) -> None:
    for role in (names.admin_role, names.user_role):
        found = keycloak.role(role)
        assert found is not None and found.get("description"), f"realm role {role} missing or undescribed"
    admin_roles = keycloak.call(
        "GET", f"/users/{keycloak.user_id(stack_env['PLATFORM_ADMIN_USER'])}/role-mappings/realm"
    )
    user_roles = keycloak.call("GET", f"/users/{keycloak.user_id(stack_env['PLATFORM_USER'])}/role-mappings/realm")
    assert names.admin_role in {r["name"] for r in admin_roles}
    assert names.admin_role not in {r["name"] for r in user_roles}


def test_stored_secret_is_the_client_secret(
    client: dict[str, Any], keycloak: KeycloakAdmin, stored_secret: str
) -> None:
    assert stored_secret == keycloak.call("GET", f"/clients/{client['id']}/client-secret")["value"]


def test_secret_never_appears_in_output(runs: dict[str, Any], stored_secret: str) -> None:
    for name in ("fresh_check", "first", "second", "check"):
        assert stored_secret not in runs[name].output, f"the client secret leaked into the {name} run's output"


def test_admin_token_carries_audience_and_admin_role(
    keycloak: KeycloakAdmin, names: Names, stored_secret: str, stack_env: dict[str, str]
) -> None:
    tokens = keycloak.token(
        keycloak.realm,
        names.client_id,
        stack_env["PLATFORM_ADMIN_USER"],
        stack_env["PLATFORM_ADMIN_PASSWORD"],
        stored_secret,
    )
    access = claims(tokens["access_token"])
    audience = access["aud"] if isinstance(access["aud"], list) else [access["aud"]]
    assert names.client_id in audience
    assert names.admin_role in access["realm_access"]["roles"]
    assert names.admin_role in claims(tokens["id_token"])["realm_access"]["roles"]
    assert access["exp"] - access["iat"] == 3600
    # offline_access is an optional scope: a plain login gets an ordinary refresh token.
    assert claims(tokens["refresh_token"])["typ"] == "Refresh"


def test_plain_user_token_has_no_mlflow_role(
    keycloak: KeycloakAdmin, names: Names, stored_secret: str, stack_env: dict[str, str]
) -> None:
    tokens = keycloak.token(
        keycloak.realm, names.client_id, stack_env["PLATFORM_USER"], stack_env["PLATFORM_USER_PASSWORD"], stored_secret
    )
    roles = set(claims(tokens["access_token"])["realm_access"]["roles"])
    assert not roles & {names.admin_role, names.user_role}
