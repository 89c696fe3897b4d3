"""Integration tests run against the local real stack (make up). They read .local/stack.env.

Without the stack they are skipped locally with the reason; with CI=true a missing component fails
the run, because a CI run that skipped its integration tests proves nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "hack"))

from mlstack_local.secrets import read_env_file  # noqa: E402


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"local stack unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def state_dir() -> Path:
    return Path(os.environ.get("MLSTACK_STATE_DIR", REPO_ROOT / ".local"))


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    path = state_dir() / "stack.env"
    if not path.exists():
        unavailable(f"{path} not found: start the local stack with `make up`")
    return read_env_file(path)


class Kubectl:
    """kubectl against the local cluster, with JSON in and out."""

    def __init__(self, env: dict[str, str]) -> None:
        self.binary = env["KUBECTL"]
        self.kubeconfig = env["KUBECONFIG"]

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            [self.binary, "--kubeconfig", self.kubeconfig, *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )

    def apply(self, *manifests: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests), check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        args = ["get", kind, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        return json.loads(self.run(*args).stdout)


@pytest.fixture(scope="session")
def kubectl(stack_env: dict[str, str]) -> Kubectl:
    for key in ("KUBECTL", "KUBECONFIG"):
        if key not in stack_env:
            unavailable(f"stack.env lacks {key}: is the kube component up?")
    return Kubectl(stack_env)


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, deleted afterwards; restricted Pod Security unless the test says otherwise."""
    name = f"it-{uuid.uuid4().hex[:8]}"
    marker = request.node.get_closest_marker("pod_security")
    level = marker.args[0] if marker else "restricted"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": level}},
        }
    )
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def wait_for(what: str, check, timeout: float = 120.0, interval: float = 1.0):  # noqa: ANN001, ANN201
    """Poll ``check`` until it returns something truthy, and return that; fail with the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last: {last!r})")


def service_url(kubectl: Kubectl, namespace: str, name: str = "mlflow") -> str:
    """``http://<ClusterIP>:<port>`` of a Service: the host is the node, so kube-proxy routes it."""
    spec = kubectl.get("service", name, namespace)["spec"]
    return f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}"


def restricted_container(name: str, image: str, command: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": command,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def run_playbook(
    tmp_path: Path,
    name: str,
    variables: dict[str, Any],
    *args: str,
    timeout: float = 900,
    installed: Path | None = None,
    environment: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook -i inventory/local <name> -e @vars.json [args]`` with the stack's environment.

    ``name`` is a path in the checkout, or with ``installed`` (the ``installed_collection`` fixture) a
    collection name such as ``mlstack.mlflow.site``, run from the installed tarball, outside the checkout.
    ``environment`` is exported after the stack's own environment, as an installer exports
    ``ADMIN_PASSWORD``: through a private file, so no value is on a command line.
    """
    path = tmp_path / f"vars-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(variables))
    env = dict(os.environ)
    if installed is not None:
        assert name.startswith("mlstack.mlflow."), f"an installed collection runs playbooks by FQCN, not {name}"
        env["MLSTACK_ANSIBLE_CONFIG"] = str(installed / "ansible.cfg")
    if environment:
        overrides = tmp_path / f"env-{time.monotonic_ns()}.sh"
        overrides.touch(mode=0o600)
        overrides.write_text("".join(f"export {key}={shlex.quote(value)}\n" for key, value in environment.items()))
        env["MLSTACK_ENV_OVERRIDES"] = str(overrides)
    return subprocess.run(  # noqa: S603
        [
            str(REPO_ROOT / "hack" / "with-stack-env"),
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(REPO_ROOT / "inventory" / "local"),
            name if installed is not None else str(REPO_ROOT / name),
            "-e",
            f"@{path}",
            *args,
        ],
        cwd=installed or REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def installed_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection as users install it: the built tarball installed outside the checkout.

    The directory holds the tarball, ``collections/`` and an ``ansible.cfg`` naming only that path.
    """
    dest = tmp_path_factory.mktemp("installed")
    subprocess.run(  # noqa: S603
        [str(REPO_ROOT / "hack" / "install-collection.sh"), str(dest)],
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        check=True,
        capture_output=True,
        text=True,
    )
    installed = dest / "collections" / "ansible_collections" / "mlstack" / "mlflow"
    assert (installed / "playbooks" / "site.yml").is_file() and not installed.is_symlink()
    return dest


def pg_connect(env: dict[str, str], user: str, password: str) -> Any:
    """A psycopg2 connection to the stack's PostgreSQL ``postgres`` database as ``user``."""
    import psycopg2

    return psycopg2.connect(host=env["PGHOST"], port=env["PGPORT"], user=user, password=password, dbname="postgres")


def admin_sql(env: dict[str, str], statement: Any, *params: str) -> None:
    """One statement as the stack's PostgreSQL admin, outside a transaction (DROP DATABASE refuses one)."""
    conn = pg_connect(env, env["PGUSER"], env["PGPASSWORD"])
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
    finally:
        conn.close()


def changed_count(output: str) -> int:
    """The changed= total of a run's PLAY RECAP lines (the run must have printed one)."""
    found = RECAP.findall(output)
    assert found, f"no PLAY RECAP in the output:\n{output[-3000:]}"
    return sum(int(host[1]) for host in found)
