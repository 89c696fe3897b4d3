"""Where the MLflow deployed on the local stack answers: the pod runner's Service address."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .base import Context
from .proc import StackError
from .secrets import read_env_file


def service_address(services_file: Path, namespace: str, service: str) -> tuple[str, int]:
    """Address and first port the pod runner serves ``namespace/service`` on."""
    try:
        services = json.loads(services_file.read_text())
    except (OSError, ValueError) as err:
        raise StackError(f"the pod runner has published no Services ({services_file}): {err}") from err
    entry = services.get(f"{namespace}/{service}")
    if not entry or not entry.get("ports"):
        raise StackError(f"the pod runner serves no Service {namespace}/{service}; is MLflow deployed?")
    return entry["address"], int(next(iter(entry["ports"].values())))


def public_host(kubectl: str, kubeconfig: str, namespace: str) -> str:
    """The host of the MLflow Ingress (what a browser would send as Host)."""
    result = subprocess.run(  # noqa: S603
        [
            kubectl,
            "--kubeconfig",
            kubeconfig,
            "-n",
            namespace,
            "get",
            "ingress",
            "mlflow",
            "-o",
            "jsonpath={.spec.rules[0].host}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def mlflow_env(ctx: Context, namespace: str, service: str) -> dict[str, str]:
    env = read_env_file(ctx.paths.stack_env)
    address, port = service_address(Path(env["RUNNER_SERVICES"]), namespace, service)
    host = public_host(env["KUBECTL"], env["KUBECONFIG"], namespace) or f"{service}.{namespace}.svc"
    return {"MLFLOW_TRACKING_URI": f"http://{address}:{port}", "MLFLOW_HOST": host}
