"""The local stack's Traefik component: build module, static config, RBAC, Gateway manifests (no network)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

# The launcher lives in hack/ (run with PYTHONPATH=hack); make it importable for plain pytest too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import traefik  # noqa: E402
from mlstack_local.base import Context  # noqa: E402
from mlstack_local.config import PORTS, Paths  # noqa: E402
from mlstack_local.proc import StackError  # noqa: E402
from mlstack_local.secrets import write_env_file  # noqa: E402

TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-token-value.signature"  # noqa: S105 - a fake token
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SERVER = "https://127.0.0.1:36443"

# The parts of traefik v3.7.13's go.mod that matter to the wrapper module.
TRAEFIK_GO_MOD = """module github.com/traefik/traefik/v3

go 1.26.0

require (
\tgithub.com/abbot/go-http-auth v0.0.0-00010101000000-000000000000 // No tag on the repo.
\tgithub.com/go-acme/lego/v5 v5.4.1
\tgithub.com/traefik/traefik/dynamic/ext v0.0.0-00010101000000-000000000000
\tsigs.k8s.io/gateway-api v1.6.1
\tsigs.k8s.io/gateway-api/conformance v1.6.1
)

// Dynamic config extension.
replace github.com/traefik/traefik/dynamic/ext => ./pkg/config/dynamic/ext

// Containous forks
replace (
\tgithub.com/abbot/go-http-auth => github.com/containous/go-http-auth v0.4.1-0.20260804094822-b975dcaa8c48
\tgithub.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59
)

exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible
"""


def config(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "endpoint": SERVER,
        "token_file": Path("/state/traefik/token"),
        "ca_file": Path("/state/traefik/apiserver-ca.crt"),
        "http": 80,
        "https": 443,
    }
    args.update(overrides)
    return traefik.static_config(**args)


def test_component_identity() -> None:
    component = traefik.Traefik()
    assert component.name == "traefik"
    assert "Traefik" in component.title
    assert component.wanted_secrets == {}
    assert (component.https, component.http, component.ping) == (PORTS["ingress_https"], PORTS["ingress_http"], 38080)


def test_paths_are_keyed_by_version_and_state(paths: Paths) -> None:
    assert traefik.bin_dir(paths, "v3.7.13") == paths.cache / "bin" / "traefik-v3.7.13"
    assert traefik.src_dir(paths, "v3.7.13") == paths.cache / "src" / "traefik-v3.7.13"
    for path in (traefik.config_path(paths), traefik.token_path(paths), traefik.ca_path(paths)):
        assert path.parent == paths.state / "traefik"


# --- the build -------------------------------------------------------------------------------------------


def test_wrapper_go_mod_repeats_replaces_and_swaps_the_local_and_unserved_ones() -> None:
    go_mod = traefik.wrapper_go_mod("v3.7.13", TRAEFIK_GO_MOD)
    lines = go_mod.splitlines()
    assert lines[0] == "module mlstack.local/traefikbuild"
    assert "go 1.26.0" in lines
    assert "require github.com/traefik/traefik/v3 v3.7.13" in lines
    assert "replace github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59" in lines
    assert "replace github.com/traefik/traefik/dynamic/ext => ./ext" in lines
    assert "replace github.com/go-acme/lego/v5 => ./lego" in lines
    auth = [line for line in lines if line.startswith("replace github.com/abbot/go-http-auth")]
    assert auth == [f"replace github.com/abbot/go-http-auth => {traefik.HTTP_AUTH_FORK}"]
    assert "exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible" in lines
    assert "./pkg/config" not in go_mod


def test_wrapper_go_mod_refuses_an_unknown_local_replace() -> None:
    with pytest.raises(StackError, match="local path"):
        traefik.wrapper_go_mod("v3.7.13", TRAEFIK_GO_MOD + "replace example.com/x => ../x\n")


def test_required_version() -> None:
    assert traefik.required_version(TRAEFIK_GO_MOD, "sigs.k8s.io/gateway-api") == "v1.6.1"
    assert traefik.required_version(TRAEFIK_GO_MOD, "github.com/go-acme/lego/v5") == "v5.4.1"
    with pytest.raises(StackError):
        traefik.required_version(TRAEFIK_GO_MOD, "example.com/missing")


def test_dns_registry_patch_drops_only_the_unserved_providers() -> None:
    registry = (
        'package dns\n\nimport (\n\t"fmt"\n\n'
        '\t"github.com/go-acme/lego/v5/providers/dns/alidns"\n'
        '\t"github.com/go-acme/lego/v5/providers/dns/cloudflare"\n)\n\n'
        "func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {\n\tswitch name {\n"
        '\tcase "alidns":\n\t\treturn alidns.NewDNSProvider()\n'
        '\tcase "cloudflare":\n\t\treturn cloudflare.NewDNSProvider()\n'
        '\tdefault:\n\t\treturn nil, fmt.Errorf("unrecognized DNS provider: %s", name)\n\t}\n}\n'
    )
    patched = traefik.patch_dns_registry(registry, ("alidns",))
    assert "providers/dns/alidns" not in patched
    assert "alidns.NewDNSProvider" not in patched
    assert 'case "alidns":\n\t\treturn nil, fmt.Errorf("DNS provider %s is not built in", name)' in patched
    assert '"github.com/go-acme/lego/v5/providers/dns/cloudflare"' in patched
    assert "return cloudflare.NewDNSProvider()" in patched
    with pytest.raises(StackError, match="no provider"):
        traefik.patch_dns_registry(registry, ("nosuchprovider",))


def test_version_ldflags_strip_and_stamp() -> None:
    flags = traefik.version_ldflags("v3.7.13")
    assert flags.startswith("-s -w ")
    assert "-X github.com/traefik/traefik/v3/pkg/version.Version=v3.7.13" in flags


# --- the static configuration ----------------------------------------------------------------------------


def test_every_entrypoint_listens_on_loopback() -> None:
    entry_points = config()["entryPoints"]
    assert set(entry_points) == {"web", "websecure", "ping"}
    for entry in entry_points.values():
        host, _, port = entry["address"].rpartition(":")
        assert ipaddress.ip_address(host).is_loopback
        assert int(port) > 0
    assert entry_points["web"]["address"] == "127.0.0.1:80"
    assert entry_points["websecure"]["address"] == "127.0.0.1:443"
    assert entry_points["ping"]["address"] == f"127.0.0.1:{traefik.TRAEFIK_PING_PORT}"
    for entry in entry_points.values():
        assert entry["http"]["aliasHeadersStrategy"] == "delete"  # no X_Forwarded_User spoofing


def test_ping_has_its_own_entrypoint_and_no_api_or_dashboard() -> None:
    static = config()
    assert static["ping"] == {"entryPoint": "ping"}
    assert traefik.TRAEFIK_PING_PORT == 38080
    assert "api" not in static
    assert "traefik" not in static["entryPoints"]  # the internal entrypoint (:8080, all interfaces)
    assert "metrics" not in static


def test_traefik_does_not_phone_home() -> None:
    assert config()["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}


def test_providers_read_credentials_from_files() -> None:
    providers = config()["providers"]
    assert set(providers) == {"kubernetesIngressNGINX", "kubernetesGateway", "kubernetesCRD"}
    for provider in providers.values():
        assert provider["endpoint"] == SERVER
        assert provider["token"] == "/state/traefik/token"  # a path: Traefik's FileOrContent reads the file
        assert provider["certAuthFilePath"] == "/state/traefik/apiserver-ca.crt"


def test_nginx_provider_behaves_like_ingress_nginx() -> None:
    nginx = config()["providers"]["kubernetesIngressNGINX"]
    assert nginx["ingressClass"] == "nginx"
    assert nginx["controllerClass"] == "k8s.io/ingress-nginx"
    # Only the two public entrypoints, never the ping one.
    assert (nginx["httpEntryPoint"], nginx["httpsEntryPoint"]) == ("web", "websecure")
    # proxy-body-size is enforced only with request buffering on (ingress-nginx's default).
    assert nginx["proxyRequestBuffering"] is True
    assert nginx["publishStatusAddress"] == ["127.0.0.1"]
    assert config()["providers"]["kubernetesGateway"]["statusAddress"] == {"ip": "127.0.0.1"}


def test_crd_provider_serves_middlewares_without_cluster_scope() -> None:
    """Gateway forward auth: an HTTPRoute ExtensionRef to a traefik.io Middleware needs the CRD provider;
    without cluster-scope resources it never reads Nodes, so the role grants none."""
    assert config()["providers"]["kubernetesCRD"]["disableClusterScopeResources"] is True
    rules = rules_by_group_resource(traefik.cluster_role_rules())
    assert rules[("traefik.io", "middlewares")] == {"get", "list", "watch"}
    assert ("", "nodes") not in rules


def test_other_ports_and_namespaces_for_experiments() -> None:
    static = config(http=38081, https=38443, ping=38082, watch_namespaces=["exp", "default"])
    entry_points = static["entryPoints"]
    assert entry_points["web"]["address"] == "127.0.0.1:38081"
    assert entry_points["websecure"]["address"] == "127.0.0.1:38443"
    assert entry_points["ping"]["address"] == "127.0.0.1:38082"
    assert static["providers"]["kubernetesIngressNGINX"]["watchNamespace"] == "exp"
    assert static["providers"]["kubernetesGateway"]["namespaces"] == ["exp", "default"]
    assert static["providers"]["kubernetesCRD"]["namespaces"] == ["exp", "default"]
    # The stack's instance watches every namespace.
    assert "watchNamespace" not in config()["providers"]["kubernetesIngressNGINX"]
    assert "namespaces" not in config()["providers"]["kubernetesGateway"]
    assert "namespaces" not in config()["providers"]["kubernetesCRD"]
    _, exp_account, exp_role, exp_binding = traefik.rbac_manifests("exp")
    assert exp_role["metadata"]["name"] == exp_binding["metadata"]["name"] == "mlstack-exp"
    assert traefik.gateway_manifests("exp")[2]["metadata"]["name"] == "exp-gateways"


def test_rendered_config_is_yaml_without_the_token() -> None:
    rendered = traefik.render_config(config())
    assert yaml.safe_load(rendered) == config()
    assert TOKEN not in rendered


def test_daemon_argv_has_no_secret_and_hides_kubeconfig(tmp_path: Path) -> None:
    argv = traefik.daemon_argv(Path("/bin/traefik"), tmp_path / "traefik.yaml", tmp_path / "tmp")
    assert argv[0].endswith("env")
    assert argv[1] == "-i"  # an empty environment: no KUBECONFIG, no KUBERNETES_SERVICE_HOST
    assert not any(arg.startswith(("KUBECONFIG", "KUBERNETES_")) for arg in argv)
    assert argv[-2:] == ["/bin/traefik", f"--configFile={tmp_path / 'traefik.yaml'}"]
    assert not any("token" in arg.lower() for arg in argv)


# --- RBAC ----------------------------------------------------------------------------------------------


def rules_by_group_resource(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


def test_cluster_role_is_read_only_except_status() -> None:
    rules = rules_by_group_resource(traefik.cluster_role_rules())
    for (group, resource), verbs in rules.items():
        if resource.endswith("/status"):
            assert verbs == {"update"}, (group, resource)
        else:
            assert verbs <= {"get", "list", "watch"}, (group, resource)
    assert rules[("", "secrets")] == {"get", "list", "watch"}
    assert rules[("discovery.k8s.io", "endpointslices")] == {"list", "watch"}
    assert rules[("networking.k8s.io", "ingressclasses")] == {"list", "watch"}
    assert rules[("networking.k8s.io", "ingresses/status")] == {"update"}
    assert rules[("gateway.networking.k8s.io", "httproutes")] == {"get", "list", "watch"}
    assert rules[("gateway.networking.k8s.io", "gateways/status")] == {"update"}
    assert ("", "pods") not in rules  # only for OpenTelemetry attributes
    assert not any("*" in key[1] or "*" in verbs for key, verbs in rules.items())


def traefik_module_dir(tmp_path: Path) -> Path:
    """Traefik's module source, from the Go module cache or, on a new machine, the Go module proxy."""
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"github.com/traefik/traefik/v3@{traefik.VERSION}"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # outside any module
        env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return Path(json.loads(result.stdout)["Dir"])


