"""mlflow_check's failure paths: each failed check is named, the task fails, and no secret is printed.

The module runs in-process with its real HTTP client. What it talks to is :class:`StandIn`, a local HTTP
server on 127.0.0.1 answering the few MLflow and Keycloak endpoints the module calls, the way they answer
(status codes and JSON shapes), and keeping what was uploaded; each test makes one of them misbehave.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from ansible_collections.mlstack.mlflow.plugins.modules import mlflow_check

PASSWORD = "user-Pa55word-only-here"
CLIENT_SECRET = "client-s3cret-only-here"
TOKEN = "eyJ-access-token-only-here"
SECRETS = (PASSWORD, CLIENT_SECRET, TOKEN)
PUBLIC_HOST = "mlflow.example.test"

Route = Callable[["Handler", bytes], tuple[int, bytes]]


class StandIn:
    """Routes by (method, path); ``override`` replaces one route to make it fail."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.artifacts: dict[str, bytes] = {}
        self.override: dict[tuple[str, str], Route] = {}

    def answer(self, handler: Handler, method: str, body: bytes) -> tuple[int, bytes]:
        path = urllib.parse.urlsplit(handler.path).path
        self.requests.append({"method": method, "path": path, "headers": dict(handler.headers), "body": body})
        route = self.override.get((method, path)) or self.route(method, path)
        return route(handler, body)

    def route(self, method: str, path: str) -> Route:
        api = "/api/2.0/mlflow"
        if path.startswith("/api/2.0/mlflow-artifacts/artifacts/"):
            return {"PUT": self.put, "GET": self.get, "DELETE": lambda h, b: (200, b"{}")}[method]
        routes: dict[tuple[str, str], Route] = {
            ("GET", "/health"): lambda h, b: (200, b"OK"),
            ("GET", f"{api}/experiments/search"): self.authorized(lambda h, b: (200, b'{"experiments": []}')),
            ("POST", "/token"): self.token,
            ("POST", f"{api}/experiments/create"): self.authorized(lambda h, b: (200, b'{"experiment_id": "7"}')),
            ("POST", f"{api}/runs/create"): self.authorized(
                lambda h, b: (
                    200,
                    json.dumps(
                        {"run": {"info": {"run_id": "r1", "artifact_uri": "mlflow-artifacts:/7/r1/artifacts"}}}
                    ).encode(),
                )
            ),
            ("POST", f"{api}/runs/log-metric"): self.authorized(lambda h, b: (200, b"{}")),
            ("POST", f"{api}/runs/delete"): self.authorized(lambda h, b: (200, b"{}")),
            ("POST", f"{api}/experiments/delete"): self.authorized(lambda h, b: (200, b"{}")),
        }
        return routes.get((method, path), lambda h, b: (404, b'{"error_code": "ENDPOINT_NOT_FOUND"}'))

    @staticmethod
    def authorized(route: Route) -> Route:
        def check(handler: Handler, body: bytes) -> tuple[int, bytes]:
            if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
                return 401, b"You are not authenticated."
            return route(handler, body)

        return check

    @staticmethod
    def token(handler: Handler, body: bytes) -> tuple[int, bytes]:
        form = urllib.parse.parse_qs(body.decode())
        if form.get("password") != [PASSWORD] or form.get("client_secret") != [CLIENT_SECRET]:
            return 401, b'{"error": "invalid_grant", "error_description": "Invalid user credentials"}'
        return 200, json.dumps({"access_token": TOKEN, "token_type": "Bearer"}).encode()

    def put(self, handler: Handler, body: bytes) -> tuple[int, bytes]:
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, b""
        self.artifacts[handler.path] = body
        return 200, b"{}"

    def get(self, handler: Handler, body: bytes) -> tuple[int, bytes]:
        return (200, self.artifacts[handler.path]) if handler.path in self.artifacts else (404, b"")


class Handler(BaseHTTPRequestHandler):
    stand_in: StandIn

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        status, body = self.server.stand_in.answer(self, self.command, self.rfile.read(length))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.stand_in = StandIn()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.stand_in, server.server_address[1]  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture
def check(run_module, stand_in):
    """Run mlflow_check against the stand-in, reached as http://mlflow.example.test via connect_to."""
    server, port = stand_in

    def run(check_mode: bool = False, **args: Any) -> dict[str, Any]:
        params = {
            "url": f"http://{PUBLIC_HOST}",
            "connect_to": f"127.0.0.1:{port}",
            "token_url": f"http://{PUBLIC_HOST}/token",
            "client_id": "mlflow",
            "client_secret": CLIENT_SECRET,
            "username": "tkadmin",
            "password": PASSWORD,
            "timeout": 5,
            **args,
        }
        result = run_module(mlflow_check.main, params, check_mode=check_mode)
        for secret in SECRETS:
            assert secret not in result["_stdout"], f"{secret} leaked"
        return result

    return run


