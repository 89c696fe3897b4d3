"""The local stack's Keycloak component: command lines, payloads and the per-state home (no network)."""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

# The launcher lives in hack/ (run with PYTHONPATH=hack); make it importable for plain pytest too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import keycloak  # noqa: E402
from mlstack_local.base import Context  # noqa: E402
from mlstack_local.config import NODE_IP, PORTS, Paths  # noqa: E402
from mlstack_local.secrets import HOSTILE, hostile_password  # noqa: E402

HOSTILE_PASSWORD = "a@b:c/d%e#f?g&h=i+j k"  # noqa: S105 - a test value


@pytest.fixture
def ctx(paths: Paths) -> Context:
    secrets = {key: hostile_password() for key in keycloak.Keycloak().wanted_secrets}
    return Context(paths=paths, secrets=secrets)


def fake_dist(root: Path) -> Path:
    """The parts of a keycloak-quarkus-dist tree that make_home touches."""
    for name in ("bin/kc.sh", "conf/keycloak.conf", "lib/app/keycloak.jar", "lib/quarkus/quarkus-application.dat"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"pristine {name}\n")
    for name in ("lib/quarkus-run.jar", "version.txt", "lib/lib/main/x.jar", "providers/README.md", "themes/README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("pristine\n")
    return root


def test_paths_are_keyed_by_version_and_state(paths: Paths) -> None:
    assert keycloak.dist_dir(paths, "26.7.3") == paths.cache / "keycloak-26.7.3"
    assert keycloak.home_dir(paths) == paths.state / "keycloak" / "home"


def test_mvn_argv_copies_the_dist_tarball(tmp_path: Path) -> None:
    argv = keycloak.mvn_argv("26.7.3", tmp_path)
    assert argv[0] == "mvn"
    assert "org.apache.maven.plugins:maven-dependency-plugin:3.11.0:copy" in argv
    assert "-Dartifact=org.keycloak:keycloak-quarkus-dist:26.7.3:tar.gz" in argv
    assert f"-DoutputDirectory={tmp_path}" in argv


def test_server_argv_binds_http_to_the_node_ip_and_management_to_loopback(tmp_path: Path) -> None:
    argv = keycloak.server_argv(tmp_path)
    assert argv[:2] == [str(tmp_path / "bin" / "kc.sh"), "start-dev"]
    assert f"--http-host={NODE_IP}" in argv
    assert "--http-management-host=127.0.0.1" in argv
    assert f"--http-port={PORTS['keycloak']}" in argv
    assert f"--http-management-port={PORTS['keycloak_management']}" in argv
    assert "--health-enabled=true" in argv
    assert f"--hostname=http://{NODE_IP}:{PORTS['keycloak']}" in argv
    assert not any("0.0.0.0" in arg for arg in argv)  # noqa: S104 - asserting its absence


def test_server_env_points_kc_sh_at_the_given_jdk(tmp_path: Path) -> None:
    env = keycloak.server_env(tmp_path, HOSTILE_PASSWORD)
    assert env["JAVA_HOME"] == str(tmp_path)
    assert env["JAVA"] == str(tmp_path / "bin" / "java")
    assert env["KC_BOOTSTRAP_ADMIN_USERNAME"] == keycloak.KEYCLOAK_ADMIN_USER
    assert env["KC_BOOTSTRAP_ADMIN_PASSWORD"] == HOSTILE_PASSWORD


@pytest.mark.parametrize("password", [HOSTILE_PASSWORD, hostile_password()])
def test_token_form_round_trips_hostile_passwords(password: str) -> None:
    body = keycloak.token_form("platform-admin", password).decode()
    assert not any(char in body for char in "@:/#? ")  # "%" stays, as the escape character itself
    assert urllib.parse.parse_qs(body, strict_parsing=True) == {
        "grant_type": ["password"],
        "client_id": ["admin-cli"],
        "username": ["platform-admin"],
        "password": [password],
    }


def test_token_form_escapes_every_hostile_character() -> None:
    body = keycloak.token_form("u", HOSTILE).decode()
    assert body.endswith("&password=%40%3A%2F%25%23%3F")


def test_realm_and_user_payloads() -> None:
    assert keycloak.realm_payload() == {"realm": "mlstack", "enabled": True}
    user = keycloak.user_payload("platform-user", "Platform", "User")
    assert user["username"] == "platform-user"
    assert user["email"] == "platform-user@example.com"
    assert (user["firstName"], user["lastName"]) == ("Platform", "User")
    assert user["enabled"] is True
    assert user["emailVerified"] is True
    assert user["requiredActions"] == []
    assert keycloak.password_payload("pw") == {"type": "password", "value": "pw", "temporary": False}


def test_wanted_secrets_and_env(ctx: Context) -> None:
    component = keycloak.Keycloak()
    assert component.name == "keycloak"
    assert component.title == "Keycloak 26"
    assert set(component.wanted_secrets.values()) == {"password"}
    env = component.env(ctx)
    assert env["KEYCLOAK_URL"] == f"http://{NODE_IP}:{PORTS['keycloak']}"
    assert env["KEYCLOAK_ADMIN"] == "admin"
    assert env["KEYCLOAK_ADMIN_PASSWORD"] == ctx.secrets["keycloak_admin_password"]
    assert env["KEYCLOAK_REALM"] == "mlstack"
    assert env["PLATFORM_ADMIN_USER"] == "platform-admin"
    assert env["PLATFORM_ADMIN_PASSWORD"] == ctx.secrets["platform_admin_password"]
    assert env["PLATFORM_USER"] == "platform-user"
    assert env["PLATFORM_USER_PASSWORD"] == ctx.secrets["platform_user_password"]


def test_make_home_copies_mutable_parts_and_links_the_jars(tmp_path: Path) -> None:
    dist = fake_dist(tmp_path / "dist")
    home = tmp_path / "home"
    keycloak.make_home(dist, home)
    for part in keycloak.HOME_COPIED:
        assert (home / part).exists()
        assert not (home / part).is_symlink()
    for part in keycloak.HOME_LINKED:
        assert (home / part).resolve() == (dist / part).resolve()
    assert (home / "data").is_dir()
    # Keycloak re-augmenting for dev mode rewrites lib/quarkus: the cache must not see it.
    (home / "lib/quarkus/quarkus-application.dat").write_text("augmented for dev\n")
    assert (dist / "lib/quarkus/quarkus-application.dat").read_text().startswith("pristine")


def test_make_home_is_kept_then_rebuilt_for_another_dist_without_losing_data(tmp_path: Path) -> None:
    old, new = fake_dist(tmp_path / "keycloak-1"), fake_dist(tmp_path / "keycloak-2")
    home = tmp_path / "home"
    keycloak.make_home(old, home)
    (home / "lib/quarkus/quarkus-application.dat").write_text("augmented\n")
    (home / "data" / "h2").mkdir()
    (home / "data" / "h2" / "keycloakdb.mv.db").write_text("realm data\n")

    keycloak.make_home(old, home)  # same dist: the augmented build is kept
    assert (home / "lib/quarkus/quarkus-application.dat").read_text() == "augmented\n"

    keycloak.make_home(new, home)  # another version: fresh copies and links, same database
    assert (home / "lib/quarkus/quarkus-application.dat").read_text().startswith("pristine")
    assert (home / "lib/lib").resolve() == (new / "lib/lib").resolve()
    assert (home / "data" / "h2" / "keycloakdb.mv.db").read_text() == "realm data\n"


def test_prepare_is_a_no_op_when_the_dist_is_cached(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist(keycloak.dist_dir(ctx.paths))

    def no_download(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("prepare downloaded although the dist is cached")

    monkeypatch.setattr(keycloak, "download_dist", no_download)
    monkeypatch.setattr(keycloak, "java_home", lambda: Path("/jdk"))
    keycloak.Keycloak().prepare(ctx)


class FakeApi:
    """Records admin API calls; knows one realm and the users created through it."""

    def __init__(self, existing_users: list[dict[str, Any]]) -> None:
        self.users = list(existing_users)
        self.calls: list[tuple[str, str, Any]] = []

    def call(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        self.calls.append((method, path.split("?")[0], payload))
        if method == "GET" and "/users?" in path:
            return 200, list(self.users)
        if method == "POST" and path.endswith("/users"):
            self.users.append({"id": "new-id", **payload})
            return 201, None
        return 204, None


@pytest.mark.parametrize("existing", [[], [{"id": "new-id", "username": "platform-user"}]])
def test_ensure_user_creates_or_updates_then_resets_the_password(existing: list[dict[str, Any]]) -> None:
    api = FakeApi(existing)
    payload = keycloak.user_payload("platform-user", "Platform", "User")
    keycloak.ensure_user(api, "mlstack", payload, HOSTILE_PASSWORD)  # type: ignore[arg-type]
    writes = [(method, path) for method, path, _ in api.calls if method != "GET"]
    expected = [("PUT", "/mlstack/users/new-id"), ("PUT", "/mlstack/users/new-id/reset-password")]
    assert writes == ([("POST", "/mlstack/users")] if not existing else []) + expected
    assert api.calls[-1][2] == {"type": "password", "value": HOSTILE_PASSWORD, "temporary": False}
