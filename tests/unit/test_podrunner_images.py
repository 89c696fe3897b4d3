"""Images to local runtimes, and pull-secret checks (a local registry stand-in for the loopback case)."""

from __future__ import annotations

import base64
import http.server
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local.podrunner.images import HOST_PATH, ImageError, ImageResolver, check_pull, split_image  # noqa: E402
from podrunner_fakes import FakeSource  # noqa: E402

GOOD = base64.b64encode(b"robot$mlflow:pa@ss").decode()


@pytest.mark.parametrize(
    ("image", "host", "repository"),
    [
        ("busybox", None, "busybox"),
        ("docker.io/library/busybox:1.36", "docker.io", "library/busybox"),
        ("harbor.example.com/ml/mlflow:3.17.2", "harbor.example.com", "ml/mlflow"),
        ("127.0.0.1:35000/mlstack/mlflow@sha256:abc", "127.0.0.1:35000", "mlstack/mlflow"),
        ("localhost/mlflow", "localhost", "mlflow"),
        ("ghcr.io/mlflow/mlflow-server:v1", "ghcr.io", "mlflow/mlflow-server"),
    ],
)
def test_split_image(image: str, host: str | None, repository: str) -> None:
    assert split_image(image) == (host, repository)


def test_runtime_choice(tmp_path: Path) -> None:
    venv = tmp_path / "mlflow-abc"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    resolver = ImageResolver(venv)
    mlflow = resolver.resolve("harbor.example.com/ml/mlflow:3.17.2")
    assert mlflow.path.split(":")[0] == str(venv / "bin")
    assert resolver.resolve("busybox:1.36").path == HOST_PATH
    assert resolver.resolve("ghcr.io/mlflow/mlflow-server:v1").path == HOST_PATH
    with pytest.raises(ImageError):
        ImageResolver(None).resolve("mlflow")


class Registry(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.headers.get("Authorization") == f"Basic {GOOD}" else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def pull_secret(host: str, auth: str) -> dict[str, str]:
    return {".dockerconfigjson": json.dumps({"auths": {host: {"auth": auth}}})}


def test_pull_secrets(registry: str) -> None:
    source = FakeSource()
    with pytest.raises(ImageError, match="not found"):
        check_pull("busybox", ["missing"], "ns1", source)
    check_pull("busybox", [], "ns1", source)  # remote registries are not contacted
    image = f"{registry}/mlstack/mlflow:1"
    with pytest.raises(ImageError, match="401"):
        check_pull(image, [], "ns1", source)
    source.secrets[("ns1", "bad")] = pull_secret(registry, base64.b64encode(b"robot$mlflow:wrong").decode())
    with pytest.raises(ImageError, match="401"):
        check_pull(image, ["bad"], "ns1", source)
    source.secrets[("ns1", "good")] = pull_secret(f"http://{registry}", GOOD)
    check_pull(image, ["good"], "ns1", source)
