"""Entry point of the pod runner daemon: ``python -m mlstack_local.podrunner --kubeconfig K --state DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..kubewatch import setup_daemon_logging
from .daemon import Daemon
from .kubeapi import Api


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlstack_local.podrunner", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state", required=True, type=Path, help="the runner's state directory")
    parser.add_argument("--mlflow-venv", type=Path, default=None, help="the MLflow runtime venv")
    parser.add_argument("--port", type=int, default=35090, help="HTTPS port for /healthz and kubectl logs")
    args = parser.parse_args(argv)
    setup_daemon_logging()
    state: Path = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    return Daemon(Api(args.kubeconfig), state, args.mlflow_venv, args.port).run()


if __name__ == "__main__":
    sys.exit(main())
