"""Where the MLflow deployed on the local stack answers for clients on this machine.

The host is the node: kube-proxy routes the Service's ClusterIP to the MLflow pods, so that is the
tracking URI (the local inventory allows ``10.96.0.*`` hosts for it). Browsers and 18_test use the
public host through Traefik instead (``MLFLOW_HOST`` on 127.0.0.1:443).
"""

from __future__ import annotations

import json
import subprocess

from .base import Context
from .proc import StackError
from .secrets import read_env_file


def _kubectl_json(env: dict[str, str], *args: str) -> dict:
    result = subprocess.run(  # noqa: S603
        [env["KUBECTL"], "--kubeconfig", env["KUBECONFIG"], *args, "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def service_url(service: dict) -> str:
    """``http://<ClusterIP>:<first port>`` of a Service object."""
    spec = service.get("spec", {})
    address, ports = spec.get("clusterIP"), spec.get("ports") or []
    if not address or address == "None" or not ports:
        name = service.get("metadata", {}).get("name")
        raise StackError(f"the Service {name} has no ClusterIP and port")
    return f"http://{address}:{ports[0]['port']}"


def mlflow_env(ctx: Context, namespace: str, service: str) -> dict[str, str]:
    env = read_env_file(ctx.paths.stack_env)
    try:
        svc = _kubectl_json(env, "-n", namespace, "get", "service", service)
    except StackError as err:
        raise StackError(f"no Service {namespace}/{service}: is MLflow deployed? ({err})") from err
    host = ""
    try:
        ingress = _kubectl_json(env, "-n", namespace, "get", "ingress", service)
        host = ingress["spec"]["rules"][0]["host"]
    except (StackError, KeyError, IndexError):
        pass
    return {
        "MLFLOW_TRACKING_URI": service_url(svc),
        "MLFLOW_HOST": host or f"{service}.{namespace}.svc",
        # The host is outside the cluster's DNS: artifact downloads stay proxied by the server (README).
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    }
