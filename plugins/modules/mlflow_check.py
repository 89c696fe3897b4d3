# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verify a live MLflow as a user would, and report every check."""

from __future__ import annotations

DOCUMENTATION = r"""
module: mlflow_check
short_description: Verify a live MLflow deployment as a user would
description:
  - Runs the checks a user relies on, against the public URL, and reports each one as passed or failed.
    C(/health) answers 200; the API refuses a request without credentials (401) unless auth is off;
    with a token from Keycloak (password grant) or basic credentials, a user creates an experiment,
    logs a metric, uploads an artifact through the server's artifact proxy, downloads it back
    byte for byte, then deletes what it created.
  - Fails when any check fails; C(checks) lists them all, so an installer can show the summary.
  - C(connect_to) reaches the public host at another address (like curl's --resolve) while TLS
    verification and the Host header still use the public name, for networks without DNS for it yet.
  - Never returns a token or password.
version_added: 0.1.0
author: mlstack developers
options:
  url:
    description: Public base URL of MLflow, such as https://mlflow.example.com.
    type: str
    required: true
  connect_to:
    description: C(address) or C(address:port) to connect to instead of resolving the URL's host.
    type: str
  auth_mode:
    description: How the deployment authenticates (as mlflow_auth_mode).
    type: str
    choices: [oidc, basic, proxy, none]
    default: oidc
  token_url:
    description: Keycloak token endpoint (auth_mode=oidc or proxy).
    type: str
  client_id:
    description: OIDC client id (auth_mode=oidc or proxy).
    type: str
  client_secret:
    description: OIDC client secret (auth_mode=oidc or proxy), if the client is confidential.
    type: str
  username:
    description: User to act as (Keycloak user for oidc, MLflow user for basic).
    type: str
  password:
    description: That user's password.
    type: str
  validate_certs:
    description: Verify TLS certificates (MLflow and Keycloak).
    type: bool
    default: true
  ca_path:
    description: CA bundle to verify with; the system store when omitted.
    type: path
  timeout:
    description: Seconds per request.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    details: Only reads in check mode (health and the unauthenticated request).
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Verify MLflow as a user would
  mlstack.mlflow.mlflow_check:
    url: https://mlflow.example.com
    token_url: https://auth.example.com/realms/platform/protocol/openid-connect/token
    client_id: mlflow
    client_secret: "{{ mlflow_oidc_client_secret }}"
    username: tkadmin
    password: "{{ lookup('ansible.builtin.env', 'ADMIN_PASSWORD') }}"
  no_log: true
"""

RETURN = r"""
checks:
  description: Every check with its outcome and a short detail.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "health", "passed": true, "detail": "200"}]
passed_count:
  description: Number of passed checks.
  returned: always
  type: int
failed_count:
  description: Number of failed checks.
  returned: always
  type: int
"""

import base64
import http.client
import json
import os
import ssl
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule


