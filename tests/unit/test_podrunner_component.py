"""The Runner stack component: published environment, and venv naming (no processes)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import runner as runner_module  # noqa: E402
from mlstack_local.base import Context  # noqa: E402
from mlstack_local.config import Paths  # noqa: E402


def test_env_and_venv_name(tmp_path: Path) -> None:
    ctx = Context(paths=Paths(state=tmp_path / "state", cache=tmp_path / "cache"), secrets={})
    component = runner_module.Runner()
    assert component.name == "runner"
    assert component.env(ctx) == {
        "RUNNER_NODE": "mlstack-runner",
        "RUNNER_STATE": str(tmp_path / "state" / "runner"),
        "RUNNER_SERVICES": str(tmp_path / "state" / "runner" / "services.json"),
    }
    digest = hashlib.sha256(runner_module.REQUIREMENTS.read_bytes()).hexdigest()[:12]
    assert component.mlflow_venv(ctx) == tmp_path / "cache" / "venvs" / f"mlflow-{digest}"


def test_kubeconfig_from_context_or_stack_env(tmp_path: Path) -> None:
    paths = Paths(state=tmp_path, cache=tmp_path / "cache")
    component = runner_module.Runner()
    assert component._kubeconfig(Context(paths=paths, secrets={}, env={"KUBECONFIG": "/k"})) == "/k"
    paths.stack_env.write_text("export KUBECONFIG='/from/stack.env'\n")
    assert component._kubeconfig(Context(paths=paths, secrets={})) == "/from/stack.env"
