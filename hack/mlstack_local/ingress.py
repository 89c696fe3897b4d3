"""Ingress: Debian's nginx on 127.0.0.1:443/80, configured from the cluster's Ingress objects.

Two daemons: the nginx master (``ingress-nginx``, prefix and every file it writes under
``.local/ingress/``) and the small controller of :mod:`mlstack_local.ingressctl`
(``ingress-controller``), which renders the config from the Ingresses, their TLS Secrets and the pod
runner's Service addresses and reloads nginx. So host routing, TLS from the Secret and the
body-size annotation of the MLflow Ingress are exercised for real. It needs the runner (its
``RUNNER_SERVICES`` file), so it comes after it.
"""

from __future__ import annotations

import shutil
import ssl
import sys
from pathlib import Path

from . import ingressctl
from .base import Context
from .config import BIND, PORTS, REPO_ROOT
from .proc import StackError, http_status, recorded_pid, start_daemon, stop, tcp_open, wait_until
from .secrets import read_env_file

NGINX = "ingress-nginx"
CONTROLLER = "ingress-controller"


def https_port() -> int:
    return PORTS.get("ingress_https", 443)


def http_port() -> int:
    return PORTS.get("ingress_http", 80)


class Ingress:
    name = "ingress"
    title = "Ingress (nginx)"
    wanted_secrets: dict[str, str] = {}

    def state_dir(self, ctx: Context) -> Path:
        return ctx.paths.component_dir(self.name)

    def _listen(self) -> ingressctl.Listen:
        return ingressctl.Listen(BIND, http_port(), https_port())

    def _published(self, ctx: Context, key: str, provider: str) -> str:
        """A value another component published, from this run or from .local/stack.env."""
        value = ctx.env.get(key)
        if not value and ctx.paths.stack_env.exists():
            value = read_env_file(ctx.paths.stack_env).get(key)
        if not value:
            raise StackError(f"{key} is not published: start the {provider} first (make up)")
        return value

    # ---- Component -----------------------------------------------------------------------------
    def prepare(self, ctx: Context) -> None:
        if not shutil.which("nginx"):
            raise StackError("`nginx` not found; install it with: apt-get install -y nginx-light")
        state = self.state_dir(ctx)
        # nginx creates its temp dirs (owned by the worker user) but not their parent.
        for sub in ("logs", "tmp", "certs"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        ingressctl.ensure_default_certificate(state)

    def _answers(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the catch-all server has the self-signed default certificate
        return http_status(f"https://{BIND}:{https_port()}/", context=context) is not None

    def is_up(self, ctx: Context) -> bool:
        alive = recorded_pid(ctx.paths, NGINX) is not None and recorded_pid(ctx.paths, CONTROLLER) is not None
        return alive and tcp_open(BIND, https_port())

    def start(self, ctx: Context) -> None:
        kubeconfig = self._published(ctx, "KUBECONFIG", "cluster")
        services = self._published(ctx, "RUNNER_SERVICES", "pod runner")
        if recorded_pid(ctx.paths, NGINX) is not None and not tcp_open(BIND, https_port()):
            stop(ctx.paths, NGINX)  # alive but not listening: start afresh
        if recorded_pid(ctx.paths, NGINX) is None:
            self._start_nginx(ctx)
        stop(ctx.paths, CONTROLLER)
        self._start_controller(ctx, kubeconfig, services)

    def _start_nginx(self, ctx: Context) -> None:
        state = self.state_dir(ctx)
        config = state / ingressctl.CONFIG_NAME
        # Start from a config with only the catch-all server (404); the controller loads the real one.
        config.write_text(ingressctl.render_config([], {}, {}, state=state, listen=self._listen()))
        argv = ["nginx", "-c", str(config), "-p", f"{state}/", "-g", "daemon off;"]
        start_daemon(ctx.paths, NGINX, argv)
        wait_until(f"nginx on {BIND}:{https_port()}", self._answers, timeout=30, paths=ctx.paths, name=NGINX)

    def _start_controller(self, ctx: Context, kubeconfig: str, services: str) -> None:
        state = self.state_dir(ctx)
        synced = state / ingressctl.SYNCED_NAME
        synced.unlink(missing_ok=True)
        listen = self._listen()
        argv = [
            sys.executable,
            "-m",
            "mlstack_local.ingressctl",
            "--kubeconfig",
            kubeconfig,
            "--state",
            str(state),
            "--services",
            services,
            "--address",
            listen.address,
            "--http-port",
            str(listen.http),
            "--https-port",
            str(listen.https),
        ]
        env = {"PYTHONPATH": str(REPO_ROOT / "hack"), "PYTHONUNBUFFERED": "1"}
        start_daemon(ctx.paths, CONTROLLER, argv, env=env)
        wait_until("the ingress controller's first sync", synced.exists, timeout=60, paths=ctx.paths, name=CONTROLLER)

    def stop(self, ctx: Context) -> None:
        stop(ctx.paths, CONTROLLER)
        stop(ctx.paths, NGINX)

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "INGRESS_ADDRESS": BIND,
            "INGRESS_HTTPS_PORT": str(https_port()),
            "INGRESS_HTTP_PORT": str(http_port()),
        }