def test_cluster_role_matches_traefiks_documented_rbac(tmp_path: Path) -> None:
    """The rules equal the union of Traefik's own RBAC examples (its module source, docs/)."""
    docs = traefik_module_dir(tmp_path) / "docs/content/reference/dynamic-configuration"
    documented: list[dict[str, Any]] = []
    for name in ("kubernetes-ingress-nginx-rbac.yml", "kubernetes-gateway-rbac.yml"):
        for document in yaml.safe_load_all((docs / name).read_text()):
            if document and document["kind"] == "ClusterRole":
                documented += document["rules"]
    # Of the CRD provider's example (a whole Traefik's), only its own kinds: the rest is the other two's.
    for document in yaml.safe_load_all((docs / "kubernetes-crd-rbac.yml").read_text()):
        if document and document["kind"] == "ClusterRole":
            documented += [rule for rule in document["rules"] if rule["apiGroups"] == ["traefik.io"]]
    expected = rules_by_group_resource(documented)
    expected.pop(("", "pods"))  # "When OTel tracing/logs/metrics are not enabled, this rule is not needed."
    assert rules_by_group_resource(traefik.cluster_role_rules()) == expected


def test_rbac_binds_the_role_to_the_service_account() -> None:
    namespace, account, role, binding = traefik.rbac_manifests()
    assert namespace == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "traefik"}}
    assert account["kind"] == "ServiceAccount"
    assert account["metadata"] == {"name": "traefik", "namespace": "traefik"}
    assert role["kind"] == "ClusterRole"
    assert role["metadata"] == {"name": "mlstack-traefik"}
    assert role["rules"] == traefik.cluster_role_rules()
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "traefik", "namespace": "traefik"}]


