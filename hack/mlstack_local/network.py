"""The node's network: a bridge whose first address is the node IP, and a fence around it.

Started first, because the API server, PostgreSQL, S3 and Keycloak listen on the node IP so that
pods reach them. The CNI bridge plugin attaches pods to this bridge; it turns on IP forwarding, so a
FORWARD rule drops pod traffic to any address outside the bridge subnet: nothing a pod sends leaves
the machine. The rule sits in the mangle table's FORWARD chain, which the kernel runs before the
filter table's: the NetworkPolicy controller (kube-router) keeps its jump first in filter FORWARD and
ACCEPTs policy-compliant pod traffic there, which would skip a fence further down that chain.

The stack's listening ports (PostgreSQL 35432, S3 38333, Keycloak 38180, ...) lie in the kernel's
ephemeral range, so an outgoing connection could be given one as its local port and hold it (a
client whose server went away keeps its socket in CLOSE_WAIT), and the server started next could
not bind it. They are added to ``net.ipv4.ip_local_reserved_ports`` before anything starts, and a
port some other socket already holds is refused here, naming the holder, instead of surfacing as a
server that never becomes ready.

``net.bridge.bridge-nf-call-iptables`` is set to 1: traffic between two pods on the bridge is
switched, not routed, and only with it does iptables (kube-router's ``physdev`` rules) see it.

The sysctls the node's components change (the bridge plugin, the kubelet, this component) are
recorded before the first change and restored by ``stop``, with the bridge and the rule removed, so
``make down`` leaves the machine as it found it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .base import Context
from .config import BRIDGE, NODE_IP, POD_SUBNET, PORTS
from .proc import StackError

# What the bridge plugin (ip_forward), the kubelet (the kernel.* and vm.* keys) and kube-proxy may set.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_local_reserved_ports",
)
RESERVED_PORTS = "net.ipv4.ip_local_reserved_ports"
# Addresses the stack's servers bind; a socket elsewhere (another interface) does not conflict.
STACK_ADDRESSES = ("127.0.0.1", NODE_IP, "0.0.0.0", "*", "[::]", "[::ffff:127.0.0.1]")  # noqa: S104 (matched, not bound)
RULE_COMMENT = "mlstack: pods reach nothing outside the bridge"
RULE_TABLE = "mangle"
# Where releases before the NetworkPolicy controller put the rule; removed when found.
LEGACY_RULE_TABLE = "filter"
BRIDGE_NF_CALL_IPTABLES = "net.bridge.bridge-nf-call-iptables"


def egress_rule() -> list[str]:
    """The FORWARD rule (without -t/-A/-I/-C/-D) that drops pod traffic leaving the bridge subnet."""
    return [
        "FORWARD",
        "-s",
        POD_SUBNET,
        "!",
        "-d",
        POD_SUBNET,
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "DROP",
    ]


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls(keys: tuple[str, ...] = SYSCTLS) -> dict[str, str]:
    values = {}
    for key in keys:
        try:
            values[key] = sysctl_path(key).read_text().strip()
        except OSError:
            continue  # not on this kernel (e.g. br_netfilter not loaded)
    return values


def restore_sysctls(saved: dict[str, str]) -> list[str]:
    """Write back every recorded value that differs now; the keys restored."""
    restored = []
    for key, value in saved.items():
        path = sysctl_path(key)
        try:
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
                restored.append(key)
        except OSError:
            continue
    return restored


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if check and result.returncode != 0:
        raise StackError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result


def bridge_has_ip() -> bool:
    result = _run(["ip", "-j", "addr", "show", "dev", BRIDGE], check=False)
    if result.returncode != 0:
        return False
    for link in json.loads(result.stdout or "[]"):
        for info in link.get("addr_info", []):
            if info.get("local") == NODE_IP:
                return True
    return False


def rule_present(table: str = RULE_TABLE) -> bool:
    return _run(["iptables", "-w", "-t", table, "-C", *egress_rule()], check=False).returncode == 0


def drop_counter() -> int:
    """Packets the egress rule has dropped so far."""
    out = _run(["iptables", "-w", "-t", RULE_TABLE, "-L", "FORWARD", "-v", "-x", "-n"]).stdout
    for line in out.splitlines():
        if RULE_COMMENT in line and "DROP" in line:
            return int(line.split()[0])
    raise StackError(f"the mlstack egress rule is not in the {RULE_TABLE} table's FORWARD chain")


def stack_ports() -> list[int]:
    """The unprivileged ports the stack's servers listen on, sorted."""
    return sorted({port for port in PORTS.values() if port >= 1024})


