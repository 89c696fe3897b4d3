"""The local stack's MetalLB component: RBAC, pool, kubeconfig, argv and lifecycle (no network)."""

from __future__ import annotations

import base64
import ipaddress
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

# The launcher lives in hack/ (run with PYTHONPATH=hack); make it importable for plain pytest too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import config, metallb  # noqa: E402
from mlstack_local.base import Context  # noqa: E402
from mlstack_local.config import Paths  # noqa: E402
from mlstack_local.proc import StackError  # noqa: E402

TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-token-value.signature"  # noqa: S105 - a fake token
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SERVER = "https://127.0.0.1:36443"


def view() -> dict[str, Any]:
    cluster = {"server": SERVER, "certificate-authority-data": base64.b64encode(CA_PEM).decode()}
    return {"clusters": [{"name": "mlstack", "cluster": cluster}]}


def fake_kubectl(calls: list[tuple[str, ...]], stdins: list[str] | None = None, pool: dict | None = None):
    def run(kenv: dict[str, str], *args: str, stdin: str | None = None) -> str:
        calls.append(args)
        if stdin is not None and stdins is not None:
            stdins.append(stdin)
        if args[:2] == ("config", "view"):
            return json.dumps(view())
        if "token" in args:
            return TOKEN + "\n"
        if "ipaddresspool" in args:
            if pool is None:
                raise StackError("not found")
            return json.dumps(pool)
        return ""

    return run


def test_component_identity_and_paths(paths: Paths) -> None:
    component = metallb.MetalLB()
    assert component.name == "metallb"
    assert "MetalLB" in component.title and metallb.VERSION in component.title
    assert component.wanted_secrets == {}
    assert metallb.bin_dir(paths, "v0.15.2") == paths.cache / "bin" / "metallb-v0.15.2"
    assert metallb.kubeconfig_path(paths).parent == paths.state / "metallb"


def test_version_is_one_whose_dependencies_the_proxy_serves() -> None:
    # v0.16.2 needs github.com/metallb/frr-k8s v0.0.27, which the Go module proxy refuses.
    assert config.VERSIONS["metallb"] == "v0.15.2"


def test_pool_is_inside_the_bridge_subnet_and_off_the_node_ip() -> None:
    pool = metallb.pool_manifest()
    assert pool["kind"] == "IPAddressPool" and pool["metadata"]["namespace"] == "metallb-system"
    first, last = (ipaddress.ip_address(a) for a in pool["spec"]["addresses"][0].split("-"))
    subnet = ipaddress.ip_network(config.POD_SUBNET)
    assert first in subnet and last in subnet
    assert ipaddress.ip_address(config.NODE_IP) not in {first, last}
    assert (int(last) - int(first) + 1) == 51