# --- IngressClass and Gateway API objects -----------------------------------------------------------------


def test_ingress_class_names_the_ingress_nginx_controller() -> None:
    assert traefik.ingress_class_manifest() == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "nginx"},
        "spec": {"controller": "k8s.io/ingress-nginx"},
    }


def test_gateway_class_gateway_and_reference_grant() -> None:
    gateway_class, gateway, grant = traefik.gateway_manifests()
    assert gateway_class["kind"] == "GatewayClass"
    assert gateway_class["metadata"]["name"] == "traefik"
    assert gateway_class["spec"] == {"controllerName": "traefik.io/gateway-controller"}

    assert gateway["kind"] == "Gateway"
    assert gateway["metadata"] == {"name": "mlstack", "namespace": "traefik"}
    assert gateway["spec"]["gatewayClassName"] == "traefik"
    (listener,) = gateway["spec"]["listeners"]
    assert listener["name"] == traefik.GATEWAY_SECTION
    assert (listener["protocol"], listener["port"]) == ("HTTPS", 443)  # Traefik maps it to websecure by port
    assert listener["hostname"] == "*.mlstack.test"
    assert listener["tls"]["mode"] == "Terminate"
    assert listener["tls"]["certificateRefs"] == [
        {"group": "", "kind": "Secret", "name": "mlstack-test-tls", "namespace": "default"}
    ]
    assert listener["allowedRoutes"] == {"namespaces": {"from": "All"}}

    assert grant["kind"] == "ReferenceGrant"
    assert grant["apiVersion"] == "gateway.networking.k8s.io/v1beta1"
    assert grant["metadata"] == {"name": "traefik-gateways", "namespace": "default"}  # where the Secret is
    assert grant["spec"]["from"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "traefik"}]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Secret", "name": "mlstack-test-tls"}]


def test_gateway_listener_follows_the_https_port() -> None:
    _, gateway, _ = traefik.gateway_manifests("traefik", 38443)
    assert gateway["spec"]["listeners"][0]["port"] == 38443


def test_crd_names_skip_the_admission_policy(tmp_path: Path) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"}
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump({**crd, "metadata": {"name": "gateways.gateway.networking.k8s.io"}})
    )
    (tmp_path / "b.yaml").write_text(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: x}\n---\n"
    )
    assert traefik.crd_names(sorted(tmp_path.glob("*.yaml"))) == ["gateways.gateway.networking.k8s.io"]


# --- credentials ------------------------------------------------------------------------------------------


def view(server: str = SERVER, ca: bytes | None = CA_PEM) -> dict[str, Any]:
    cluster: dict[str, str] = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    return {"clusters": [{"name": "mlstack", "cluster": cluster}]}


def test_apiserver_from_view() -> None:
    assert traefik.apiserver_from_view(view()) == (SERVER, CA_PEM)
    with pytest.raises(StackError, match="certificate-authority-data"):
        traefik.apiserver_from_view(view(ca=None))
    with pytest.raises(StackError, match="https"):
        traefik.apiserver_from_view(view(server="http://127.0.0.1:8080"))


