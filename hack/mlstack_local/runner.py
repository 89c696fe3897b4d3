"""The pod runner: a small kubelet for the ``mlstack-runner`` Node, which KWOK does not manage.

Pods scheduled there (``nodeSelector: {mlstack.io/pod-runner: "true"}``) really run, as local process
groups, so a Deployment rollout or a Job's completion means what it says. The daemon lives in
:mod:`mlstack_local.podrunner`; this module builds its MLflow runtime and starts and stops it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from pathlib import Path

from .base import Context
from .config import PORTS, REPO_ROOT
from .podrunner import NODE_NAME
from .podrunner.images import requirements_hash
from .proc import StackError, http_status, recorded_pid, run_logged, say, start_daemon, stop, wait_until
from .secrets import read_env_file

REQUIREMENTS = REPO_ROOT / "images" / "mlflow" / "requirements.txt"
PYTHON_VERSION = "3.13.0"
MARKER = ".mlstack-requirements"


def _python() -> str:
    """The CPython the MLflow image uses (pyenv's 3.13), for the runtime venv."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()  # noqa: S607
    except (OSError, subprocess.CalledProcessError):
        root = str(Path.home() / ".pyenv")
    python = Path(root) / "versions" / PYTHON_VERSION / "bin" / "python3"
    if not python.exists():
        raise StackError(
            f"Python {PYTHON_VERSION} not found at {python}: install it with `pyenv install {PYTHON_VERSION}`"
        )
    return str(python)


class Runner:
    name = "runner"
    title = "Pod runner (kubelet for MLflow pods)"
    wanted_secrets: dict[str, str] = {}

    # ---- locations ---------------------------------------------------------------------------
    def state_dir(self, ctx: Context) -> Path:
        return ctx.paths.component_dir("runner")

    def mlflow_venv(self, ctx: Context) -> Path:
        return ctx.paths.cache / "venvs" / f"mlflow-{requirements_hash(REQUIREMENTS)}"

    def _kubeconfig(self, ctx: Context) -> str:
        if ctx.env.get("KUBECONFIG"):
            return ctx.env["KUBECONFIG"]
        if ctx.paths.stack_env.exists():
            published = read_env_file(ctx.paths.stack_env)
            if published.get("KUBECONFIG"):
                return published["KUBECONFIG"]
        from .kube import Kube

        return str(Kube().kubeconfig(ctx))

    # ---- Component -----------------------------------------------------------------------------
    def prepare(self, ctx: Context) -> None:
        """Build the MLflow runtime venv from images/mlflow/requirements.txt, once per content."""
        venv = self.mlflow_venv(ctx)
        digest = requirements_hash(REQUIREMENTS)
        marker = venv / MARKER
        if marker.exists() and marker.read_text().strip() == digest:
            return
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        say(f"    building the MLflow runtime venv {venv} (a few minutes on first run)")
        run_logged(ctx.paths, "runner-venv", [_python(), "-m", "venv", str(venv)], what="create the MLflow venv")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        run_logged(ctx.paths, "runner-venv", [*pip, "-r", str(REQUIREMENTS)], what="pip install MLflow runtime")
        marker.write_text(digest + "\n")

    def _healthy(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return http_status(f"https://127.0.0.1:{PORTS['runner_health']}/healthz", context=context) == 200

    def is_up(self, ctx: Context) -> bool:
        """The daemon's PID is alive and it reports the Node Ready with a fresh Lease."""
        return recorded_pid(ctx.paths, self.name) is not None and self._healthy()

    def start(self, ctx: Context) -> None:
        if recorded_pid(ctx.paths, self.name) is not None:
            stop(ctx.paths, self.name, timeout=25)  # alive but unhealthy: start afresh
        hack = str(REPO_ROOT / "hack")
        argv = [
            sys.executable,
            "-m",
            "mlstack_local.podrunner",
            "--kubeconfig",
            self._kubeconfig(ctx),
            "--state",
            str(self.state_dir(ctx)),
            "--mlflow-venv",
            str(self.mlflow_venv(ctx)),
            "--port",
            str(PORTS["runner_health"]),
        ]
        start_daemon(ctx.paths, self.name, argv, env={"PYTHONPATH": hack, "PYTHONUNBUFFERED": "1"})
        wait_until(f"node {NODE_NAME} Ready", self._healthy, timeout=90, paths=ctx.paths, name=self.name)

    def stop(self, ctx: Context) -> None:
        """SIGTERM: the daemon stops every pod process (grace capped at 8 s) before it exits."""
        stop(ctx.paths, self.name, timeout=25)

    def env(self, ctx: Context) -> dict[str, str]:
        state = self.state_dir(ctx)
        return {
            "RUNNER_NODE": NODE_NAME,
            "RUNNER_STATE": str(state),
            "RUNNER_SERVICES": str(state / "services.json"),
        }
