"""Traefik v3: the cluster's ingress controller (Ingress of class ``nginx`` and Gateway API HTTPRoutes).

Built from the Go module proxy and run as a host process: it reaches pod IPs on the node bridge
directly, from the EndpointSlices of a Service. Two providers:

- ``kubernetesIngressNGINX`` serves Ingresses of class ``nginx`` (an IngressClass ``nginx`` with
  controller ``k8s.io/ingress-nginx`` must exist: the provider only matches ``spec.ingressClassName``
  against IngressClasses of its controller) and honours the ``nginx.ingress.kubernetes.io/``
  annotations the way ingress-nginx does, ``proxy-body-size`` included (request buffering is on, as
  it is by default in ingress-nginx; without it the provider enforces no body limit at all).
- ``kubernetesGateway`` serves HTTPRoutes attached to the Gateway ``traefik/mlstack`` (GatewayClass
  ``traefik``), whose HTTPS listener on port 443 terminates TLS with the platform's wildcard
  certificate (a Secret in ``default``, allowed by a ReferenceGrant).
- ``kubernetesCRD`` serves Traefik's own ``traefik.io`` objects. Only for ``Middleware``: the Gateway
  provider resolves an HTTPRoute filter of type ``ExtensionRef`` (group ``traefik.io``, kind
  ``Middleware``) through it, which is how a Gateway on Traefik does forward auth (the Gateway API has no
  standard filter for it). Its CRDs are the module's
  ``docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml`` (the provider waits
  for every kind's informer, so all ten are installed). ``disableClusterScopeResources`` keeps it off
  Nodes (they serve only ``nativeLB`` lookups), so the ServiceAccount needs no right on them.

Credentials: a ServiceAccount ``traefik/traefik`` with the ClusterRole rules of Traefik's documentation
for the three providers (less ``pods: get``, for OpenTelemetry only, and ``nodes``), and a TokenRequest token in a 0600
file. The static configuration (0600) names that file (``token`` accepts a path) and the API server CA
file; Traefik runs under ``env -i`` so it never sees ``KUBECONFIG`` (with it set, both providers use
the kubeconfig's admin credentials instead). Nothing secret is in argv.

Everything listens on 127.0.0.1: ``web`` :80, ``websecure`` :443 and the ``ping`` entrypoint used for
readiness. No dashboard or API, no version check, no usage statistics.

The build needs a wrapper module and two substitutions for dependencies the module proxy does not
serve; see the comment above :func:`wrapper_go_mod`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from .base import Context
from .config import BIND, PORTS, VERSIONS, Paths
from .gobuild import GO_ENV, binaries_present, module_dir
from .proc import StackError, http_status, recorded_pid, run_logged, say, start_daemon, stop, tcp_open, wait_until
from .sealed import as_list, write_private
from .secrets import read_env_file

NAME = "traefik"
VERSION = VERSIONS["traefik"]
# The kinds of Traefik's CRDs (the kubernetesCRD provider lists and watches every one).
TRAEFIK_KINDS = [
    "middlewares",
    "middlewaretcps",
    "ingressroutes",
    "traefikservices",
    "ingressroutetcps",
    "ingressrouteudps",
    "tlsoptions",
    "tlsstores",
    "serverstransports",
    "serverstransporttcps",
]
TRAEFIK_CRDS = Path("docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml")
MODULE = "github.com/traefik/traefik/v3"
COMMAND = f"{MODULE}/cmd/traefik"
# A nested module of the traefik repository (pkg/config/dynamic/ext): not in the module zip, not on
# the proxy, so the wrapper module provides it (empty extension types, as upstream's).
EXT_MODULE = "github.com/traefik/traefik/dynamic/ext"
EXT_GO = """package ext

// HTTP is a dynamic.HTTP extension.
type HTTP struct{}

// Router is a dynamic.Router extension.
type Router struct{}

// RouterIng is a RouterIng extension for ingress provider annotations.
type RouterIng struct{}