def test_rbac_is_least_privilege() -> None:
    items = metallb.rbac_manifests()
    kinds = {(item["kind"], item["metadata"]["name"]) for item in items}
    assert {
        ("ServiceAccount", "controller"),
        ("ClusterRole", "mlstack-metallb-system"),
        ("Role", "controller"),
    } <= kinds
    rules = metallb.cluster_role_rules() + metallb.role_rules()
    writes = {
        (resource, verb)
        for rule in rules
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if verb not in ("get", "list", "watch")
    }
    # It writes only statuses and events: no Secrets, no webhook configurations, no CRDs.
    assert writes == {
        ("services/status", "update"),
        ("ipaddresspools/status", "update"),
        ("events", "create"),
        ("events", "patch"),
    }
    assert not any("secrets" in rule["resources"] for rule in rules)
    bindings = [item for item in items if item["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "controller", "namespace": "metallb-system"}]


def test_namespace_runs_no_pods_beyond_restricted() -> None:
    (namespace,) = [item for item in metallb.rbac_manifests() if item["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kubeconfig_verifies_the_api_server_and_carries_only_the_service_account_token() -> None:
    kubeconfig = yaml.safe_load(metallb.controller_kubeconfig(SERVER, CA_PEM, TOKEN))
    cluster = kubeconfig["clusters"][0]["cluster"]
    assert cluster["server"] == SERVER
    assert base64.b64decode(cluster["certificate-authority-data"]) == CA_PEM
    assert "insecure-skip-tls-verify" not in cluster
    assert kubeconfig["users"][0]["user"] == {"token": TOKEN}


def test_daemon_argv_has_no_secret_no_admin_kubeconfig_and_no_webhook(tmp_path: Path) -> None:
    argv = metallb.daemon_argv(Path("/bin/controller"), tmp_path / "kubeconfig")
    assert argv[1] == "-i"  # env -i: KUBECONFIG of the caller is not inherited
    assert f"--kubeconfig={tmp_path / 'kubeconfig'}" in argv
    assert "--webhook-mode=disabled" in argv
    assert f"--port={config.PORTS['metallb_metrics']}" in argv
    assert "--namespace=metallb-system" in argv
    assert not any(TOKEN in arg or arg.startswith("KUBECONFIG=") for arg in argv)


def test_pool_ready_when_the_controller_counted_its_addresses() -> None:
    assert not metallb.pool_ready({"spec": {}})
    assert not metallb.pool_ready({"status": {}})
    assert metallb.pool_ready({"status": {"availableIPv4": 51, "assignedIPv4": 0}})
    assert metallb.pool_ready({"status": {"availableIPv4": 0, "assignedIPv4": 51}})


def test_start_applies_crds_rbac_and_pool_and_writes_a_private_kubeconfig(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []
    stdins: list[str] = []
    started: list[list[str]] = []
    monkeypatch.setattr(metallb, "kubectl", fake_kubectl(calls, stdins))
    monkeypatch.setattr(metallb, "server_side_apply", lambda kenv, items: stdins.append(json.dumps({"items": items})))
    monkeypatch.setattr(metallb.MetalLB, "_crds", lambda self, ctx: [])
    monkeypatch.setattr(metallb.MetalLB, "is_up", lambda self, ctx: False)
    monkeypatch.setattr(metallb, "start_daemon", lambda paths, name, argv, **kw: started.append(list(argv)) or 1)
    monkeypatch.setattr(metallb, "wait_until", lambda what, check, **kw: 0.0)
    ctx.env.update({"KUBECTL": "kubectl", "KUBECONFIG": "/admin.kubeconfig"})
    metallb.MetalLB().start(ctx)
    (argv,) = started
    assert not any(TOKEN in arg or "admin.kubeconfig" in arg for arg in argv)
    assert ("-n", "metallb-system", "create", "token", "controller", "--duration=8760h") in calls
    applied = [item for stdin in stdins for item in json.loads(stdin)["items"]]
    assert ("IPAddressPool", "mlstack") in {(item["kind"], item["metadata"]["name"]) for item in applied}
    kubeconfig = metallb.kubeconfig_path(ctx.paths)
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert stat.S_IMODE(metallb.state_dir(ctx.paths).stat().st_mode) == 0o700
    assert yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"] == TOKEN


def test_is_up_needs_the_process_and_a_counted_pool(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx.env.update({"KUBECTL": "kubectl", "KUBECONFIG": "/admin.kubeconfig"})
    monkeypatch.setattr(metallb, "recorded_pid", lambda paths, name: None)
    assert not metallb.MetalLB().is_up(ctx)
    monkeypatch.setattr(metallb, "recorded_pid", lambda paths, name: 4242)
    monkeypatch.setattr(metallb, "kubectl", fake_kubectl([], pool=None))
    assert not metallb.MetalLB().is_up(ctx)
    monkeypatch.setattr(metallb, "kubectl", fake_kubectl([], pool={"status": {"availableIPv4": 51}}))
    assert metallb.MetalLB().is_up(ctx)


def test_stop_works_when_never_started_and_removes_the_kubeconfig(ctx: Context) -> None:
    metallb.MetalLB().stop(ctx)  # nothing recorded: a no-op
    path = metallb.kubeconfig_path(ctx.paths)
    path.parent.mkdir(parents=True)
    path.write_text("token")
    metallb.MetalLB().stop(ctx)
    assert not path.exists()


def test_env_publishes_the_pool(ctx: Context) -> None:
    assert metallb.MetalLB().env(ctx) == {
        "LOADBALANCER_POOL": "10.89.0.200-10.89.0.250",
        "LOADBALANCER_NAMESPACE": "metallb-system",
    }


def test_the_stack_lists_the_component() -> None:
    from mlstack_local.__main__ import components

    names = [component.name for component in components()]
    assert "metallb" in names
    assert names.index("metallb") > names.index("kube")
