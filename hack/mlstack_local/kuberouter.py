"""kube-router's network policy controller: the node enforces NetworkPolicies, as a user's cluster does.

Only the firewall runs (``--run-firewall=true --run-router=false --run-service-proxy=false``): the
CNI bridge plugin keeps attaching pods and kube-proxy stays the service proxy. kube-router turns
each NetworkPolicy into iptables chains in the filter table and ipsets of the pods they select:

- jumps at position 1 of INPUT, FORWARD and OUTPUT to ``KUBE-ROUTER-INPUT/FORWARD/OUTPUT`` (it moves
  them back to position 1 on every sync, so the node network's egress fence lives in the mangle
  table, which the kernel runs first; see network.py);
- per local pod a ``KUBE-POD-FW-<hash>`` chain, per policy a ``KUBE-NWPLCY-<hash>`` chain and
  ``KUBE-NWPLCY-DEFAULT``; ipsets ``KUBE-SRC-<hash>`` and ``KUBE-DST-<hash>``. A pod with no policy
  passes ``KUBE-NWPLCY-DEFAULT`` (allow); a pod a policy selects is REJECTed unless a rule marks the
  packet; what passes is ACCEPTed at the end of the ``KUBE-ROUTER-*`` chains.

Facts from v2.1.0's source (``pkg/controllers/netpol``):

- Traffic from the node itself is always admitted to local pods: every pod chain starts with
  ``-m addrtype --src-type LOCAL -d <pod IP> -j ACCEPT``. Host processes (Traefik on 127.0.0.1:443,
  kube-proxy's LoadBalancer and NodePort DNAT for the host, the kubelet's probes) reach pods from the
  node IP 10.89.0.1, a local address, so no ingress policy refuses them, and an ``ipBlock`` rule for
  10.89.0.1/32 is not what lets them in (the Kubernetes documentation allows CNIs this: traffic from
  the pod's node is always allowed). Egress from a pod *to* the node (DNS on 10.89.0.1:53, the API
  server, PostgreSQL, S3) is filtered like any other egress.
- Pods on the bridge talk to each other switched, not routed; the ``physdev --physdev-is-bridged``
  rules see that only with ``net.bridge.bridge-nf-call-iptables=1``, which the network component
  sets (and restores); ``start`` refuses to run without it.
- The controller does not use the node's podCIDR (only the routing controller does); it finds its
  node by ``--hostname-override`` (``GetNodeObject`` tries ``NODE_NAME`` and the host name first),
  reads the node's InternalIP and treats pods whose ``status.hostIP`` is that address as local.
- It needs the ``ipset`` binary and iptables (the same nf_tables-backed iptables as kube-proxy's).
- ``--cleanup-config`` exists but cleans nothing of the firewall in v2.1.0 (upstream issue #1649,
  fixed after v2.1.0 by PR #1650): it calls ``Cleanup`` on a zero-valued controller whose iptables
  and ipset handler maps are empty, so it walks no table and no set and logs success; then it tries
  to flush *every* IPVS service on the machine and panics (nil pointer) in the service proxy's
  cleanup. Checked on the stack: after it, all 107 kube-router rules and chains and 8 ipsets were
  still there. So ``stop`` does not run it, and does the firewall cleanup the controller would have:
  one atomic ``iptables-restore --noflush`` that deletes every rule jumping to a ``KUBE-ROUTER-*``,
  ``KUBE-NWPLCY-*`` or ``KUBE-POD-FW-*`` chain and then those chains, and ``ipset destroy`` of the
  ``KUBE-SRC-*`` / ``KUBE-DST-*`` sets (the only ones the firewall creates; its ``TMP-`` sets live
  only inside one ``ipset restore``). Nothing else of the machine's tables is touched.

Version: v2.1.0 of ``github.com/cloudnativelabs/kube-router/v2``, the only version the Go module
proxy serves; no replace directives, so ``go install`` builds it (cached under
~/.cache/mlstack/bin/kube-router-<version>/).

Runs as a root host process (it edits iptables and ipsets) under ``env -i`` (no admin KUBECONFIG),
with its own ServiceAccount ``kube-router/kube-router`` and a TokenRequest token in a 0600 kubeconfig
named by ``--kubeconfig``. Its ClusterRole only reads: the one shared informer factory starts
informers for pods, namespaces, NetworkPolicies, nodes, Services, Endpoints and EndpointSlices
whichever controllers run, and waits for all of their caches, so all need list and watch; it gets
its Node by name. The firewall writes nothing to the API. No listener: the health server
(``--health-port``) binds every interface with no address flag and reports healthy before the first
sync, so it is off (``--health-port=0``), as are metrics (``--metrics-port=0``) and pprof. Ready when
the first full sync has written the jumps and the ACCEPT rule at the end of ``KUBE-ROUTER-FORWARD``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .base import Context
from .config import NODE_NAME, SERVICE_CIDR, VERSIONS, Paths
from .gobuild import go_install
from .metallb import controller_kubeconfig
from .network import BRIDGE_NF_CALL_IPTABLES, sysctl_path
from .proc import StackError, recorded_pid, start_daemon, stop, wait_until
from .sealed import write_private
from .traefik import account_rbac, apiserver_from_view, kubectl, server_side_apply

NAME = "kube-router"
VERSION = VERSIONS["kube_router"]
MODULE = "github.com/cloudnativelabs/kube-router/v2"
COMMAND = f"{MODULE}/cmd/kube-router"

NAMESPACE = "kube-router"
SERVICE_ACCOUNT = "kube-router"
# No kubelet rotates this token, so it must outlive any session of the stack; a restart makes a new one.
TOKEN_DURATION = "8760h"  # noqa: S105 - a duration, not a secret
# kube-apiserver's --service-node-port-range (kube.py); kube-router admits LOCAL traffic to it on INPUT.
NODE_PORT_RANGE = "30000-32767"
READY_TIMEOUT = 90.0  # the informers' cache sync (up to --cache-sync-timeout, 1m) and the first full sync
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# What the network policy controller creates (pkg/controllers/netpol/network_policy_controller.go).
TOP_LEVEL_CHAINS = {"INPUT": "KUBE-ROUTER-INPUT", "FORWARD": "KUBE-ROUTER-FORWARD", "OUTPUT": "KUBE-ROUTER-OUTPUT"}
CHAIN_PREFIXES = ("KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-")
IPSET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-")
EXPLICIT_ACCEPT_MARK = "0x20000/0x20000"


def bin_dir(paths: Paths, version: str = VERSION) -> Path:
    return paths.bin / f"kube-router-{version}"


def binary(paths: Paths) -> Path:
    return bin_dir(paths) / "kube-router"


def state_dir(paths: Paths) -> Path:
    return paths.component_dir(NAME)


def kubeconfig_path(paths: Paths) -> Path:
    return state_dir(paths) / "kubeconfig"


# --- manifests and argv (pure, unit-tested) ----------------------------------------------------------


def cluster_role_rules() -> list[dict[str, Any]]:
    """Read-only: the informers kube-router's shared factory starts, and its own Node by name."""
    return [
        {
            "apiGroups": [""],
            "resources": ["pods", "namespaces", "services", "endpoints"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ]


# Pod Security of the namespace: nothing runs as a pod in it.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def rbac_manifests(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    return account_rbac(namespace, SERVICE_ACCOUNT, f"mlstack-{namespace}", cluster_role_rules(), RESTRICTED)


def daemon_argv(binary: Path, kubeconfig: Path) -> list[str]:
    """``env -i``: kube-router sees no admin KUBECONFIG; its own is a flag (a path, not the token)."""
    env_binary = shutil.which("env") or "/usr/bin/env"
    return [
        env_binary,
        "-i",
        f"PATH={PATH}",
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--run-loadbalancer=false",
        "--enable-ipv4=true",
        "--enable-ipv6=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--service-node-port-range={NODE_PORT_RANGE}",
        "--health-port=0",
        "--metrics-port=0",
    ]


# --- iptables and ipsets (pure, unit-tested) ---------------------------------------------------------


def owned_chain(name: str) -> bool:
    return name.startswith(CHAIN_PREFIXES)


def _rules(filter_save: str) -> list[list[str]]:
    return [shlex.split(line) for line in filter_save.splitlines() if line.startswith("-A ")]


def _target(rule: list[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in rule[:-1]:
            return rule[rule.index(flag) + 1]
    return None


def owned_chains(filter_save: str) -> list[str]:
    """kube-router's chains declared in ``iptables-save -t filter`` output, in order."""
    names = [line[1:].split()[0] for line in filter_save.splitlines() if line.startswith(":")]
    return [name for name in names if owned_chain(name)]


def firewall_ready(filter_save: str) -> bool:
    """The first full sync is done: the jumps from the built-in chains and the final ACCEPT are in."""
    rules = _rules(filter_save)
    jumps = {(rule[1], _target(rule)) for rule in rules}
    if not all((builtin, chain) in jumps for builtin, chain in TOP_LEVEL_CHAINS.items()):
        return False
    forward = TOP_LEVEL_CHAINS["FORWARD"]
    return any(rule[1] == forward and EXPLICIT_ACCEPT_MARK in rule and _target(rule) == "ACCEPT" for rule in rules)


def cleanup_script(filter_save: str) -> str:
    """An ``iptables-restore --noflush`` script removing every kube-router rule and chain ("" if none).

    Rules in other chains that jump to kube-router's are deleted one by one (as saved, ``-A`` made
    ``-D``), then kube-router's chains are flushed and deleted; nothing else changes.
    """
    chains = owned_chains(filter_save)
    lines = []
    for line in filter_save.splitlines():
        if not line.startswith("-A "):
            continue
        rule = shlex.split(line)
        if not owned_chain(rule[1]) and owned_chain(_target(rule) or ""):
            lines.append("-D " + line[3:])
    if not chains and not lines:
        return ""
    lines += [f"-F {chain}" for chain in chains]
    lines += [f"-X {chain}" for chain in chains]
    return "\n".join(["*filter", *lines, "COMMIT"]) + "\n"


def owned_ipsets(names: list[str]) -> list[str]:
    """kube-router's firewall sets among ``ipset list -n`` (IPv6 ones carry an ``inet6:`` prefix)."""
    return [name for name in names if name.removeprefix("inet6:").startswith(IPSET_PREFIXES)]


# --- host commands -----------------------------------------------------------------------------------


def _run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)  # noqa: S603
    if check and result.returncode != 0:
        raise StackError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result


def filter_table() -> str:
    if shutil.which("iptables-save", path=PATH) is None:
        return ""
    return _run(["iptables-save", "-t", "filter"]).stdout


def ipset_names() -> list[str]:
    if shutil.which("ipset", path=PATH) is None:
        return []
    return _run(["ipset", "list", "-n"]).stdout.split()


def remove_firewall() -> None:
    """Delete what kube-router's firewall left in iptables and ipsets (idempotent)."""
    script = cleanup_script(filter_table())
    if script:
        _run(["iptables-restore", "-w", "--noflush"], stdin=script)
    for name in owned_ipsets(ipset_names()):
        _run(["ipset", "destroy", name])


def leftovers() -> list[str]:
    """What of kube-router is still in iptables (every table) and ipsets: empty after ``stop``."""
    found = []
    if shutil.which("iptables-save", path=PATH) is not None:
        for line in _run(["iptables-save"]).stdout.splitlines():
            if any(prefix in line for prefix in CHAIN_PREFIXES):
                found.append(line)
    return found + owned_ipsets(ipset_names())


# --- the component -----------------------------------------------------------------------------------


class KubeRouter:
    name = NAME
    title = f"kube-router {VERSION} (NetworkPolicy firewall)"
    wanted_secrets: dict[str, str] = {}

    def __init__(self, *, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace

    def _kube_env(self, ctx: Context) -> dict[str, str]:
        from .sealed import kube_env

        return kube_env(ctx)

    def prepare(self, ctx: Context) -> None:
        go_install(ctx, label="kube-router", version=VERSION, packages=[COMMAND], names=["kube-router"])

    def is_up(self, ctx: Context) -> bool:
        if recorded_pid(ctx.paths, NAME) is None:
            return False
        try:
            return firewall_ready(filter_table())
        except StackError:
            return False

    def _check_host(self) -> None:
        path = sysctl_path(BRIDGE_NF_CALL_IPTABLES)
        value = path.read_text().strip() if path.exists() else None
        if value != "1":
            raise StackError(
                f"{BRIDGE_NF_CALL_IPTABLES} is {value or 'absent (br_netfilter not loaded)'}: iptables would not see "
                "traffic between pods on the bridge, so NetworkPolicies would not be enforced. "
                "Load br_netfilter (modprobe br_netfilter) and run `make up` (the network component sets it to 1)."
            )
        if shutil.which("ipset", path=PATH) is None:
            raise StackError("kube-router needs the ipset binary: run hack/system-deps.sh (Debian package ipset)")

    def start(self, ctx: Context) -> None:
        if self.is_up(ctx):
            return
        self.stop(ctx)  # recorded but not working, or rules left by a crash: start from a clean table
        self._check_host()
        kenv = self._kube_env(ctx)
        server_side_apply(kenv, rbac_manifests(self.namespace))
        kubeconfig = self._write_kubeconfig(ctx, kenv)
        start_daemon(ctx.paths, NAME, daemon_argv(binary(ctx.paths), kubeconfig))
        wait_until(
            "kube-router's first NetworkPolicy sync (KUBE-ROUTER-* chains in the filter table)",
            lambda: firewall_ready(filter_table()),
            timeout=READY_TIMEOUT,
            paths=ctx.paths,
            name=NAME,
        )

    def _write_kubeconfig(self, ctx: Context, kenv: dict[str, str]) -> Path:
        view = json.loads(kubectl(kenv, "config", "view", "--raw", "--minify", "--flatten", "-o", "json"))
        server, ca_pem = apiserver_from_view(view)
        token = kubectl(
            kenv, "-n", self.namespace, "create", "token", SERVICE_ACCOUNT, f"--duration={TOKEN_DURATION}"
        ).strip()
        directory = state_dir(ctx.paths)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        write_private(
            kubeconfig_path(ctx.paths),
            controller_kubeconfig(server, ca_pem, token, self.namespace, SERVICE_ACCOUNT).encode(),
        )
        return kubeconfig_path(ctx.paths)

    def stop(self, ctx: Context) -> None:
        # The process first, so no sync rewrites what is removed next; kube-router leaves its rules on exit.
        stop(ctx.paths, NAME)
        remove_firewall()
        kubeconfig_path(ctx.paths).unlink(missing_ok=True)

    def env(self, ctx: Context) -> dict[str, str]:
        return {}