def reserved_ports_value(current: str, ports: list[int]) -> str:
    """``current`` (the kernel's comma list of ports and ranges) with ``ports`` appended."""
    listed = [item for item in current.strip().split(",") if item]
    return ",".join(listed + [str(port) for port in ports])


def reserved_ports(value: str) -> set[int]:
    """The ports a ``ip_local_reserved_ports`` value names (single ports and ``a-b`` ranges)."""
    ports: set[int] = set()
    for item in value.strip().split(","):
        low, _, high = item.partition("-")
        if low.isdigit():
            ports.update(range(int(low), int(high or low) + 1))
    return ports


def port_holders(ss_output: str, ports: list[int]) -> list[str]:
    """Sockets in ``ss -Htanp`` output that hold one of ``ports`` on an address the stack binds.

    TIME_WAIT does not count: the servers bind with SO_REUSEADDR, which the kernel allows then.
    """
    wanted = set(ports)
    holders = []
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] == "TIME-WAIT":
            continue
        address, _, port = fields[3].rpartition(":")
        if not port.isdigit() or int(port) not in wanted or address.split("%")[0] not in STACK_ADDRESSES:
            continue
        process = " ".join(fields[5:]) or "no process visible"
        holders.append(f"port {port}: {fields[0]} {fields[3]} -> {fields[4]} ({process})")
    return holders


class Network:
    name = "network"
    title = f"Node network ({BRIDGE} {NODE_IP}, egress fenced)"
    wanted_secrets: dict[str, str] = {}

    def _saved(self, ctx: Context) -> Path:
        return ctx.paths.component_dir(self.name) / "sysctls.json"

    def prepare(self, ctx: Context) -> None:
        saved = self._saved(ctx)
        if not saved.exists():
            # Recorded once, before anything of ours changed them; `stop` restores and forgets them.
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(read_sysctls(), indent=2))

    def is_up(self, ctx: Context) -> bool:
        if not (self._saved(ctx).exists() and bridge_has_ip() and rule_present()):
            return False
        return set(stack_ports()) <= reserved_ports(sysctl_path(RESERVED_PORTS).read_text())

    def start(self, ctx: Context) -> None:
        # Reserved first, so no connection made from now on takes a port a server below will bind.
        original = json.loads(self._saved(ctx).read_text()).get(RESERVED_PORTS, "")
        sysctl_path(RESERVED_PORTS).write_text(reserved_ports_value(original, stack_ports()) + "\n")
        holders = port_holders(_run(["ss", "-Htanp"]).stdout, stack_ports())
        if holders:
            raise StackError(
                "ports the local stack's servers listen on are held by other sockets (stop what holds them,"
                " or wait until the connection closes):\n  " + "\n  ".join(holders)
            )
        if _run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
            _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        if not bridge_has_ip():
            prefix = POD_SUBNET.split("/")[1]
            _run(["ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        if not rule_present():
            _run(["iptables", "-w", "-t", RULE_TABLE, "-I", *egress_rule()[:1], "1", *egress_rule()[1:]])
        while rule_present(LEGACY_RULE_TABLE):
            _run(["iptables", "-w", "-t", LEGACY_RULE_TABLE, "-D", *egress_rule()])
        # Pods reach each other and the node through the bridge; the rule above fences the rest.
        sysctl_path("net.ipv4.ip_forward").write_text("1\n")
        if sysctl_path(BRIDGE_NF_CALL_IPTABLES).exists():  # absent without br_netfilter; kube-router refuses then
            sysctl_path(BRIDGE_NF_CALL_IPTABLES).write_text("1\n")

    def stop(self, ctx: Context) -> None:
        for table in (RULE_TABLE, LEGACY_RULE_TABLE):
            while rule_present(table):
                _run(["iptables", "-w", "-t", table, "-D", *egress_rule()])
        if _run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
            _run(["ip", "link", "delete", BRIDGE])
        saved = self._saved(ctx)
        if saved.exists():
            restore_sysctls(json.loads(saved.read_text()))
            saved.unlink()

    def env(self, ctx: Context) -> dict[str, str]:
        return {"NODE_IP": NODE_IP, "POD_SUBNET": POD_SUBNET, "NODE_BRIDGE": BRIDGE}