@dataclass
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Client:
    """HTTP(S) with an optional fixed address per host, TLS still checked against the host name."""

    context: ssl.SSLContext | None
    timeout: int
    connect_to: dict[str, tuple[str, int]] = field(default_factory=dict)

    def request(
        self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        host = parts.hostname or ""
        address, address_port = self.connect_to.get(host, (host, port))
        if secure:
            conn: http.client.HTTPConnection = _PinnedHTTPSConnection(
                address, address_port, server_hostname=host, context=self.context, timeout=self.timeout
            )
        else:
            conn = http.client.HTTPConnection(address, address_port, timeout=self.timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        all_headers = {"Host": parts.netloc, "User-Agent": "mlstack-mlflow-check/1"}
        all_headers.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            return Response(response.status, response.read())
        finally:
            conn.close()


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to ``address`` but speaks TLS (SNI, certificate name) as ``server_hostname``."""

    def __init__(self, address: str, port: int, *, server_hostname: str, **kwargs: Any) -> None:
        super().__init__(address, port, **kwargs)
        self._server_hostname = server_hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_hostname)


def ssl_context(validate: bool, ca_path: str | None) -> ssl.SSLContext:
    if not validate:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()


def parse_connect_to(url: str, connect_to: str | None) -> dict[str, tuple[str, int]]:
    if not connect_to:
        return {}
    parts = urllib.parse.urlsplit(url)
    default_port = parts.port or (443 if parts.scheme == "https" else 80)
    address, _, port = connect_to.rpartition(":") if connect_to.count(":") == 1 else (connect_to, "", "")
    return {parts.hostname or "": (address, int(port) if port else default_port)}


class Checks:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def record(self, name: str, passed: bool, detail: str = "") -> bool:
        self.results.append({"name": name, "passed": bool(passed), "detail": detail})
        return bool(passed)


def get_token(client: Client, params: dict[str, Any]) -> tuple[str | None, str]:
    form = {
        "grant_type": "password",
        "client_id": params["client_id"],
        "username": params["username"],
        "password": params["password"],
        "scope": "openid",
    }
    if params.get("client_secret"):
        form["client_secret"] = params["client_secret"]
    response = client.request(
        "POST",
        params["token_url"],
        body=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if response.status != 200:
        error = response.json().get("error", "") if response.body.startswith(b"{") else ""
        return None, f"HTTP {response.status} {error}".strip()
    return response.json().get("access_token"), "token issued"


def user_round_trip(client: Client, base: str, auth: dict[str, str], checks: Checks) -> None:
    api = base + "/api/2.0/mlflow"
    json_headers = {**auth, "Content-Type": "application/json"}

    def call(path: str, payload: dict[str, Any]) -> Response:
        return client.request("POST", api + path, json.dumps(payload).encode(), json_headers)

    name = f"mlstack-check-{uuid.uuid4().hex[:8]}"
    created = call("/experiments/create", {"name": name})
    if not checks.record("create experiment", created.status == 200, f"HTTP {created.status}"):
        return
    experiment_id = created.json()["experiment_id"]
    try:
        run = call("/runs/create", {"experiment_id": experiment_id, "start_time": int(time.time() * 1000)})
        if not checks.record("create run", run.status == 200, f"HTTP {run.status}"):
            return
        info = run.json()["run"]["info"]
        run_id = info["run_id"]
        logged = call(
            "/runs/log-metric",
            {"run_id": run_id, "key": "check", "value": 1.0, "timestamp": int(time.time() * 1000), "step": 0},
        )
        checks.record("log metric", logged.status == 200, f"HTTP {logged.status}")
        artifact_path = info["artifact_uri"].removeprefix("mlflow-artifacts:").lstrip("/")
        artifact_url = f"{base}/api/2.0/mlflow-artifacts/artifacts/{artifact_path}/check.bin"
        payload = os.urandom(256 * 1024)
        upload = client.request("PUT", artifact_url, payload, {**auth, "Content-Type": "application/octet-stream"})
        checks.record("upload artifact", upload.status == 200, f"HTTP {upload.status}, {len(payload)} bytes")
        download = client.request("GET", artifact_url, None, auth)
        checks.record(
            "download artifact",
            download.status == 200 and download.body == payload,
            f"HTTP {download.status}, {'same bytes' if download.body == payload else 'different bytes'}",
        )
        client.request("DELETE", artifact_url, None, auth)
        deleted_run = call("/runs/delete", {"run_id": run_id})
        checks.record("delete run", deleted_run.status == 200, f"HTTP {deleted_run.status}")
    finally:
        deleted = call("/experiments/delete", {"experiment_id": experiment_id})
        checks.record("delete experiment", deleted.status == 200, f"HTTP {deleted.status}")


def run_checks(module: AnsibleModule) -> Checks:
    params = module.params
    checks = Checks()
    base = params["url"].rstrip("/")
    client = Client(
        context=ssl_context(params["validate_certs"], params["ca_path"]),
        timeout=params["timeout"],
        connect_to=parse_connect_to(base, params["connect_to"]),
    )
    try:
        health = client.request("GET", base + "/health")
        checks.record("health", health.status == 200, f"HTTP {health.status}")
    except (OSError, http.client.HTTPException) as err:
        checks.record("health", False, f"{base}/health unreachable: {err}")
        return checks
    search = base + "/api/2.0/mlflow/experiments/search?max_results=1"
    anonymous = client.request("GET", search)
    if params["auth_mode"] == "none":
        checks.record("API answers (auth off)", anonymous.status == 200, f"HTTP {anonymous.status}")
    elif params["auth_mode"] == "proxy":
        # The forward-auth service answers first: a redirect to its sign-in page, or 401.
        checks.record("API refuses anonymous requests", anonymous.status in (302, 401), f"HTTP {anonymous.status}")
    else:
        checks.record("API refuses anonymous requests", anonymous.status == 401, f"HTTP {anonymous.status}")
    if module.check_mode:
        return checks
    auth: dict[str, str] = {}
    if params["auth_mode"] in ("oidc", "proxy"):
        try:
            token, detail = get_token(client, params)
        except (OSError, http.client.HTTPException) as err:
            token, detail = None, f"Keycloak unreachable: {err}"
        if not checks.record("get a token from Keycloak", token is not None, detail):
            return checks
        auth = {"Authorization": f"Bearer {token}"}
    elif params["auth_mode"] == "basic":
        basic = base64.b64encode(f"{params['username']}:{params['password']}".encode()).decode()
        auth = {"Authorization": f"Basic {basic}"}
    try:
        user_round_trip(client, base, auth, checks)
    except (OSError, http.client.HTTPException, KeyError, ValueError) as err:
        checks.record("user round trip", False, f"{type(err).__name__}: {err}")
    return checks


_OIDC_PARAMS = ("token_url", "client_id", "username", "password")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "connect_to": {"type": "str"},
            "auth_mode": {"type": "str", "choices": ["oidc", "basic", "proxy", "none"], "default": "oidc"},
            "token_url": {"type": "str"},
            "client_id": {"type": "str"},
            "client_secret": {"type": "str", "no_log": True},
            "username": {"type": "str"},
            "password": {"type": "str", "no_log": True},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "timeout": {"type": "int", "default": 30},
        },
        required_if=[
            ("auth_mode", "oidc", _OIDC_PARAMS),
            ("auth_mode", "proxy", _OIDC_PARAMS),
            ("auth_mode", "basic", ("username", "password")),
        ],
        supports_check_mode=True,
    )
    # required_if counts a parameter given as null as given; a null token_url or password is refused too.
    needed = {"oidc": _OIDC_PARAMS, "proxy": _OIDC_PARAMS, "basic": ("username", "password")}
    missing = [name for name in needed.get(module.params["auth_mode"], ()) if not module.params[name]]
    if missing:
        module.fail_json(msg=f"auth_mode={module.params['auth_mode']} needs {', '.join(missing)} (got none or empty)")
    checks = run_checks(module)
    failed = [c for c in checks.results if not c["passed"]]
    result = {
        "changed": False,
        "checks": checks.results,
        "passed_count": len(checks.results) - len(failed),
        "failed_count": len(failed),
    }
    if failed:
        names = ", ".join(c["name"] for c in failed)
        module.fail_json(msg=f"{len(failed)} of {len(checks.results)} checks failed: {names}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