// ToRouter converts RouterIng to a Router.
func (r RouterIng) ToRouter() Router {
\treturn Router{}
}
"""
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"

# The readiness entrypoint (ping only).
TRAEFIK_PING_PORT = PORTS["traefik_ping"]
READY_TIMEOUT = 60.0

NAMESPACE = "traefik"
SERVICE_ACCOUNT = "traefik"
# No kubelet rotates this token, so it must outlive any session of the stack; a restart makes a new one.
TOKEN_DURATION = "8760h"  # noqa: S105 - a duration, not a secret

INGRESS_CLASS = "nginx"
INGRESS_CONTROLLER = "k8s.io/ingress-nginx"  # what the kubernetesIngressNGINX provider matches by default

GATEWAY_CLASS = "traefik"
GATEWAY_CONTROLLER = "traefik.io/gateway-controller"
GATEWAY_NAME = "mlstack"
GATEWAY_NAMESPACE = NAMESPACE
GATEWAY_SECTION = "websecure"
GATEWAY_HOSTNAME = "*.mlstack.test"
# The platform component's wildcard certificate (platform.TLS_NAMESPACE / TLS_SECRET).
TLS_SOURCE_NAMESPACE = "default"
TLS_SOURCE_SECRET = "mlstack-test-tls"  # noqa: S105 - the name of a Secret

WEB = "web"
WEBSECURE = "websecure"
PING = "ping"
# Headers whose name aliases another (X_Forwarded_User for X-Forwarded-User) are dropped, as nginx drops
# names with underscores: WSGI backends such as MLflow would read them as the header they alias.
HTTP_OPTIONS = {"aliasHeadersStrategy": "delete"}


# --- building (pure parts unit-tested) -----------------------------------------------------------------
#
# `go install traefik@version` refuses a module whose go.mod has replace directives, so a wrapper module
# under ~/.cache/mlstack/src/traefik-<version>/ requires traefik and repeats its replaces. Two more
# changes, because the Go module proxy this stack may use does not serve every dependency:
# - the containous fork of go-http-auth (basicAuth/digestAuth middlewares) at the pseudo-version
#   traefik v3.7 pins is not served; the fork's 2020 commit that earlier Traefik releases pinned is,
#   with the same API (CheckSecret, RequireAuthStale);
# - lego (ACME) imports every DNS provider from one generated registry; the SDKs of a few providers are
#   not served, so a copy of lego is patched to leave those providers out (an ACME DNS challenge with
#   them fails with "not built in"; the stack uses no ACME at all).

LEGO_MODULE = "github.com/go-acme/lego/v5"
LEGO_REGISTRY = Path("providers/dns/zz_gen_dns_providers.go")
# lego v5.4.1 DNS providers whose SDK module the proxy does not serve (from `go mod tidy`'s 403 errors).
UNSERVED_DNS_PROVIDERS = (
    "alidns",
    "aliesa",
    "azion",
    "dnsimple",
    "edgedns",
    "edgeone",
    "huaweicloud",
    "oraclecloud",
    "regfish",
    "sakuracloud",
    "tencentcloud",
    "ucloud",
    "yandexcloud",
)
HTTP_AUTH_MODULE = "github.com/abbot/go-http-auth"
HTTP_AUTH_FORK = "github.com/containous/go-http-auth v0.4.1-0.20200324110947-a37a7636d23e"


def bin_dir(paths: Paths, version: str = VERSION) -> Path:
    return paths.bin / f"traefik-{version}"


def src_dir(paths: Paths, version: str = VERSION) -> Path:
    return paths.src / f"traefik-{version}"


def _replace_entries(go_mod: str) -> list[tuple[str, str]]:
    """(old, new) sides of every replace directive, single-line or in a block."""
    entries = []
    for block in re.findall(r"^replace\s*\((.*?)^\)", go_mod, flags=re.MULTILINE | re.DOTALL):
        entries += [line for line in block.splitlines() if "=>" in line]
    entries += re.findall(r"^replace\s+([^(\s].*=>.*)$", go_mod, flags=re.MULTILINE)
    result = []
    for entry in entries:
        old, new = (side.split("//")[0].strip() for side in entry.split("=>", 1))
        result.append((old, new))
    return result


def wrapper_go_mod(version: str, traefik_go_mod: str) -> str:
    """go.mod of the module that builds traefik ``version``: traefik's go line, replaces and excludes.

    The one local replace of traefik (its nested ext module) points to ``./ext``; lego points to the
    patched copy in ``./lego``; go-http-auth to the fork commit the proxy serves.
    """
    go_line = re.search(r"^go\s+(\S+)", traefik_go_mod, flags=re.MULTILINE)
    lines = ["module mlstack.local/traefikbuild", "", f"go {go_line.group(1) if go_line else '1.26.0'}", ""]
    lines += [f"require {MODULE} {version}", ""]
    for old, new in _replace_entries(traefik_go_mod):
        module = old.split()[0]
        if module == HTTP_AUTH_MODULE:
            continue
        if new.startswith("."):
            if module != EXT_MODULE:
                raise StackError(f"traefik's go.mod replaces {old} with the local path {new}; not supported")
            lines.append(f"replace {EXT_MODULE} => ./ext")
        else:
            lines.append(f"replace {old} => {new}")
    lines.append(f"replace {HTTP_AUTH_MODULE} => {HTTP_AUTH_FORK}")
    lines.append(f"replace {LEGO_MODULE} => ./lego")
    lines.append("")
    for exclude in re.findall(r"^exclude\s+([^(\s].*)$", traefik_go_mod, flags=re.MULTILINE):
        lines.append(f"exclude {exclude.split('//')[0].strip()}")
    return "\n".join(lines) + "\n"


def patch_dns_registry(source: str, drop: tuple[str, ...] = UNSERVED_DNS_PROVIDERS) -> str:
    """lego's generated DNS provider registry without the ``drop`` providers (they answer "not built in")."""
    for provider in drop:
        import_line = f'\t"{LEGO_MODULE}/providers/dns/{provider}"\n'
        call = f"\t\treturn {provider}.NewDNSProvider()\n"
        if import_line not in source or call not in source:
            raise StackError(f"lego's DNS registry has no provider {provider!r}; update UNSERVED_DNS_PROVIDERS")
        source = source.replace(import_line, "")
        source = source.replace(call, '\t\treturn nil, fmt.Errorf("DNS provider %s is not built in", name)\n')
    return source


