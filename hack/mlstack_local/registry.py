"""A container registry with basic auth standing in for Harbor (Debian's docker-registry + htpasswd).

The collection checks the robot credentials against ``/v2/`` before it writes the pull secret, so the
registry must really refuse wrong credentials.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

from .base import Context
from .config import BIND, PORTS
from .proc import StackError, http_status, recorded_pid, start_daemon, stop, wait_until

# Harbor robot accounts are named robot$<name>; the `$` is part of what we prove works.
ROBOT_NAME = "mlflow"
ROBOT_USER = f"robot${ROBOT_NAME}"
PROJECT = "mlstack"


def registry_config(data_dir: Path, htpasswd: Path) -> str:
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {data_dir}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {BIND}:{PORTS['registry']}\n"
        f"auth:\n  htpasswd:\n    realm: mlstack-registry\n    path: {htpasswd}\n"
    )


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Registry:
    name = "registry"
    title = "Registry (Harbor stand-in)"
    wanted_secrets = {"registry_password": "password"}

    def _paths(self, ctx: Context) -> tuple[Path, Path, Path]:
        base = ctx.paths.component_dir(self.name)
        return base / "data", base / "htpasswd", base / "config.yml"

    def prepare(self, ctx: Context) -> None:
        for tool in ("docker-registry", "htpasswd"):
            if not shutil.which(tool):
                raise StackError(
                    f"`{tool}` not found; install it with: apt-get install -y docker-registry apache2-utils"
                )
        data, htpasswd, config = self._paths(ctx)
        data.mkdir(parents=True, exist_ok=True)
        # -i reads the password from stdin, so it never appears in a process list.
        subprocess.run(  # noqa: S603
            ["htpasswd", "-iBc", str(htpasswd), ROBOT_USER],  # noqa: S607
            input=ctx.secrets["registry_password"],
            text=True,
            check=True,
            capture_output=True,
        )
        htpasswd.chmod(0o600)
        config.write_text(registry_config(data, htpasswd))

    def _answers(self) -> bool:
        return http_status(f"http://{BIND}:{PORTS['registry']}/v2/") == 401

    def is_up(self, ctx: Context) -> bool:
        return recorded_pid(ctx.paths, self.name) is not None and self._answers()

    def start(self, ctx: Context) -> None:
        _, _, config = self._paths(ctx)
        start_daemon(ctx.paths, self.name, ["docker-registry", "serve", str(config)])
        wait_until("the registry to answer", self._answers, timeout=30, paths=ctx.paths, name=self.name)

    def stop(self, ctx: Context) -> None:
        stop(ctx.paths, self.name)

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "REGISTRY_URL": f"http://{BIND}:{PORTS['registry']}",
            "REGISTRY_HOST": f"{BIND}:{PORTS['registry']}",
            "REGISTRY_USER": ROBOT_USER,
            "REGISTRY_PASSWORD": ctx.secrets["registry_password"],
            "REGISTRY_PROJECT": PROJECT,
            "REGISTRY_ROBOT_NAME": ROBOT_NAME,
        }
