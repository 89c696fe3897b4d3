"""The local stack's Sealed Secrets component: command lines, manifests and credentials (no network)."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

# The launcher lives in hack/ (run with PYTHONPATH=hack); make it importable for plain pytest too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import sealed  # noqa: E402
from mlstack_local.base import Context  # noqa: E402
from mlstack_local.config import PORTS, Paths  # noqa: E402
from mlstack_local.proc import StackError  # noqa: E402
from mlstack_local.secrets import write_env_file  # noqa: E402

TOOLS = {"env": "/usr/bin/env", "unshare": "/usr/bin/unshare", "sh": "/bin/sh"}
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def view(server: str, ca: bytes | None = CA_PEM) -> dict[str, object]:
    cluster: dict[str, str] = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    return {"clusters": [{"name": "mlstack", "cluster": cluster}]}


def test_component_identity() -> None:
    component = sealed.SealedSecrets()
    assert component.name == "sealed"
    assert component.title == "Sealed Secrets controller"
    assert component.wanted_secrets == {}


def test_paths_are_keyed_by_version_and_state(paths: Paths) -> None:
    assert sealed.bin_dir(paths, "v0.36.6") == paths.cache / "bin" / "sealed-secrets-v0.36.6"
    assert sealed.cert_path(paths) == paths.state / "sealed" / "cert.pem"
    assert sealed.stage_dir(paths).parent == paths.state / "sealed"


def test_build_covers_both_binaries() -> None:
    assert sealed.PACKAGES == [
        "github.com/bitnami-labs/sealed-secrets/cmd/controller",
        "github.com/bitnami-labs/sealed-secrets/cmd/kubeseal",
    ]
    assert sealed.BINARIES == ["controller", "kubeseal"]
    assert sealed.CRD_IN_MODULE == Path("helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml")


def test_controller_listens_on_loopback_only() -> None:
    args = sealed.controller_args()
    listen = args[args.index("--listen-addr") + 1]
    metrics = args[args.index("--listen-metrics-addr") + 1]
    assert listen == f"127.0.0.1:{PORTS['sealed_secrets']}"
    assert metrics.startswith("127.0.0.1:")
    assert metrics != listen
    assert args[args.index("--key-prefix") + 1] == "sealed-secrets-key"


def test_launch_argv_clears_the_environment_and_execs_the_controller(tmp_path: Path) -> None:
    controller = tmp_path / "controller"
    argv = sealed.launch_argv(controller, tmp_path / "stage", "127.0.0.1", 36443, "/run", TOOLS)
    assert argv[:2] == ["/usr/bin/env", "-i"]
    unshare = argv.index("/usr/bin/unshare")
    env_pairs = dict(pair.split("=", 1) for pair in argv[2:unshare])
    assert env_pairs["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env_pairs["KUBERNETES_SERVICE_PORT"] == "36443"
    assert env_pairs["POD_NAMESPACE"] == "kube-system"
    # Nothing named SEALED_SECRETS_* may reach the controller: it would silently become a flag.
    assert not [key for key in env_pairs if key.startswith("SEALED_SECRETS_")]
    assert argv[unshare : unshare + 5] == ["/usr/bin/unshare", "--mount", "--propagation", "private", "--"]
    script_at = argv.index("-c") + 1
    assert argv[script_at] == sealed.LAUNCH_SCRIPT
    assert argv[script_at + 2 : script_at + 5] == ["/run", str(tmp_path / "stage"), str(controller)]
    assert argv[script_at + 5 :] == sealed.controller_args()


def test_launch_script_mounts_a_private_tmpfs_and_reads_the_token_from_a_file() -> None:
    script = sealed.LAUNCH_SCRIPT
    assert "set -eu" in script
    assert "mount -t tmpfs" in script and '"$root"' in script
    assert '"$root/secrets/kubernetes.io/serviceaccount"' in script
    assert '"$stage/token"' in script
    assert script.rstrip().endswith('exec "$@"')


def test_mount_root_resolves_var_run() -> None:
    assert sealed.mount_root() == os.path.realpath("/var/run")
    assert sealed.mount_root("/var/run/secrets/kubernetes.io/serviceaccount") == os.path.realpath("/var/run")


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("https://127.0.0.1:36443", ("127.0.0.1", 36443)),
        ("https://[::1]:6443", ("::1", 6443)),
        ("https://localhost", ("localhost", 443)),
    ],
)
def test_apiserver_endpoint(server: str, expected: tuple[str, int]) -> None:
    assert sealed.apiserver_endpoint(server) == expected


@pytest.mark.parametrize("server", ["http://127.0.0.1:8080", "127.0.0.1:36443", "https://"])
def test_apiserver_endpoint_rejects_non_https(server: str) -> None:
    with pytest.raises(StackError):
        sealed.apiserver_endpoint(server)


def test_cluster_from_view_decodes_the_ca() -> None:
    assert sealed.cluster_from_view(view("https://127.0.0.1:36443")) == ("127.0.0.1", 36443, CA_PEM)


def test_cluster_from_view_insists_on_a_ca() -> None:
    with pytest.raises(StackError, match="certificate-authority-data"):
        sealed.cluster_from_view(view("https://127.0.0.1:36443", ca=None))


def test_cluster_from_view_wants_exactly_one_cluster() -> None:
    with pytest.raises(StackError, match="one cluster"):
        sealed.cluster_from_view({"clusters": []})


def _by_kind(kind: str) -> list[dict]:
    return [item for item in sealed.rbac_manifests() if item["kind"] == kind]


def test_rbac_matches_upstream_controller_manifest() -> None:
    (account,) = _by_kind("ServiceAccount")
    assert account["metadata"] == {"name": "sealed-secrets-controller", "namespace": "kube-system"}
    (cluster_role,) = _by_kind("ClusterRole")
    rules = {(rule["apiGroups"][0], rule["resources"][0]): set(rule["verbs"]) for rule in cluster_role["rules"]}
    assert rules == {
        ("bitnami.com", "sealedsecrets"): {"get", "list", "watch"},
        ("bitnami.com", "sealedsecrets/status"): {"update"},
        ("", "secrets"): {"get", "list", "create", "update", "delete", "watch"},
        ("", "events"): {"create", "patch"},
        ("", "namespaces"): {"get"},
    }
    (role,) = _by_kind("Role")
    assert role["metadata"]["namespace"] == "kube-system"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "list"]}]


def test_bindings_point_at_the_service_account() -> None:
    bindings = _by_kind("ClusterRoleBinding") + _by_kind("RoleBinding")
    assert {b["roleRef"]["name"] for b in bindings} == {sealed.CLUSTER_ROLE, sealed.KEY_ADMIN_ROLE}
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "sealed-secrets-controller", "namespace": "kube-system"}
        ]


def test_as_list_wraps_items() -> None:
    doc = json.loads(sealed.as_list(sealed.rbac_manifests()))
    assert doc["kind"] == "List" and len(doc["items"]) == 5


def test_write_private_is_0600(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "token"
    sealed.write_private(target, b"secret")
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_kube_env_prefers_this_run(ctx: Context) -> None:
    ctx.env.update({"KUBECONFIG": "/k/config", "KUBECTL": "/k/kubectl", "OTHER": "x"})
    assert sealed.kube_env(ctx) == {"KUBECONFIG": "/k/config", "KUBECTL": "/k/kubectl"}


def test_kube_env_falls_back_to_stack_env(ctx: Context) -> None:
    write_env_file(ctx.paths.stack_env, {"KUBECONFIG": "/s/config's", "KUBECTL": "/s/kubectl"})
    assert sealed.kube_env(ctx) == {"KUBECONFIG": "/s/config's", "KUBECTL": "/s/kubectl"}


def test_kube_env_without_kubernetes_says_what_to_do(ctx: Context) -> None:
    with pytest.raises(StackError, match="up kube sealed"):
        sealed.kube_env(ctx)


def test_env_publishes_what_kubeseal_reads(ctx: Context) -> None:
    env = sealed.SealedSecrets().env(ctx)
    assert env == {
        "SEALED_SECRETS_CERT": str(ctx.paths.state / "sealed" / "cert.pem"),
        "SEALED_SECRETS_URL": f"http://127.0.0.1:{PORTS['sealed_secrets']}",
        "KUBESEAL": str(sealed.bin_dir(ctx.paths) / "kubeseal"),
        "SEALED_SECRETS_CONTROLLER_NAMESPACE": "kube-system",
        "SEALED_SECRETS_CONTROLLER_NAME": "sealed-secrets-controller",
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [(CA_PEM, True), (b"\n" + CA_PEM, True), (b"cannot get certificate\n", False), (b"", False)],
)
def test_is_certificate(body: bytes, expected: bool) -> None:
    assert sealed.is_certificate(body) is expected