def version_ldflags(version: str) -> str:
    package = f"{MODULE}/pkg/version"
    return f"-s -w -X {package}.Version={version} -X {package}.BuildDate=1970-01-01T00:00:00Z"


def required_version(go_mod: str, module: str) -> str:
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod, flags=re.MULTILINE)
    if not found:
        raise StackError(f"{module} is not required by traefik's go.mod")
    return found.group(1)


def _writable_copy(source: Path, target: Path) -> None:
    """Copy a module out of the (read-only) module cache, writable by its owner."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    for root, dirs, files in os.walk(target):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)
    os.chmod(target, 0o700)


def write_wrapper(src: Path, version: str, cache: Path) -> None:
    """The wrapper module in ``src``: go.mod, go.sum, tools.go, ./ext and the patched ./lego."""
    upstream = module_dir(MODULE, version, cache)
    go_mod = (upstream / "go.mod").read_text()
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(wrapper_go_mod(version, go_mod))
    # Start from traefik's own checksums: the same dependency versions, verified as upstream pinned them.
    (src / "go.sum").write_bytes((upstream / "go.sum").read_bytes())
    (src / "ext").mkdir(exist_ok=True)
    (src / "ext" / "go.mod").write_text(f"module {EXT_MODULE}\n\ngo 1.24.0\n")
    (src / "ext" / "ext.go").write_text(EXT_GO)
    lego = src / "lego"
    _writable_copy(module_dir(LEGO_MODULE, required_version(go_mod, LEGO_MODULE), cache), lego)
    registry = lego / LEGO_REGISTRY
    registry.write_text(patch_dns_registry(registry.read_text()))
    (src / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{COMMAND}"\n')


def build_traefik(ctx: Context, version: str = VERSION) -> Path:
    target = bin_dir(ctx.paths, version)
    if binaries_present(target, ["traefik"]):
        return target
    src = src_dir(ctx.paths, version)
    target.mkdir(parents=True, exist_ok=True)
    say(f"    fetching {MODULE} {version} from the Go module proxy")
    write_wrapper(src, version, ctx.paths.cache)
    run_logged(ctx.paths, "build-traefik", ["go", "mod", "tidy"], env=GO_ENV, cwd=src, what="go mod tidy (traefik)")
    say(f"    compiling traefik {version} (about 10-20 min cold on 2 cores; cached afterwards)")
    run_logged(
        ctx.paths,
        "build-traefik",
        ["go", "build", "-trimpath", "-ldflags", version_ldflags(version), "-o", str(target / "traefik"), COMMAND],
        env=GO_ENV,
        cwd=src,
        what=f"go build traefik {version}",
    )
    return target


# --- configuration and manifests (pure, unit-tested) ----------------------------------------------------


def https_port() -> int:
    return PORTS["ingress_https"]


def http_port() -> int:
    return PORTS["ingress_http"]


def state_dir(paths: Paths) -> Path:
    return paths.component_dir(NAME)


def config_path(paths: Paths) -> Path:
    return state_dir(paths) / "traefik.yaml"


def token_path(paths: Paths) -> Path:
    return state_dir(paths) / "token"


def ca_path(paths: Paths) -> Path:
    return state_dir(paths) / "apiserver-ca.crt"


def static_config(
    *,
    endpoint: str,
    token_file: Path,
    ca_file: Path,
    http: int,
    https: int,
    ping: int = TRAEFIK_PING_PORT,
    address: str = BIND,
    watch_namespaces: list[str] | None = None,
) -> dict[str, Any]:
    """Traefik's static configuration. ``token`` is a file path (types.FileOrContent), never the token.

    ``watch_namespaces`` (experiments only): Ingresses of the first namespace, Gateway API objects of all.
    """
    credentials = {"endpoint": endpoint, "token": str(token_file), "certAuthFilePath": str(ca_file)}
    config = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            WEB: {"address": f"{address}:{http}", "http": dict(HTTP_OPTIONS)},
            WEBSECURE: {
                "address": f"{address}:{https}",
                "http": dict(HTTP_OPTIONS),
                # readTimeout bounds reading a whole request (60 s by default): room for large uploads.
                "transport": {"respondingTimeouts": {"readTimeout": "600s"}},
            },
            PING: {"address": f"{address}:{ping}", "http": dict(HTTP_OPTIONS)},
        },
        "ping": {"entryPoint": PING},
        "log": {"level": "INFO", "format": "common", "noColor": True},
        "accessLog": {"format": "common"},
        "providers": {
            "kubernetesIngressNGINX": {
                **credentials,
                "ingressClass": INGRESS_CLASS,
                "controllerClass": INGRESS_CONTROLLER,
                "httpEntryPoint": WEB,
                "httpsEntryPoint": WEBSECURE,
                # ingress-nginx buffers request bodies by default (proxy-request-buffering "on"); Traefik's
                # provider applies proxy-body-size (413 above it, 1m by default) only when buffering is on.
                "proxyRequestBuffering": True,
                "publishStatusAddress": [address],
            },
            "kubernetesGateway": {**credentials, "statusAddress": {"ip": address}},
            "kubernetesCRD": {**credentials, "disableClusterScopeResources": True},
        },
    }
    if watch_namespaces:
        config["providers"]["kubernetesIngressNGINX"]["watchNamespace"] = watch_namespaces[0]
        config["providers"]["kubernetesGateway"]["namespaces"] = list(watch_namespaces)
        config["providers"]["kubernetesCRD"]["namespaces"] = list(watch_namespaces)
    return config


def render_config(config: dict[str, Any]) -> str:
    return "# Written by mlstack_local.traefik; rewritten on every start.\n" + yaml.safe_dump(config, sort_keys=False)


def cluster_role_rules() -> list[dict[str, Any]]:
    """The union of the rules in Traefik's docs (docs/content/reference/dynamic-configuration/):
    kubernetes-ingress-nginx-rbac.yml, kubernetes-gateway-rbac.yml and kubernetes-crd-rbac.yml, less
    ``pods: get``, which all say is only for OpenTelemetry attributes (not enabled here), and less
    ``nodes`` (the CRD provider runs with ``disableClusterScopeResources``)."""
    gateway_kinds = [
        "gatewayclasses",
        "gateways",
        "httproutes",
        "grpcroutes",
        "tcproutes",
        "tlsroutes",
        "referencegrants",
        "backendtlspolicies",
    ]
    return [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["services", "secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["ingresses", "ingressclasses"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": gateway_kinds, "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["traefik.io"], "resources": TRAEFIK_KINDS, "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["gateway.networking.k8s.io"],
            "resources": [f"{kind}/status" for kind in gateway_kinds],
            "verbs": ["update"],
        },
    ]


def cluster_role_name(namespace: str = NAMESPACE) -> str:
    return f"mlstack-{namespace}"  # mlstack-traefik


def reference_grant_name(namespace: str = NAMESPACE) -> str:
    return f"{namespace}-gateways"  # traefik-gateways, in the Secret's namespace


def rbac_manifests(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, ClusterRole and its binding (names follow the namespace)."""
    return account_rbac(namespace, SERVICE_ACCOUNT, cluster_role_name(namespace), cluster_role_rules())


