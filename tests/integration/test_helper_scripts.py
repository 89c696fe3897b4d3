"""The code-server helper scripts (templates/mlflow-auth.{sh,fish}.j2), sourced by real bash, dash and fish.

The templates are rendered by Ansible's template module with the local stack's Keycloak baked in, then
sourced against it: a token is exported silently, a wrong password or an unreachable Keycloak gives one
error line and a non-zero status, TLS is verified, any character works in a password, secrets never
reach curl's command line, and the MLflow client logs a run with the exported token.

The client is a parameter: ``admin-cli`` (public, always in the realm) and ``mlflow`` (the confidential
client 10_configure_keycloak creates, with the secret it stored in mlflow/mlflow-oidc).

Needs the local stack (``make up``); skipped without it, failed when ``CI=true``.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO_ROOT, Kubectl, state_dir, unavailable

SHELLS = {"bash": "/usr/bin/bash", "dash": "/usr/bin/dash", "fish": "/usr/bin/fish"}
CLIENTS = ["admin-cli", "mlflow"]
NEEDED = ("KEYCLOAK_URL", "KEYCLOAK_REALM", "PLATFORM_ADMIN_USER", "PLATFORM_ADMIN_PASSWORD")
# Every character a shell, a URL, a form or a curl config file treats specially.
HOSTILE_PASSWORD = "@-x\" \\ $HOME `id` 'q' %41%2 #?/:&=+;|*~<>(){}[]!\t ü"
# Prints what the MLflow client would see, as one JSON line.
SHOW_ENV = (
    "import json, os; print(json.dumps({k: os.environ.get(k) for k in ("
    "'MLFLOW_TRACKING_TOKEN', 'MLFLOW_TRACKING_URI', 'MLFLOW_TRACKING_USERNAME', 'MLFLOW_TRACKING_PASSWORD')}))"
)


@dataclass
class Client:
    client_id: str
    secret: str | None


def token_url(env: dict[str, str], base: str | None = None) -> str:
    return f"{(base or env['KEYCLOAK_URL']).rstrip('/')}/realms/{env['KEYCLOAK_REALM']}/protocol/openid-connect/token"


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def keycloak(stack_env: dict[str, str]) -> dict[str, str]:
    missing = [key for key in NEEDED if key not in stack_env]
    if missing:
        unavailable(f"stack.env lacks {', '.join(missing)}: is the keycloak component up?")
    try:
        with urllib.request.urlopen(f"{stack_env['KEYCLOAK_URL']}/realms/{stack_env['KEYCLOAK_REALM']}", timeout=5):
            pass
    except OSError as err:
        unavailable(f"Keycloak does not serve realm {stack_env['KEYCLOAK_REALM']}: {err}")
    for shell in SHELLS.values():
        if not Path(shell).exists():
            unavailable(f"{shell} is not installed")
    return stack_env


@pytest.fixture(scope="module")
def tracking_uri() -> str:
    """Where the local MLflow answers (`make deploy` writes .local/mlflow.env)."""
    path = state_dir() / "mlflow.env"
    if not path.exists():
        unavailable(f"{path} not found: deploy MLflow on the local stack (make deploy)")
    for line in path.read_text().splitlines():
        if line.startswith("export MLFLOW_TRACKING_URI="):
            return line.split("=", 1)[1].strip().strip("'\"")
    unavailable(f"{path} has no MLFLOW_TRACKING_URI")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def mlflow_client_secret(keycloak: dict[str, str], kubectl: Kubectl) -> str:
    found = kubectl.run("-n", "mlflow", "get", "secret", "mlflow-oidc", "-o", "json", check=False)
    if found.returncode != 0:
        unavailable(
            "the mlflow client's secret (mlflow/mlflow-oidc) is missing: make deploy with mlflow_auth_mode=oidc"
        )
    return base64.b64decode(json.loads(found.stdout)["data"]["OIDC_CLIENT_SECRET"]).decode()


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> Client:
    if request.param == "mlflow":
        return Client("mlflow", request.getfixturevalue("mlflow_client_secret"))
    return Client(request.param, None)


def ansible() -> str:
    here = Path(sys.executable).parent / "ansible"
    return str(here) if here.exists() else (shutil.which("ansible") or "ansible")


@pytest.fixture(scope="module")
def renderer(
    keycloak: dict[str, str], tracking_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], dict[str, Path]]:
    """Renders both helper scripts with Ansible's template module, as the workstation role does, with
    the local Keycloak and MLflow and the given client id baked in (once per client id)."""
    rendered: dict[str, dict[str, Path]] = {}

    def render(client_id: str) -> dict[str, Path]:
        if client_id in rendered:
            return rendered[client_id]
        folder = tmp_path_factory.mktemp(f"helpers-{client_id}")
        variables = folder / "vars.json"
        variables.write_text(
            json.dumps(
                {
                    "_mlflow_helper_dir": str(folder),
                    "_mlflow_helper_tracking_uri": tracking_uri,
                    "_mlflow_helper_token_url": token_url(keycloak),
                    "_mlflow_helper_client_id": client_id,
                    "_mlflow_helper_username": keycloak["PLATFORM_ADMIN_USER"],
                    "_mlflow_helper_ca_bundle": "",
                    "ansible_python_interpreter": sys.executable,
                }
            )
        )
        for name in ("mlflow-auth.sh", "mlflow-auth.fish"):
            module_args = json.dumps({"src": str(REPO_ROOT / "templates" / f"{name}.j2"), "dest": str(folder / name)})
            result = subprocess.run(
                [ansible(), "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.template"]
                + ["-a", module_args, "-e", f"@{variables}"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        # dash is Debian's /bin/sh: the POSIX sh version must work there as in bash.
        scripts = {
            "bash": folder / "mlflow-auth.sh",
            "dash": folder / "mlflow-auth.sh",
            "fish": folder / "mlflow-auth.fish",
        }
        rendered[client_id] = scripts
        return scripts

    return render


@pytest.fixture
def scripts(renderer: Callable[[str], dict[str, Path]], client: Client) -> dict[str, Path]:
    return renderer(client.client_id)


@pytest.fixture
def admin_cli_scripts(renderer: Callable[[str], dict[str, Path]]) -> dict[str, Path]:
    return renderer("admin-cli")


def source(
    shell: str,
    script: Path,
    env: dict[str, str],
    then: str = SHOW_ENV,
    stdin: int | None = subprocess.DEVNULL,
    before: str = "",
) -> subprocess.CompletedProcess[str]:
    """Source the script in a fresh shell, then run python -c THEN (if the source succeeded) and exit with
    the source's status. The environment is exactly ``env`` plus PATH and HOME. ``before`` runs first."""
    python = sys.executable
    if shell != "fish":
        program = f'{before}. {script}; rc=$?; [ $rc -eq 0 ] && {python} -c "$SHOW"; exit $rc'
    else:
        program = f'{before}source {script}; set rc $status; test $rc -eq 0; and {python} -c "$SHOW"; exit $rc'
    # A UTF-8 locale, as in a code-server terminal: fish decodes the environment by the locale, so a
    # non-ASCII password reaches it intact only under a UTF-8 locale (bash passes bytes through).
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(script.parent), "LANG": "C.UTF-8", "SHOW": then}
    return subprocess.run(
        [SHELLS[shell], "-c", program],
        env={**base, **env},
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def client_env(client: Client) -> dict[str, str]:
    return {"MLFLOW_KEYCLOAK_CLIENT_SECRET": client.secret} if client.secret else {}


@pytest.mark.parametrize("shell", SHELLS)
def test_sourcing_exports_a_token_and_prints_nothing(
    shell: str,
    scripts: dict[str, Path],
    client: Client,
    keycloak: dict[str, str],
    tracking_uri: str,
    admin: KeycloakAdmin,
) -> None:
    env = {
        "MLFLOW_AUTH_PASSWORD": keycloak["PLATFORM_ADMIN_PASSWORD"],
        "MLFLOW_TRACKING_USERNAME": "someone",
        "MLFLOW_TRACKING_PASSWORD": "would-win-over-the-token",
        **client_env(client),
    }
    result = source(shell, scripts[shell], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"the script printed something: {result.stdout!r}"
    seen = json.loads(lines[0])
    assert seen["MLFLOW_TRACKING_URI"] == tracking_uri
    assert seen["MLFLOW_TRACKING_USERNAME"] is None
    assert seen["MLFLOW_TRACKING_PASSWORD"] is None
    assert claims(seen["MLFLOW_TRACKING_TOKEN"])["azp"] == client.client_id
    assert admin.issued_to(seen["MLFLOW_TRACKING_TOKEN"], keycloak["PLATFORM_ADMIN_USER"])


@pytest.mark.parametrize("shell", SHELLS)
def test_tracing_shows_no_password_secret_or_token(
    shell: str, scripts: dict[str, Path], client: Client, keycloak: dict[str, str]
) -> None:
    """Under `set -x` (fish: fish_trace) the script traces nothing secret, and tracing is on again after it."""
    env = {"MLFLOW_AUTH_PASSWORD": keycloak["PLATFORM_ADMIN_PASSWORD"], **client_env(client)}
    trace = "set fish_trace 1; " if shell == "fish" else "set -x; "
    result = source(shell, scripts[shell], env, before=trace)
    assert result.returncode == 0, result.stderr[-2000:]
    token = json.loads(result.stdout.splitlines()[-1])["MLFLOW_TRACKING_TOKEN"]
    for secret in (keycloak["PLATFORM_ADMIN_PASSWORD"], token, client.secret):
        if secret:
            assert secret not in result.stderr
    # Tracing came back: the python command after the source is traced.
    assert sys.executable in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("shell", SHELLS)
def test_a_curlrc_does_not_redirect_the_secrets(
    shell: str, scripts: dict[str, Path], client: Client, keycloak: dict[str, str], tmp_path: Path
) -> None:
    """curl -q: a ~/.curlrc sending everything through a proxy (here one that does not exist) is ignored."""
    (tmp_path / ".curlrc").write_text('proxy = "http://127.0.0.1:9"\nnoproxy = ""\n')
    env = {"HOME": str(tmp_path), "MLFLOW_AUTH_PASSWORD": keycloak["PLATFORM_ADMIN_PASSWORD"], **client_env(client)}
    result = source(shell, scripts[shell], env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_a_wrong_password_gives_one_error_line_and_changes_nothing(
    shell: str, scripts: dict[str, Path], client: Client, keycloak: dict[str, str]
) -> None:
    env = {
        "MLFLOW_AUTH_PASSWORD": keycloak["PLATFORM_ADMIN_PASSWORD"] + "x",
        "MLFLOW_TRACKING_USERNAME": "kept",
        **client_env(client),
    }
    result = source(shell, scripts[shell], env, then="")
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mlflow-auth: Keycloak refused the password of")


@pytest.mark.parametrize("shell", SHELLS)
def test_failure_leaves_the_environment_as_it_was(
    shell: str, admin_cli_scripts: dict[str, Path], keycloak: dict
) -> None:
    # Sourced in a shell that goes on: the old variables stay, no token appears.
    env = {"MLFLOW_AUTH_PASSWORD": "wrong", "MLFLOW_TRACKING_USERNAME": "kept", "MLFLOW_TRACKING_PASSWORD": "kept"}
    command = "source" if shell == "fish" else "."
    program = f'{command} {admin_cli_scripts[shell]} 2>/dev/null; {sys.executable} -c "$SHOW"'
    result = subprocess.run(
        [SHELLS[shell], "-c", program],
        env={"PATH": "/usr/bin:/bin", "HOME": str(admin_cli_scripts[shell].parent), "SHOW": SHOW_ENV, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    seen = json.loads(result.stdout)
    assert seen["MLFLOW_TRACKING_TOKEN"] is None
    assert seen["MLFLOW_TRACKING_USERNAME"] == "kept"
    assert seen["MLFLOW_TRACKING_PASSWORD"] == "kept"


@pytest.mark.parametrize("shell", SHELLS)
def test_an_unreachable_keycloak_gives_one_error_line(
    shell: str, admin_cli_scripts: dict[str, Path], keycloak: dict[str, str]
) -> None:
    env = {
        "MLFLOW_AUTH_PASSWORD": keycloak["PLATFORM_ADMIN_PASSWORD"],
        "MLFLOW_KEYCLOAK_TOKEN_URL": token_url(keycloak, "http://127.0.0.1:1"),
    }
    result = source(shell, admin_cli_scripts[shell], env, then="")
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mlflow-auth: cannot connect to Keycloak at http://127.0.0.1:1/")


@pytest.mark.parametrize("shell", SHELLS)
def test_tls_is_verified(shell: str, admin_cli_scripts: dict[str, Path], keycloak: dict[str, str]) -> None:
    """The local ingress answers HTTPS with a certificate for *.<domain>, not for 127.0.0.1: a client
    that skipped verification (-k) would reach it; ours must refuse, with or without the right CA."""
    if "INGRESS_HTTPS_PORT" not in keycloak or "MLSTACK_CA_CERT" not in keycloak:
        unavailable("stack.env lacks INGRESS_HTTPS_PORT / MLSTACK_CA_CERT: is the ingress component up?")
    url = token_url(keycloak, f"https://127.0.0.1:{keycloak['INGRESS_HTTPS_PORT']}")
    for extra in ({}, {"MLFLOW_CA_BUNDLE": keycloak["MLSTACK_CA_CERT"]}):
        env = {"MLFLOW_AUTH_PASSWORD": "x", "MLFLOW_KEYCLOAK_TOKEN_URL": url, **extra}
        result = source(shell, admin_cli_scripts[shell], env, then="")
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"mlflow-auth: TLS verification failed for {url}"), result.stderr
    missing = source(
        shell, admin_cli_scripts[shell], {"MLFLOW_AUTH_PASSWORD": "x", "MLFLOW_CA_BUNDLE": "/nonexistent"}, then=""
    )
    assert missing.returncode != 0
    assert missing.stderr == "mlflow-auth: MLFLOW_CA_BUNDLE /nonexistent is not a readable file\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_no_password_in_a_script_gives_one_error_line(shell: str, admin_cli_scripts: dict[str, Path]) -> None:
    result = source(shell, admin_cli_scripts[shell], {}, then="")
    assert result.returncode != 0
    assert result.stderr.startswith("mlflow-auth: no password: set MLFLOW_AUTH_PASSWORD")
    assert result.stderr.count("\n") == 1


class KeycloakAdmin:
    """The realm's admin REST API, as the master realm's bootstrap admin."""

    def __init__(self, env: dict[str, str]) -> None:
        base = env["KEYCLOAK_URL"].rstrip("/")
        form = urllib.parse.urlencode(
            {
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": env["KEYCLOAK_ADMIN"],
                "password": env["KEYCLOAK_ADMIN_PASSWORD"],
            }
        ).encode()
        with urllib.request.urlopen(f"{base}/realms/master/protocol/openid-connect/token", data=form, timeout=30) as r:
            self.token = json.load(r)["access_token"]
        self.realm = f"{base}/admin/realms/{urllib.parse.quote(env['KEYCLOAK_REALM'])}"

    def call(self, method: str, path: str, body: object = None) -> Any:
        request = urllib.request.Request(
            self.realm + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def user_id(self, username: str) -> str:
        return self.call("GET", f"/users?username={urllib.parse.quote(username)}&exact=true")[0]["id"]

    def issued_to(self, token: str, username: str) -> bool:
        """Whether the token belongs to a session of that user (admin-cli's lightweight tokens carry no
        user claims, only the session id)."""
        sessions = self.call("GET", f"/users/{self.user_id(username)}/sessions")
        return claims(token)["sid"] in {session["id"] for session in sessions}


@pytest.fixture(scope="module")
def admin(keycloak: dict[str, str]) -> KeycloakAdmin:
    return KeycloakAdmin(keycloak)


@pytest.fixture(scope="module")
def hostile_user(admin: KeycloakAdmin) -> Iterator[str]:
    """A temporary realm user whose password holds every special character."""
    username = f"it-helper-{uuid.uuid4().hex[:8]}"
    admin.call(
        "POST",
        "/users",
        {
            "username": username,
            "enabled": True,
            "email": f"{username}@example.invalid",
            "emailVerified": True,
            "firstName": "It",
            "lastName": "Helper",
            "credentials": [{"type": "password", "value": HOSTILE_PASSWORD, "temporary": False}],
        },
    )
    user_id = admin.user_id(username)
    try:
        yield username
    finally:
        admin.call("DELETE", f"/users/{user_id}")


@pytest.mark.parametrize("shell", SHELLS)
def test_any_character_works_in_the_password(
    shell: str, scripts: dict[str, Path], client: Client, hostile_user: str, admin: KeycloakAdmin
) -> None:
    env = {"MLFLOW_AUTH_USERNAME": hostile_user, "MLFLOW_AUTH_PASSWORD": HOSTILE_PASSWORD, **client_env(client)}
    result = source(shell, scripts[shell], env)
    assert result.returncode == 0, result.stderr
    assert admin.issued_to(json.loads(result.stdout)["MLFLOW_TRACKING_TOKEN"], hostile_user)


@pytest.mark.parametrize("shell", SHELLS)
def test_secrets_never_reach_curls_command_line(shell: str, admin_cli_scripts: dict[str, Path], tmp_path: Path) -> None:
    """A stand-in curl records its argv and answers like Keycloak: the password and the client secret
    must come through stdin (or a file descriptor), never as arguments other processes can read."""
    fake = tmp_path / "bin"
    fake.mkdir()
    record = tmp_path / "argv"
    (fake / "curl").write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > {record}\n"
        "cat >/dev/null\n"
        'printf \'{"access_token":"a.eyJ9.c","expires_in":300}\\n200\'\n'
    )
    (fake / "curl").chmod(0o755)
    env = {
        "PATH": f"{fake}:/usr/bin:/bin",
        "MLFLOW_AUTH_PASSWORD": "pw-" + HOSTILE_PASSWORD,
        "MLFLOW_KEYCLOAK_CLIENT_SECRET": "client-secret-value",
    }
    result = source(shell, admin_cli_scripts[shell], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["MLFLOW_TRACKING_TOKEN"] == "a.eyJ9.c"
    argv = record.read_text()
    assert "grant_type=password" in argv
    assert "pw-" not in argv
    assert "client-secret-value" not in argv


@pytest.mark.parametrize("shell", SHELLS)
def test_the_mlflow_client_logs_a_run_with_the_exported_token(
    shell: str, renderer: Callable[[str], dict[str, Path]], mlflow_client_secret: str, keycloak: dict[str, str]
) -> None:
    # MLflow (mlflow-oidc-auth) accepts tokens issued for its own client (audience mlflow) only.
    scripts = renderer("mlflow")
    env = {
        "MLFLOW_AUTH_PASSWORD": keycloak["PLATFORM_ADMIN_PASSWORD"],
        "MLFLOW_KEYCLOAK_CLIENT_SECRET": mlflow_client_secret,
        "MLFLOW_BUCKET": "mlflow",
        "MLFLOW_ARTIFACTS_PREFIX": "artifacts",
        "S3_ENDPOINT_URL": keycloak["S3_ENDPOINT_URL"],
        "S3_ACCESS_KEY": keycloak["S3_ACCESS_KEY"],
        "S3_SECRET_KEY": keycloak["S3_SECRET_KEY"],
    }
    roundtrip = (REPO_ROOT / "hack" / "mlflow_roundtrip.py").read_text()
    result = source(shell, scripts[shell], env, then=roundtrip)
    assert result.returncode == 0, result.stderr[-3000:]
    created = json.loads(result.stdout.strip().splitlines()[-1])
    assert any(key.endswith("/model.bin") for key in created["bucket_keys"])
