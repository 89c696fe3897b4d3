"""The authorization function MLflow's auth app runs in proxy mode: the proxy's user, only with its secret.

The trust decision and the group mapping are pure functions, tested here; the function itself runs in
MLflow against a real auth database in tests/integration/test_proxy.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "server" / "files" / "mlflow_proxy_auth.py"
SECRET = "s3cr3t-value-with-@:/%#?"  # noqa: S105 - a test value
ENV = {
    "MLFLOW_PROXY_USER_HEADER": "X-Auth-Request-User",
    "MLFLOW_PROXY_SECRET_HEADER": "X-Mlflow-Proxy-Secret",
    "MLFLOW_PROXY_SECRET": SECRET,
    "MLFLOW_PROXY_GROUPS_HEADER": "X-Auth-Request-Groups",
    "MLFLOW_PROXY_ADMIN_GROUPS": "role:mlflow-admin,mlflow-admins",
}


@pytest.fixture(scope="module")
def plugin():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("mlflow_proxy_auth", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_the_user_is_trusted_with_the_proxys_secret(plugin) -> None:  # noqa: ANN001
    headers = {"X-Auth-Request-User": " alice ", "X-Mlflow-Proxy-Secret": SECRET}
    assert plugin.trusted_user(headers, ENV) == "alice"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Auth-Request-User": "alice"},
        {"X-Auth-Request-User": "alice", "X-Mlflow-Proxy-Secret": "guessed"},
        {"X-Auth-Request-User": "alice", "X-Mlflow-Proxy-Secret": SECRET[:-1]},
        {"X-Auth-Request-User": "alice", "X-Mlflow-Proxy-Secret": ""},
        {"X-Auth-Request-User": "  ", "X-Mlflow-Proxy-Secret": SECRET},
        {"X-Mlflow-Proxy-Secret": SECRET},
    ],
)
def test_a_forged_or_incomplete_request_is_not_trusted(plugin, headers) -> None:  # noqa: ANN001
    assert plugin.trusted_user(headers, ENV) is None


def test_no_configured_secret_trusts_nobody(plugin) -> None:  # noqa: ANN001
    env = {**ENV, "MLFLOW_PROXY_SECRET": ""}
    assert plugin.trusted_user({"X-Auth-Request-User": "alice", "X-Mlflow-Proxy-Secret": ""}, env) is None
    assert plugin.trusted_user({"X-Auth-Request-User": "alice"}, {}) is None


def test_header_names_come_from_the_environment(plugin) -> None:  # noqa: ANN001
    env = {**ENV, "MLFLOW_PROXY_USER_HEADER": "X-authentik-username", "MLFLOW_PROXY_SECRET_HEADER": "X-Shared"}
    headers = {"X-authentik-username": "bob", "X-Shared": SECRET, "X-Auth-Request-User": "alice"}
    assert plugin.trusted_user(headers, env) == "bob"


@pytest.mark.parametrize(
    ("groups", "admin"),
    [
        ("role:mlflow-user,role:mlflow-admin", True),
        ("role:mlflow-user", False),
        ("authentik Admins|mlflow-admins", True),
        ("", False),
        ("role:mlflow-admin-not", False),
    ],
)
def test_admin_groups_from_the_groups_header(plugin, groups, admin) -> None:  # noqa: ANN001
    assert plugin.is_admin({"X-Auth-Request-Groups": groups}, ENV) is admin


def test_without_a_groups_header_admin_rights_are_left_alone(plugin) -> None:  # noqa: ANN001
    assert (
        plugin.is_admin({"X-Auth-Request-Groups": "role:mlflow-admin"}, {**ENV, "MLFLOW_PROXY_GROUPS_HEADER": ""})
        is None
    )
    assert plugin.is_admin({}, {**ENV, "MLFLOW_PROXY_ADMIN_GROUPS": ""}) is None


@pytest.mark.parametrize(
    ("path", "stamped"),
    [
        ("/api/2.0/mlflow/runs/create", True),
        ("/ajax-api/2.0/mlflow/runs/create", True),
        ("/api/2.0/mlflow/runs/update", False),
        ("/api/2.0/mlflow/runs/create/extra", False),
    ],
)
def test_created_runs_carry_the_authenticated_user(plugin, path, stamped) -> None:  # noqa: ANN001
    class Request:
        method = "POST"

        def __init__(self) -> None:
            self.path = path
            self.body = {"experiment_id": "1", "user_id": "root"}

        def get_json(self, force: bool, silent: bool) -> dict:
            assert force and silent  # as MLflow's handler asks, so both share werkzeug's cached body
            return self.body

    request = Request()
    plugin._stamp_run_owner(request, "alice")  # noqa: SLF001
    assert request.body["user_id"] == ("alice" if stamped else "root")
