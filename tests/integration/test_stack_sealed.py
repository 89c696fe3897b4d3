"""The local stack's Sealed Secrets controller unseals what kubeseal seals, and only for the right name.

Needs the local stack (``make up``): reads ``.local/stack.env``. Without it the tests are skipped, or
fail when ``CI=true`` (CI must never pass by skipping).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "hack"))

from mlstack_local.secrets import read_env_file  # noqa: E402

# Every character that breaks naive quoting, URIs or YAML: the value must come back byte for byte.
HOSTILE_VALUE = "p@ss:w/o%r#d?'\""
UNSEAL_TIMEOUT = 60.0
NEEDED = ("KUBECONFIG", "KUBECTL", "KUBESEAL", "SEALED_SECRETS_CERT", "SEALED_SECRETS_URL")


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"local stack unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def stack_env_path() -> Path:
    state = Path(os.environ.get("MLSTACK_STATE_DIR", REPO_ROOT / ".local"))
    return state / "stack.env"


@pytest.fixture(scope="module")
def stack() -> dict[str, str]:
    path = stack_env_path()
    if not path.exists():
        unavailable(f"{path} not found: start the local stack with `make up`")
    values = read_env_file(path)
    missing = [key for key in NEEDED if key not in values]
    if missing:
        unavailable(f"{path} lacks {', '.join(missing)}: is the sealed component up?")
    try:
        with urllib.request.urlopen(f"{values['SEALED_SECRETS_URL']}/healthz", timeout=3) as response:  # noqa: S310
            healthy = response.status == 200
    except OSError:
        healthy = False
    if not healthy:
        unavailable(f"the Sealed Secrets controller at {values['SEALED_SECRETS_URL']} does not answer")
    return values


def kubectl(stack: dict[str, str], *args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(  # noqa: S603
        [stack["KUBECTL"], "--kubeconfig", stack["KUBECONFIG"], *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def kubeseal(stack: dict[str, str], *args: str, stdin: bytes) -> str:
    # A clean environment: kubeseal reads SEALED_SECRETS_* variables as flags, and only ours count.
    env = {key: value for key, value in os.environ.items() if not key.startswith("SEALED_SECRETS_")}
    result = subprocess.run(  # noqa: S603
        [stack["KUBESEAL"], "--cert", stack["SEALED_SECRETS_CERT"], *args],
        input=stdin,
        capture_output=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


def poll[T](what: str, probe: Callable[[], T | None], timeout: float = UNSEAL_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: nothing after {timeout:.0f}s")


def get_json(stack: dict[str, str], namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    out = kubectl(stack, "-n", namespace, "get", kind, name, "-o", "json", "--ignore-not-found", check=True)
    return json.loads(out) if out.strip() else None


def sealed_secret(namespace: str, name: str, encrypted: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "encryptedData": encrypted,
            "template": {"metadata": {"name": name, "namespace": namespace}, "type": "Opaque"},
        },
    }


def unsealed_value(stack: dict[str, str], namespace: str, name: str, key: str) -> bytes:
    def probe() -> bytes | None:
        secret = get_json(stack, namespace, "secret", name)
        if not secret or key not in (secret.get("data") or {}):
            return None
        return base64.b64decode(secret["data"][key])

    return poll(f"Secret {namespace}/{name}", probe)


@pytest.fixture
def namespace(stack: dict[str, str]) -> Iterator[str]:
    name = f"sealed-it-{secrets.token_hex(4)}"
    kubectl(stack, "create", "namespace", name)
    try:
        yield name
    finally:
        kubectl(stack, "delete", "namespace", name, "--wait=false", check=False)


def test_sealed_secret_manifest_unseals_to_the_exact_value(stack: dict[str, str], namespace: str) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": namespace},
        "type": "Opaque",
        "data": {"password": base64.b64encode(HOSTILE_VALUE.encode()).decode()},
    }
    sealed = kubeseal(stack, "--scope", "strict", "-o", "json", stdin=json.dumps(secret).encode())
    assert HOSTILE_VALUE not in sealed
    assert secret["data"]["password"] not in sealed
    assert json.loads(sealed)["kind"] == "SealedSecret"
    kubectl(stack, "apply", "-f", "-", stdin=sealed)
    assert unsealed_value(stack, namespace, "db", "password") == HOSTILE_VALUE.encode()


def test_raw_sealed_value_unseals_to_the_exact_value(stack: dict[str, str], namespace: str) -> None:
    # Raw mode is how a single value is sealed without a Secret manifest (as the collection does).
    encrypted = kubeseal(
        stack,
        "--raw",
        "--scope",
        "strict",
        "--name",
        "app",
        "--namespace",
        namespace,
        "--from-file=/dev/stdin",
        stdin=HOSTILE_VALUE.encode(),
    ).strip()
    kubectl(stack, "apply", "-f", "-", stdin=json.dumps(sealed_secret(namespace, "app", {"token": encrypted})))
    assert unsealed_value(stack, namespace, "app", "token") == HOSTILE_VALUE.encode()


def test_value_sealed_for_another_name_is_not_unsealed(stack: dict[str, str], namespace: str) -> None:
    # Strict scope binds the ciphertext to namespace/name (the RSA-OAEP label): copying it elsewhere fails.
    encrypted = kubeseal(
        stack,
        "--raw",
        "--scope",
        "strict",
        "--name",
        "other",
        "--namespace",
        namespace,
        "--from-file=/dev/stdin",
        stdin=HOSTILE_VALUE.encode(),
    ).strip()
    kubectl(stack, "apply", "-f", "-", stdin=json.dumps(sealed_secret(namespace, "victim", {"token": encrypted})))

    def failed_condition() -> dict[str, Any] | None:
        sealed = get_json(stack, namespace, "sealedsecret", "victim") or {}
        for condition in (sealed.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Synced" and condition.get("status") == "False":
                return condition
        return None

    condition = poll("SealedSecret victim reporting Synced=False", failed_condition)
    assert "no key could decrypt" in condition.get("message", "")
    assert get_json(stack, namespace, "secret", "victim") is None