def account_rbac(
    namespace: str,
    account: str,
    cluster_role: str,
    rules: list[dict[str, Any]],
    namespace_labels: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A host process's identity: its Namespace, ServiceAccount, and a ClusterRole bound to that account
    (Traefik, MetalLB's controller and kube-router each run as one)."""
    rbac = "rbac.authorization.k8s.io/v1"
    metadata: dict[str, Any] = {"name": namespace}
    if namespace_labels:
        metadata["labels"] = dict(namespace_labels)
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": cluster_role}, "rules": rules},
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    ]


def ingress_class_manifest() -> dict[str, Any]:
    """The provider serves ``spec.ingressClassName: nginx`` only if an IngressClass of its controller has that name."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": INGRESS_CLASS},
        "spec": {"controller": INGRESS_CONTROLLER},
    }


def gateway_manifests(namespace: str = NAMESPACE, port: int | None = None) -> list[dict[str, Any]]:
    """GatewayClass, Gateway (HTTPS on ``port``: Traefik picks the entryPoint listening on that port)
    and the ReferenceGrant that lets it use the platform's wildcard certificate in ``default``."""
    gateway_api = "gateway.networking.k8s.io"
    listener = {
        "name": GATEWAY_SECTION,
        "protocol": "HTTPS",
        "port": port if port is not None else https_port(),
        "hostname": GATEWAY_HOSTNAME,
        "tls": {
            "mode": "Terminate",
            "certificateRefs": [
                {"group": "", "kind": "Secret", "name": TLS_SOURCE_SECRET, "namespace": TLS_SOURCE_NAMESPACE}
            ],
        },
        "allowedRoutes": {"namespaces": {"from": "All"}},
    }
    return [
        {
            "apiVersion": f"{gateway_api}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": GATEWAY_CONTROLLER},
        },
        {
            "apiVersion": f"{gateway_api}/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": namespace},
            "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": [listener]},
        },
        {
            "apiVersion": f"{gateway_api}/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": reference_grant_name(namespace), "namespace": TLS_SOURCE_NAMESPACE},
            "spec": {
                "from": [{"group": gateway_api, "kind": "Gateway", "namespace": namespace}],
                "to": [{"group": "", "kind": "Secret", "name": TLS_SOURCE_SECRET}],
            },
        },
    ]


