"""MLflow's auth app behind an authenticating proxy (mlflow_auth_mode=proxy): trust the proxy's user header.

MLflow's basic-auth app calls the ``authorization_function`` its ini names (documented hook) for every
protected request; this one is ``mlflow_proxy_auth:authenticate_request_proxy``. The forward-auth service
(oauth2-proxy, or Authentik's outpost) authenticates the user; the ingress copies the headers the auth
response names (``auth-response-headers``) into the request to MLflow, after deleting whatever the client
sent under those names. So the user header is only believed when the request also carries the proxy's
shared secret (``MLFLOW_PROXY_SECRET`` in a Secret; the auth service adds it to its answer, the ingress
passes it on). A request that did not come through the proxy - a pod calling the Service directly, with
a forged user header - has no secret and gets 401.

Why a secret and not the peer address: MLflow runs the same function for its FastAPI routes inside a
synthetic Flask request context that has no peer address, the ingress controller's address is not
stable across clusters, and a node-local address is shared by everything on the node.

Users are created on first sight (with a random password nobody knows: basic credentials never log in
here). With a groups header configured, membership of an admin group makes the user an MLflow admin,
and losing it takes that away. Runs are created in the authenticated user's name: MLflow stores the
``user_id`` the client sends, so it is replaced before the handler reads the request.

Configuration (environment of the MLflow container): MLFLOW_PROXY_USER_HEADER, MLFLOW_PROXY_SECRET_HEADER,
MLFLOW_PROXY_SECRET, MLFLOW_PROXY_GROUPS_HEADER (optional), MLFLOW_PROXY_ADMIN_GROUPS (comma separated).
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from collections.abc import Mapping

USER_HEADER_ENV = "MLFLOW_PROXY_USER_HEADER"
SECRET_HEADER_ENV = "MLFLOW_PROXY_SECRET_HEADER"  # noqa: S105 - the name of a variable
SECRET_ENV = "MLFLOW_PROXY_SECRET"  # noqa: S105 - the name of a variable
GROUPS_HEADER_ENV = "MLFLOW_PROXY_GROUPS_HEADER"
ADMIN_GROUPS_ENV = "MLFLOW_PROXY_ADMIN_GROUPS"
# oauth2-proxy joins groups with ",", Authentik with "|".
GROUP_SEPARATORS = re.compile(r"[,|]")
CREATE_RUN_PATH = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/runs/create\Z")


def trusted_user(headers: Mapping[str, str], environ: Mapping[str, str]) -> str | None:
    """The proxy's user name, or None unless the request carries the proxy's shared secret.

    A missing or empty secret in the environment trusts nobody (fail closed).
    """
    expected = environ.get(SECRET_ENV, "")
    presented = headers.get(environ.get(SECRET_HEADER_ENV, "X-Mlflow-Proxy-Secret")) or ""
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        return None
    user = (headers.get(environ.get(USER_HEADER_ENV, "X-Auth-Request-User")) or "").strip()
    return user or None


def is_admin(headers: Mapping[str, str], environ: Mapping[str, str]) -> bool | None:
    """Whether the proxy says the user is in an admin group; None when no groups header is configured."""
    header = environ.get(GROUPS_HEADER_ENV, "")
    admin_groups = {g.strip() for g in environ.get(ADMIN_GROUPS_ENV, "").split(",") if g.strip()}
    if not header or not admin_groups:
        return None
    groups = {g.strip() for g in GROUP_SEPARATORS.split(headers.get(header) or "") if g.strip()}
    return bool(groups & admin_groups)


def _ensure_user(store, username: str, admin: bool | None) -> None:  # noqa: ANN001 - MLflow's auth store
    if not store.has_user(username):
        try:
            store.create_user(username, secrets.token_urlsafe(32), is_admin=bool(admin))
        except Exception:  # noqa: BLE001 - another worker created it first (unique username)
            if not store.has_user(username):
                raise
            return
        return
    if admin is not None and store.get_user(username).is_admin != admin:
        store.update_user(username, is_admin=admin)


def _stamp_run_owner(request, username: str) -> None:  # noqa: ANN001 - flask.request
    """Make a created run carry the authenticated user: the handler reads the same parsed JSON."""
    if request.method != "POST" or not CREATE_RUN_PATH.search(request.path):
        return
    body = request.get_json(force=True, silent=True)
    if isinstance(body, dict):
        body["user_id"] = username


def authenticate_request_proxy():  # noqa: ANN201 - a werkzeug Authorization, or a Response refusing
    """MLflow ``authorization_function``: the user the proxy authenticated, or 401."""
    from flask import Response, request
    from mlflow.server.auth import store
    from werkzeug.datastructures import Authorization

    username = trusted_user(request.headers, os.environ)
    if username is None:
        return Response("Authentication goes through the MLflow proxy.", status=401)
    _ensure_user(store, username, is_admin(request.headers, os.environ))
    _stamp_run_owner(request, username)
    return Authorization("basic", {"username": username, "password": ""})