def fake_kubectl(calls: list[tuple[str, ...]], stdins: list[str] | None = None):
    def run(kenv: dict[str, str], *args: str, stdin: str | None = None) -> str:
        calls.append(args)
        if stdin is not None and stdins is not None:
            stdins.append(stdin)
        if args[:2] == ("config", "view"):
            return json.dumps(view())
        if "token" in args:
            return TOKEN + "\n"
        return ""

    return run


def test_credentials_and_config_are_private_files(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(traefik, "kubectl", fake_kubectl(calls))
    component = traefik.Traefik()
    config_file = component._write_credentials_and_config(ctx, {"KUBECTL": "kubectl", "KUBECONFIG": "k"})
    assert ("-n", "traefik", "create", "token", "traefik", "--duration=8760h") in calls
    assert traefik.token_path(ctx.paths).read_text() == TOKEN
    assert traefik.ca_path(ctx.paths).read_bytes() == CA_PEM
    for path in (config_file, traefik.token_path(ctx.paths), traefik.ca_path(ctx.paths)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(traefik.state_dir(ctx.paths).stat().st_mode) == 0o700
    static = yaml.safe_load(config_file.read_text())
    assert TOKEN not in config_file.read_text()
    assert static["providers"]["kubernetesGateway"]["token"] == str(traefik.token_path(ctx.paths))


def test_start_applies_the_objects_and_passes_no_secret_in_argv(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    stdins: list[str] = []
    started: list[list[str]] = []
    monkeypatch.setattr(traefik, "kubectl", fake_kubectl(calls, stdins))
    monkeypatch.setattr(traefik, "tcp_open", lambda host, port: False)
    monkeypatch.setattr(traefik.Traefik, "_crds", lambda self, ctx: [])
    monkeypatch.setattr(traefik.Traefik, "is_up", lambda self, ctx: False)
    monkeypatch.setattr(traefik.Traefik, "_gateway_programmed", lambda self, kenv: True)
    monkeypatch.setattr(traefik, "start_daemon", lambda paths, name, argv, **kw: started.append(list(argv)) or 1)
    monkeypatch.setattr(traefik, "wait_until", lambda what, check, **kw: 0.0)
    ctx.env.update({"KUBECTL": "kubectl", "KUBECONFIG": "/kubeconfig"})
    traefik.Traefik().start(ctx)
    (argv,) = started
    assert TOKEN not in " ".join(argv)
    assert not any("KUBECONFIG" in arg for arg in argv)
    assert not any(TOKEN in arg for call in calls for arg in call)
    applied = [item for stdin in stdins for item in json.loads(stdin)["items"]]
    kinds = {(item["kind"], item["metadata"]["name"]) for item in applied}
    assert {("IngressClass", "nginx"), ("GatewayClass", "traefik"), ("Gateway", "mlstack")} <= kinds
    assert ("ClusterRoleBinding", "mlstack-traefik") in kinds


def test_start_refuses_a_port_held_by_another_process(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traefik.Traefik, "is_up", lambda self, ctx: False)
    monkeypatch.setattr(traefik, "tcp_open", lambda host, port: port == 443)
    ctx.env.update({"KUBECTL": "kubectl", "KUBECONFIG": "/kubeconfig"})
    with pytest.raises(StackError, match="127.0.0.1:443"):
        traefik.Traefik().start(ctx)


def test_kube_env_falls_back_to_stack_env(ctx: Context) -> None:
    with pytest.raises(StackError, match="Kubernetes"):
        traefik.Traefik()._kube_env(ctx)
    ctx.paths.state.mkdir(parents=True)
    write_env_file(ctx.paths.stack_env, {"KUBECTL": "/bin/kubectl", "KUBECONFIG": "/kc"})
    assert traefik.Traefik()._kube_env(ctx) == {"KUBECTL": "/bin/kubectl", "KUBECONFIG": "/kc"}


def test_env_publishes_the_old_ingress_keys_and_the_gateway(ctx: Context) -> None:
    assert traefik.Traefik().env(ctx) == {
        "INGRESS_ADDRESS": "127.0.0.1",
        "INGRESS_HTTPS_PORT": "443",
        "INGRESS_HTTP_PORT": "80",
        "GATEWAY_NAME": "mlstack",
        "GATEWAY_NAMESPACE": "traefik",
        "GATEWAY_SECTION": traefik.GATEWAY_SECTION,
    }
