"""mlflow-oidc-auth group detection for Keycloak: MLflow groups are Keycloak realm and client roles.

mlflow-oidc-auth imports the module named by OIDC_GROUP_DETECTION_PLUGIN and calls
``get_user_groups(access_token, token_response=None)``. On the bearer-token path it passes
``token_response={"access_token": ..., "claims": <validated claims>}``; on the browser path the token
response of the code exchange. Groups come only from claims that were validated (signature, and
audience/issuer when configured), never from an unverified token.

Keycloak puts realm roles in ``realm_access.roles`` and client roles in
``resource_access.<client>.roles``; the collection's protocol mappers add both to the access token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

CLIENT_ID_ENV = "OIDC_CLIENT_ID"


def roles_from_claims(claims: Mapping[str, Any], client_id: str | None = None) -> list[str]:
    """Realm roles, then the client's roles, without duplicates, in a stable order."""
    groups: list[str] = []
    realm_access = claims.get("realm_access")
    if isinstance(realm_access, Mapping):
        groups += [r for r in realm_access.get("roles", []) if isinstance(r, str)]
    resource_access = claims.get("resource_access")
    if client_id and isinstance(resource_access, Mapping):
        client = resource_access.get(client_id)
        if isinstance(client, Mapping):
            groups += [r for r in client.get("roles", []) if isinstance(r, str)]
    groups += (
        [g for g in claims.get("groups", []) if isinstance(g, str)] if isinstance(claims.get("groups"), list) else []
    )
    return list(dict.fromkeys(groups))


def _validated_claims(token_response: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not isinstance(token_response, Mapping):
        return {}
    for key in ("claims", "userinfo", "id_token_claims"):
        value = token_response.get(key)
        if isinstance(value, Mapping):
            return value
    return {}


def _claims_from_access_token(access_token: str) -> Mapping[str, Any]:
    """Claims of the access token, verified by mlflow-oidc-auth's own validator (JWKS, aud, iss)."""
    try:
        from mlflow_oidc_auth.auth import validate_token  # type: ignore[import-not-found]
    except ImportError:
        return {}
    try:
        claims = validate_token(access_token)
    except Exception:  # noqa: BLE001 - an invalid token simply yields no groups
        return {}
    return claims if isinstance(claims, Mapping) else {}


def get_user_groups(access_token: str | None = None, token_response: Mapping[str, Any] | None = None) -> list[str]:
    claims = _validated_claims(token_response)
    if not claims and access_token:
        claims = _claims_from_access_token(access_token)
    return roles_from_claims(claims, os.environ.get(CLIENT_ID_ENV))