def outcomes(result: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    return {c["name"]: (c["passed"], c["detail"]) for c in result["checks"]}


def failed_names(result: dict[str, Any]) -> list[str]:
    return [c["name"] for c in result["checks"] if not c["passed"]]


def test_all_checks_pass_against_a_working_deployment(check, stand_in):
    server, _ = stand_in
    result = check()
    assert result.get("failed") is not True, result
    assert result["failed_count"] == 0
    assert [c["name"] for c in result["checks"]] == [
        "health",
        "API refuses anonymous requests",
        "get a token from Keycloak",
        "create experiment",
        "create run",
        "log metric",
        "upload artifact",
        "download artifact",
        "delete run",
        "delete experiment",
    ]
    assert outcomes(result)["download artifact"] == (True, "HTTP 200, same bytes")
    # connect_to reached the stand-in while the Host header kept the public name.
    assert {r["headers"]["Host"] for r in server.requests} == {PUBLIC_HOST}


def test_unreachable_health_fails_and_stops(run_module):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_module(mlflow_check.main, {"url": f"http://127.0.0.1:{port}", "auth_mode": "none", "timeout": 5})
    assert result["failed"] is True
    assert result["msg"] == "1 of 1 checks failed: health"
    passed, detail = outcomes(result)["health"]
    assert not passed and detail.startswith(f"http://127.0.0.1:{port}/health unreachable: ")


def test_unhealthy_server_is_named(check, stand_in):
    server, _ = stand_in
    server.override[("GET", "/health")] = lambda h, b: (503, b"no database")
    result = check()
    assert result["failed"] is True
    assert failed_names(result) == ["health"]
    assert outcomes(result)["health"] == (False, "HTTP 503")
    assert result["msg"] == f"1 of {len(result['checks'])} checks failed: health"


def test_api_open_to_anonymous_requests_fails(check, stand_in):
    server, _ = stand_in
    server.override[("GET", "/api/2.0/mlflow/experiments/search")] = lambda h, b: (200, b'{"experiments": []}')
    result = check()
    assert failed_names(result) == ["API refuses anonymous requests"]
    assert outcomes(result)["API refuses anonymous requests"] == (False, "HTTP 200")


def test_wrong_password_names_the_token_check_and_prints_no_secret(check):
    result = check(password="a-wrong-password-value")
    assert result["failed"] is True
    assert failed_names(result) == ["get a token from Keycloak"]
    assert outcomes(result)["get a token from Keycloak"] == (False, "HTTP 401 invalid_grant")
    assert "a-wrong-password-value" not in result["_stdout"]
    assert len(result["checks"]) == 3  # nothing is tried without a token


def test_unreachable_keycloak_is_named(check):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = check(token_url=f"http://127.0.0.1:{port}/token")
    passed, detail = outcomes(result)["get a token from Keycloak"]
    assert not passed and detail.startswith("Keycloak unreachable: ")


def test_refused_experiment_stops_the_round_trip(check, stand_in):
    server, _ = stand_in
    server.override[("POST", "/api/2.0/mlflow/experiments/create")] = lambda h, b: (
        403,
        b'{"error_code": "PERMISSION_DENIED"}',
    )
    result = check()
    assert failed_names(result) == ["create experiment"]
    assert outcomes(result)["create experiment"] == (False, "HTTP 403")
    assert "create run" not in outcomes(result)


def test_corrupted_artifact_is_named_and_the_experiment_still_deleted(check, stand_in):
    server, _ = stand_in
    server.get = lambda h, b: (200, b"not what was uploaded")  # type: ignore[method-assign]
    result = check()
    assert failed_names(result) == ["download artifact"]
    assert outcomes(result)["download artifact"] == (False, "HTTP 200, different bytes")
    assert outcomes(result)["delete experiment"] == (True, "HTTP 200")
    assert result["msg"] == "1 of 10 checks failed: download artifact"


def test_unexpected_answer_is_reported_as_the_round_trip(check, stand_in):
    server, _ = stand_in
    server.override[("POST", "/api/2.0/mlflow/experiments/create")] = lambda h, b: (200, b"{}")
    result = check()
    assert failed_names(result) == ["user round trip"]
    assert outcomes(result)["user round trip"] == (False, "KeyError: 'experiment_id'")


def test_check_mode_only_reads(check, stand_in):
    server, _ = stand_in
    result = check(check_mode=True)
    assert result.get("failed") is not True, result
    assert [c["name"] for c in result["checks"]] == ["health", "API refuses anonymous requests"]
    assert {(r["method"], r["path"]) for r in server.requests} == {
        ("GET", "/health"),
        ("GET", "/api/2.0/mlflow/experiments/search"),
    }


def test_missing_arguments_are_named(run_module):
    result = run_module(mlflow_check.main, {"url": "http://mlflow.example.test", "auth_mode": "basic"})
    assert result["failed"] is True
    assert result["msg"] == "auth_mode is basic but all of the following are missing: username, password"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"auth_mode": "oidc", "token_url": None}, "auth_mode=oidc needs token_url (got none or empty)"),
        ({"auth_mode": "proxy", "client_id": ""}, "auth_mode=proxy needs client_id (got none or empty)"),
        ({"auth_mode": "basic", "password": None}, "auth_mode=basic needs password (got none or empty)"),
        ({"auth_mode": "sso"}, "value of auth_mode must be one of: oidc, basic, proxy, none, got: sso"),
    ],
)
def test_bad_arguments_are_refused(check, stand_in, args, message):
    server, _ = stand_in
    result = check(**args)
    assert result["failed"] is True
    assert message in result["msg"]
    assert server.requests == []
