"""The group-detection plugin mlflow-oidc-auth loads: MLflow groups are Keycloak realm and client roles."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "server" / "files" / "mlflow_keycloak_groups.py"


@pytest.fixture(scope="module")
def plugin():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("mlflow_keycloak_groups", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


CLAIMS = {
    "realm_access": {"roles": ["mlflow-admin", "default-roles-mlstack", "offline_access"]},
    "resource_access": {"mlflow": {"roles": ["editor"]}, "account": {"roles": ["manage-account"]}},
}


def test_realm_and_own_client_roles_from_validated_claims(plugin, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("OIDC_CLIENT_ID", "mlflow")
    groups = plugin.get_user_groups("ignored-token", token_response={"access_token": "x", "claims": CLAIMS})
    assert groups == ["mlflow-admin", "default-roles-mlstack", "offline_access", "editor"]


def test_other_clients_roles_are_not_groups(plugin, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("OIDC_CLIENT_ID", "mlflow")
    assert "manage-account" not in plugin.get_user_groups(None, token_response={"claims": CLAIMS})


def test_userinfo_is_used_on_the_browser_path(plugin, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("OIDC_CLIENT_ID", raising=False)
    response = {"access_token": "x", "userinfo": {"realm_access": {"roles": ["mlflow-user"]}}}
    assert plugin.get_user_groups("x", token_response=response) == ["mlflow-user"]


def test_duplicates_are_removed_in_order(plugin) -> None:  # noqa: ANN001
    claims = {"realm_access": {"roles": ["a", "b", "a"]}, "groups": ["b", "c"]}
    assert plugin.roles_from_claims(claims) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "claims",
    [{}, {"realm_access": "not-a-dict"}, {"realm_access": {"roles": [1, None, "ok"]}}, {"resource_access": []}],
)
def test_malformed_claims_yield_only_string_roles(plugin, claims) -> None:  # noqa: ANN001
    assert all(isinstance(group, str) for group in plugin.roles_from_claims(claims, "mlflow"))


def test_an_unverifiable_token_yields_no_groups(plugin) -> None:  # noqa: ANN001
    # Without validated claims, the raw token is only trusted after mlflow-oidc-auth's own validation;
    # here that package is absent (or refuses the token), so nothing is granted.
    assert (
        plugin.get_user_groups("eyJhbGciOiJub25lIn0.eyJyZWFsbV9hY2Nlc3MiOnsicm9sZXMiOlsibWxmbG93LWFkbWluIl19fQ.") == []
    )
