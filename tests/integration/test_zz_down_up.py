"""`make down` stops every recorded process and leaves the machine as it found it; `make up` brings it back.

Named to run last among the integration tests: it restarts the stack the others use. "As it found it":
no process of ours, no iptables rule or chain of ours (the egress fence, kube-proxy's KUBE-* chains),
no bridge or veth, no mount under our directories, no cgroup of the kubelet's, and every sysctl the
node's components changed back at the value recorded before the first start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .conftest import REPO_ROOT, state_dir

sys.path.insert(0, str(REPO_ROOT / "hack"))

from mlstack_local import network, node  # noqa: E402


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


def iptables_rules() -> str:
    return "\n".join(
        subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=True).stdout  # noqa: S603, S607
        for table in ("filter", "nat", "mangle")
    )


def interfaces() -> list[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout  # noqa: S607
    return [link["ifname"] for link in json.loads(out)]


def test_down_stops_everything_and_leaves_the_machine_as_it_was(stack_env: dict[str, str]) -> None:
    before = recorded_pids()
    expected = {"kube-apiserver", "etcd", "postgres", "s3", "keycloak", "sealed", "registry"}
    expected |= {"containerd", "kubelet", "kube-proxy", "coredns", "local-path-provisioner", "traefik"}
    assert expected <= set(before)
    saved = json.loads((state_dir() / "network" / "sysctls.json").read_text())
    assert "mlstack0" in interfaces()

    down = stack("down")
    assert down.returncode == 0, down.stdout + down.stderr
    time.sleep(1)
    survivors = {name: pid for name, pid in before.items() if alive(pid)}
    assert survivors == {}, f"still running after down: {survivors}"
    assert stack("status").returncode == 3

    rules = iptables_rules()
    assert network.RULE_COMMENT not in rules
    assert "KUBE-" not in rules, [line for line in rules.splitlines() if "KUBE-" in line][:5]
    links = interfaces()
    assert "mlstack0" not in links and not [name for name in links if name.startswith("veth")]
    assert node.mounts_under([state_dir(), Path("/run/containerd")]) == []
    assert node.cgroup_dirs() == []
    assert network.read_sysctls(tuple(saved)) == saved
    assert not (state_dir() / "network" / "sysctls.json").exists()

    up = stack("up")
    assert up.returncode == 0, up.stdout + up.stderr
    status = stack("status")
    assert status.returncode == 0, status.stdout
    after = recorded_pids()
    assert all(alive(pid) for pid in after.values())
    assert "mlstack0" in interfaces()
