"""`make down` stops every recorded process, and `make up` afterwards brings the whole stack back.

Named to run last among the integration tests: it restarts the stack the others use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .conftest import REPO_ROOT, state_dir


def stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlstack_local", *args],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "hack")},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


def recorded_pids() -> dict[str, int]:
    pids = {}
    for path in (state_dir() / "pids").glob("*.json"):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "pid" in record:
            pids[path.stem] = int(record["pid"])
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_down_stops_everything_and_up_restores_it(stack_env: dict[str, str]) -> None:
    before = recorded_pids()
    assert {"kube-kube-apiserver", "postgres", "s3", "keycloak", "sealed", "registry", "runner"} <= set(before)

    down = stack("down")
    assert down.returncode == 0, down.stderr
    time.sleep(1)
    survivors = {name: pid for name, pid in before.items() if alive(pid)}
    assert survivors == {}, f"still running after down: {survivors}"
    assert stack("status").returncode == 3

    up = stack("up")
    assert up.returncode == 0, up.stdout + up.stderr
    status = stack("status")
    assert status.returncode == 0, status.stdout
    after = recorded_pids()
    assert all(alive(pid) for pid in after.values())