def daemon_argv(binary: Path, config: Path, tmp: Path) -> list[str]:
    """``env -i`` so Traefik sees neither KUBECONFIG (which both providers would prefer to the token)
    nor KUBERNETES_SERVICE_HOST; the only argument is the config file's path."""
    env_binary = shutil.which("env") or "/usr/bin/env"
    return [
        env_binary,
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        f"TMPDIR={tmp}",
        str(binary),
        f"--configFile={config}",
    ]


def apiserver_from_view(view: dict[str, Any]) -> tuple[str, bytes]:
    """(server URL, CA PEM) of the current cluster of ``kubectl config view --raw --minify --flatten -o json``."""
    clusters = view.get("clusters") or []
    if len(clusters) != 1:
        raise StackError(f"expected one cluster in the minified kubeconfig, found {len(clusters)}")
    cluster = clusters[0]["cluster"]
    server = cluster.get("server", "")
    if urllib.parse.urlsplit(server).scheme != "https":
        raise StackError(f"the kubeconfig's server {server!r} is not an https URL")
    ca_data = cluster.get("certificate-authority-data")
    if not ca_data:
        raise StackError("the kubeconfig has no certificate-authority-data; Traefik must verify the API server")
    return server, base64.b64decode(ca_data)


def crd_names(files: list[Path]) -> list[str]:
    """Names of the CustomResourceDefinitions in ``files`` (the directory also holds an admission policy)."""
    names = []
    for file in files:
        for document in yaml.safe_load_all(file.read_text()):
            if document and document.get("kind") == "CustomResourceDefinition":
                names.append(document["metadata"]["name"])
    return names


# --- the component -----------------------------------------------------------------------------------


def kubectl(kenv: dict[str, str], *args: str, stdin: str | None = None) -> str:
    argv = [kenv["KUBECTL"], "--kubeconfig", kenv["KUBECONFIG"], *args]
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise StackError(f"kubectl {' '.join(args[:3])} failed (exit {result.returncode}):\n{result.stderr.strip()}")
    return result.stdout


def server_side_apply(kenv: dict[str, str], items: list[dict[str, Any]]) -> None:
    kubectl(
        kenv, "apply", "--server-side", "--force-conflicts", "--field-manager=mlstack", "-f", "-", stdin=as_list(items)
    )


class Traefik:
    name = NAME
    title = f"Traefik {VERSION} (Ingress nginx class, Gateway API)"
    wanted_secrets: dict[str, str] = {}

    def __init__(
        self,
        *,
        https: int | None = None,
        http: int | None = None,
        ping: int = TRAEFIK_PING_PORT,
        namespace: str = NAMESPACE,
        watch_namespaces: list[str] | None = None,
    ) -> None:
        # The parameters are for experiments next to a running stack only; the stack uses the defaults.
        self.https = https if https is not None else https_port()
        self.http = http if http is not None else http_port()
        self.ping = ping
        self.namespace = namespace
        self.watch_namespaces = watch_namespaces
        self._crd_files: list[Path] | None = None

    def _kube_env(self, ctx: Context) -> dict[str, str]:
        """KUBECONFIG and KUBECTL: from the kube component in this run, else from ``.local/stack.env``."""
        env = dict(ctx.env)
        if ("KUBECONFIG" not in env or "KUBECTL" not in env) and ctx.paths.stack_env.exists():
            env = read_env_file(ctx.paths.stack_env) | env
        if "KUBECONFIG" not in env or "KUBECTL" not in env:
            raise StackError("Traefik needs the Kubernetes component: start it first (make up)")
        return {"KUBECONFIG": env["KUBECONFIG"], "KUBECTL": env["KUBECTL"]}

    def _ping_url(self) -> str:
        return f"http://{BIND}:{self.ping}/ping"

    def _answers(self) -> bool:
        return http_status(self._ping_url()) == 200

    def prepare(self, ctx: Context) -> None:
        build_traefik(ctx)
        self._crds(ctx)

    def _crds(self, ctx: Context) -> list[Path]:
        """The Gateway API standard-channel CRDs of the version Traefik's go.mod requires, and Traefik's own."""
        if self._crd_files:
            return self._crd_files
        upstream = module_dir(MODULE, VERSION, ctx.paths.cache)
        version = required_version((upstream / "go.mod").read_text(), GATEWAY_API_MODULE)
        crd_dir = module_dir(GATEWAY_API_MODULE, version, ctx.paths.cache) / "config" / "crd" / "standard"
        files = sorted(crd_dir.glob("*.yaml"))
        if not files:
            raise StackError(f"no Gateway API CRDs in {crd_dir}")
        own = upstream / TRAEFIK_CRDS
        if not own.is_file():
            raise StackError(f"Traefik's CRDs are not in its module: {own}")
        self._crd_files = [*files, own]
        return self._crd_files

    def is_up(self, ctx: Context) -> bool:
        return recorded_pid(ctx.paths, NAME) is not None and self._answers()

    def start(self, ctx: Context) -> None:
        if self.is_up(ctx):
            return
        stop(ctx.paths, NAME)  # recorded but not answering: replace it
        for port in (self.https, self.http, self.ping):
            if tcp_open(BIND, port):
                raise StackError(f"{BIND}:{port} is taken by a process the stack did not start (see `ss -ltnp`)")
        kenv = self._kube_env(ctx)
        self._install(ctx, kenv)
        config = self._write_credentials_and_config(ctx, kenv)
        tmp = state_dir(ctx.paths) / "tmp"  # request bodies buffered past 16 KiB (unlinked at once)
        tmp.mkdir(mode=0o700, exist_ok=True)
        start_daemon(
            ctx.paths, NAME, daemon_argv(bin_dir(ctx.paths) / "traefik", config, tmp), cwd=state_dir(ctx.paths)
        )
        took = wait_until(
            f"Traefik ping on {BIND}:{self.ping}", self._answers, timeout=READY_TIMEOUT, paths=ctx.paths, name=NAME
        )
        wait_until("the Gateway to be programmed", lambda: self._gateway_programmed(kenv), timeout=60)
        say(
            f"    Traefik answers after {took:.1f}s on {BIND}:{self.https}/{self.http}; log {ctx.paths.logs}/{NAME}.log"
        )

    def _install(self, ctx: Context, kenv: dict[str, str]) -> None:
        """CRDs, RBAC, IngressClass, GatewayClass, Gateway and ReferenceGrant (server-side apply: idempotent)."""
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=mlstack"]
        files = self._crds(ctx)
        for crd in files:
            args += ["-f", str(crd)]
        kubectl(kenv, *args)
        names = [f"crd/{name}" for name in crd_names(files)]
        kubectl(kenv, "wait", "--for=condition=Established", *names, "--timeout=60s")
        server_side_apply(kenv, [*rbac_manifests(self.namespace), ingress_class_manifest()])
        server_side_apply(kenv, gateway_manifests(self.namespace, self.https))

    def _write_credentials_and_config(self, ctx: Context, kenv: dict[str, str]) -> Path:
        view = json.loads(kubectl(kenv, "config", "view", "--raw", "--minify", "--flatten", "-o", "json"))
        server, ca_pem = apiserver_from_view(view)
        token = kubectl(
            kenv, "-n", self.namespace, "create", "token", SERVICE_ACCOUNT, f"--duration={TOKEN_DURATION}"
        ).strip()
        directory = state_dir(ctx.paths)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        write_private(token_path(ctx.paths), token.encode())
        write_private(ca_path(ctx.paths), ca_pem)
        config = static_config(
            endpoint=server,
            token_file=token_path(ctx.paths),
            ca_file=ca_path(ctx.paths),
            http=self.http,
            https=self.https,
            ping=self.ping,
            watch_namespaces=self.watch_namespaces,
        )
        write_private(config_path(ctx.paths), render_config(config).encode())
        return config_path(ctx.paths)

    def _gateway_programmed(self, kenv: dict[str, str]) -> bool:
        out = kubectl(kenv, "-n", self.namespace, "get", "gateway", GATEWAY_NAME, "-o", "json")
        conditions = (json.loads(out).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Programmed" and c.get("status") == "True" for c in conditions)

    def stop(self, ctx: Context) -> None:
        stop(ctx.paths, NAME)

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "INGRESS_ADDRESS": BIND,
            "INGRESS_HTTPS_PORT": str(self.https),
            "INGRESS_HTTP_PORT": str(self.http),
            "GATEWAY_NAME": GATEWAY_NAME,
            "GATEWAY_NAMESPACE": self.namespace,
            "GATEWAY_SECTION": GATEWAY_SECTION,
        }
