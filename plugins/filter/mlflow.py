# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the mlstack.mlflow collection.

Each filter is documented in the YAML file of its name next to this one (``mlflow_db_uri.yml`` ...), the
way ansible-core documents its own filters: ``ansible-doc -t filter mlstack.mlflow.mlflow_db_uri``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlencode

from ansible.errors import AnsibleFilterError
from ansible_collections.mlstack.mlflow.plugins.module_utils._sealing import (
    SCOPES,
    load_public_key,
    sealed_secret_manifest,
)

_DRIVER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z][A-Za-z0-9_]*)?$")
# A DNS name or IPv4 address; IPv6 is recognised separately. Underscores occur in real hostnames.
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_REGISTRY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-\[\]:]*)(/[A-Za-z0-9_.\-/]*)?$")


def _require_str(value: Any, what: str, *, allow_empty: bool = False) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        raise AnsibleFilterError(f"{what} must be a string, got {type(value).__name__}")
    text = str(value)
    if not text and not allow_empty:
        raise AnsibleFilterError(f"{what} must not be empty")
    return text


def _quote(value: str) -> str:
    return quote(value, safe="")


def _format_host(host: Any) -> str:
    text = _require_str(host, "mlflow_db_uri: host").strip()
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(inner)
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address):
        return f"[{inner}]"
    if address is None and (text != inner or not _HOSTNAME_RE.match(text)):
        raise AnsibleFilterError(f"mlflow_db_uri: host {text!r} is not a hostname or IP address")
    return text


def _validate_port(port: Any) -> int:
    if isinstance(port, bool):
        raise AnsibleFilterError("mlflow_db_uri: port must be an integer between 1 and 65535, got a boolean")
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port.strip())
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise AnsibleFilterError(f"mlflow_db_uri: port must be an integer between 1 and 65535, got {port!r}")
    return port


def mlflow_db_uri(
    user: str,
    password: str | None,
    host: str,
    port: int | str,
    database: str,
    driver: str = "postgresql+psycopg2",
    params: Mapping[str, Any] | None = None,
) -> str:
    """SQLAlchemy URI ``driver://user:password@host:port/database?params`` with credentials encoded."""
    driver_text = _require_str(driver, "mlflow_db_uri: driver")
    if not _DRIVER_RE.match(driver_text):
        raise AnsibleFilterError(f"mlflow_db_uri: driver {driver_text!r} is not a SQLAlchemy dialect[+driver] name")
    userinfo = _quote(_require_str(user, "mlflow_db_uri: user"))
    if password is not None:
        password_text = _require_str(password, "mlflow_db_uri: password", allow_empty=True)
        if password_text:
            userinfo += ":" + _quote(password_text)
    uri = f"{driver_text}://{userinfo}@{_format_host(host)}:{_validate_port(port)}"
    uri += "/" + _quote(_require_str(database, "mlflow_db_uri: database"))
    if params:
        if not isinstance(params, Mapping):
            raise AnsibleFilterError(f"mlflow_db_uri: params must be a dict, got {type(params).__name__}")
        query = {}
        for key, value in params.items():
            if value is None or isinstance(value, Mapping):
                raise AnsibleFilterError(f"mlflow_db_uri: params[{key!r}] must be a string, number or list")
            query[str(key)] = value
        uri += "?" + urlencode(query, doseq=True)
    return uri


def dockerconfigjson(registry: str, username: str, password: str, email: str | None = None) -> str:
    """JSON for a ``kubernetes.io/dockerconfigjson`` Secret holding one registry's credentials."""
    server = _require_str(registry, "dockerconfigjson: registry").strip()
    server = re.sub(r"^https?://", "", server, flags=re.IGNORECASE).rstrip("/")
    if not server or not _REGISTRY_RE.match(server):
        raise AnsibleFilterError(f"dockerconfigjson: registry {registry!r} is not a registry host[:port]")
    user = _require_str(username, "dockerconfigjson: username")
    if ":" in user:
        raise AnsibleFilterError("dockerconfigjson: username must not contain ':' (HTTP basic auth)")
    secret = _require_str(password, "dockerconfigjson: password")
    entry = {
        "username": user,
        "password": secret,
        "auth": base64.b64encode(f"{user}:{secret}".encode()).decode("ascii"),
    }
    if email:
        entry["email"] = _require_str(email, "dockerconfigjson: email")
    return json.dumps({"auths": {server: entry}}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _string_data(data: Any, what: str) -> dict[str, str]:
    if not isinstance(data, Mapping):
        raise AnsibleFilterError(f"{what}: data must be a dict, got {type(data).__name__}")
    result = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise AnsibleFilterError(f"{what}: keys must be strings, got {key!r}")
        if value is None or isinstance(value, bool | Mapping | list):
            raise AnsibleFilterError(f"{what}: data[{key!r}] must be a string, got {type(value).__name__}")
        result[key] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return result


def sealed_secret(
    data: Mapping[str, str],
    cert_pem: str,
    namespace: str,
    name: str,
    scope: str = "strict",
    secret_type: str = "Opaque",  # noqa: S107 - a Secret type, not a password
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict:
    """A SealedSecret manifest (dict) that the controller unseals into a Secret holding ``data``."""
    values = _string_data(data, "sealed_secret")
    if scope not in SCOPES:
        raise AnsibleFilterError(f"sealed_secret: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    for what, mapping in (("labels", labels), ("annotations", annotations)):
        if mapping is not None and not isinstance(mapping, Mapping):
            raise AnsibleFilterError(f"sealed_secret: {what} must be a dict, got {type(mapping).__name__}")
    try:
        public_key = load_public_key(cert_pem)
        return sealed_secret_manifest(
            public_key,
            values,
            namespace=namespace or "",
            name=name,
            scope=scope,
            secret_type=secret_type,
            labels=labels,
            annotations=annotations,
        )
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"sealed_secret: {exc}") from exc


RESULT_MARKER = "MLSTACK_RESULT "
_IMAGE_VERSION = re.compile(r"^[^@]*:v?([0-9]+\.[0-9]+\.[0-9]+)(?:[-+._][A-Za-z0-9_.+-]*)?\Z")


def image_version(image: Any) -> str:
    """The MLflow release an image tag names (``reg/mlflow:3.18.0-mlstack.1`` -> ``3.18.0``), else ''.

    Digests and other tags name no release: callers treat '' as unknown.
    """
    if not isinstance(image, str):
        return ""
    match = _IMAGE_VERSION.match(image.strip())
    return match.group(1) if match else ""


def maintenance_result(log_lines: Any, default: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON result a maintenance Job printed (a line starting ``MLSTACK_RESULT ``), else ``default``.

    The last such line wins; lines that are not valid JSON are ignored, so a half-written log never
    fails the task that reads it (the task after it judges the result).
    """
    found: dict[str, Any] | None = None
    for line in log_lines or []:
        if isinstance(line, str) and line.startswith(RESULT_MARKER):
            try:
                value = json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                continue
            if isinstance(value, dict):
                found = value
    return found if found is not None else dict(default or {})


_NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


def _host_port(host: str, port: int | None) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return host if port is None else f"{host}:{port}"


def mlflow_service_hosts(service: Mapping[str, Any], nodes: list[Mapping[str, Any]] | None = None) -> list[str]:
    """Host headers of clients reaching ``service`` on its node port or load balancer address."""
    if not isinstance(service, Mapping):
        raise AnsibleFilterError("mlflow_service_hosts: the input must be a Service (a dict)")
    spec = service.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    ports = spec.get("ports") or []
    if kind not in ("NodePort", "LoadBalancer") or not ports:
        return []
    port = ports[0]
    hosts: set[str] = set()
    if kind == "NodePort" and port.get("nodePort"):
        for node in nodes or []:
            for address in (node.get("status") or {}).get("addresses") or []:
                if address.get("type") in _NODE_ADDRESS_TYPES and address.get("address"):
                    hosts.add(_host_port(address["address"], int(port["nodePort"])))
    if kind == "LoadBalancer":
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        for entry in ingress:
            address = entry.get("ip") or entry.get("hostname")
            if not address:
                continue
            hosts.add(_host_port(address, int(port["port"])))
            if int(port["port"]) == 80:
                hosts.add(_host_port(address, None))
    return sorted(hosts)


_ROUTE_CONDITIONS = ("Accepted", "ResolvedRefs")


def mlflow_route_problems(route: Mapping[str, Any]) -> list[str]:
    """What keeps an HTTPRoute from being served, per parent Gateway; empty when nothing does."""
    if not isinstance(route, Mapping):
        raise AnsibleFilterError("mlflow_route_problems: the input must be an HTTPRoute (a dict)")
    if not route:
        return ["the HTTPRoute does not exist"]
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return ["no parent Gateway has reported on the HTTPRoute yet"]
    problems = []
    for parent in parents:
        ref = parent.get("parentRef") or {}
        name = "/".join(str(part) for part in (ref.get("namespace"), ref.get("name"), ref.get("sectionName")) if part)
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        for kind in _ROUTE_CONDITIONS:
            condition = conditions.get(kind)
            if condition is None:
                problems.append(f"{name}: no {kind} condition yet")
            elif condition.get("status") != "True":
                why = f"({condition.get('reason', '')}) {condition.get('message', '')}"
                problems.append(f"{name}: {kind}={condition.get('status')} {why}".strip())
    return problems


# A non-negative Kubernetes quantity: a decimal number with a binary or decimal SI suffix or an exponent.
_QUANTITY_RE = re.compile(
    r"\+?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exponent>[-+]?[0-9]+))?\Z"
)
_QUANTITY_SUFFIXES = {
    "": Decimal(1),
    **{suffix: Decimal(1024) ** power for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
    **{
        suffix: Decimal(10) ** power
        for suffix, power in zip("numkMGTPE", (-9, -6, -3, 3, 6, 9, 12, 15, 18), strict=True)
    },
}
# A qualified name such as cpu, memory, ephemeral-storage, hugepages-2Mi or nvidia.com/gpu.
_RESOURCE_NAME_RE = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z"
)
_RESOURCE_KEYS = ("requests", "limits", "claims")


def _quantity(value: Any) -> Decimal | None:
    """The value of a Kubernetes quantity, or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    found = _QUANTITY_RE.match(str(value))
    if not found:
        return None
    try:
        number = Decimal(found["number"])
        if found["exponent"] is not None:
            return number.scaleb(int(found["exponent"]))
        return number * _QUANTITY_SUFFIXES[found["suffix"] or ""]
    except (InvalidOperation, OverflowError):
        return None


def mlflow_resource_problems(resources: Any, name: str) -> list[str]:
    """What the API server would refuse in a container's resources; empty when nothing."""
    if resources is None:
        return []
    if not isinstance(resources, Mapping):
        return [f"{name} must be a mapping with requests and limits, got {type(resources).__name__}"]
    problems = [
        f"{name}: unknown key {key!r} (only requests, limits and claims)"
        for key in resources
        if key not in _RESOURCE_KEYS
    ]
    values: dict[str, dict[str, Decimal]] = {}
    for kind in ("requests", "limits"):
        entries = resources.get(kind) or {}
        if not isinstance(entries, Mapping):
            problems.append(f"{name}: {kind} must be a mapping of resource names to quantities")
            continue
        values[kind] = {}
        for resource, value in entries.items():
            if not isinstance(resource, str) or not _RESOURCE_NAME_RE.match(resource):
                problems.append(
                    f"{name}: {kind} names {resource!r}, which is not a resource name such as cpu or memory"
                )
                continue
            amount = _quantity(value)
            if amount is None:
                problems.append(f"{name}: {kind}.{resource} {value!r} is not a Kubernetes quantity such as 500m or 1Gi")
            else:
                values[kind][resource] = amount
    claims = resources.get("claims")
    if claims is not None and (
        not isinstance(claims, list) or not all(isinstance(c, Mapping) and c.get("name") for c in claims)
    ):
        problems.append(f"{name}: claims must be a list of {{name: ...}} entries")
    for resource, requested in (values.get("requests") or {}).items():
        limit = (values.get("limits") or {}).get(resource)
        if limit is not None and requested > limit:
            problems.append(
                f"{name}: requests.{resource} {resources['requests'][resource]} is more than "
                f"limits.{resource} {resources['limits'][resource]}"
            )
    return problems


# <service>.<namespace>, optionally .svc and a cluster domain: the names cluster DNS answers for Services.
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_SERVICE_NAME = re.compile(rf"({_DNS_LABEL})\.({_DNS_LABEL})(?:\.svc(?:\.[a-z0-9.-]+)?)?\Z")


def mlflow_service_ref(host: Any) -> dict[str, str]:
    """``{name, namespace}`` of the Service a cluster DNS name such as ``db.postgres.svc.cluster.local``
    names; ``{}`` for an IP address or any other name."""
    if not isinstance(host, str):
        raise AnsibleFilterError("mlflow_service_ref: the host must be a string")
    host = host.rstrip(".").lower()
    match = _SERVICE_NAME.match(host)
    if not match:
        return {}
    return {"name": match.group(1), "namespace": match.group(2)}


def _ip_block(address: str) -> dict[str, Any]:
    version = ipaddress.ip_address(address).version
    return {"ipBlock": {"cidr": f"{address}/{32 if version == 4 else 128}"}}


def _tcp_ports(ports: Any) -> list[dict[str, Any]]:
    return [{"port": int(port), "protocol": "TCP"} for port in sorted({int(port) for port in ports})]


def mlflow_egress_rules(
    targets: Any, services: list[Mapping[str, Any]] | None = None, slices: list[Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """NetworkPolicy egress rules that admit exactly the services the pods connect to.

    ``targets``: ``[{host, port}]`` as the pods name them. ``services`` and ``slices``: the Services and
    EndpointSlices of the targets that are cluster Services. Policies act on the address after kube-proxy's
    DNAT, so a Service becomes its endpoints: pods as ``namespaceSelector`` (+ the Service's selector), other
    addresses (a Service without selector in front of an outside database) as ``/32`` blocks, on the
    endpoints' ports. An IP address is a ``/32`` block on its port. Any other name (outside the cluster, its
    addresses unknown to the policy) is its port on any address.
    """
    if not isinstance(targets, list):
        raise AnsibleFilterError("mlflow_egress_rules: targets must be a list of {host, port}")
    rules: list[dict[str, Any]] = []
    for target in targets:
        if not isinstance(target, Mapping) or "host" not in target or "port" not in target:
            raise AnsibleFilterError(f"mlflow_egress_rules: every target needs a host and a port (got {target!r})")
        host, port = str(target["host"]).strip("[]"), _validate_port(target["port"])
        try:
            rules.append({"to": [_ip_block(host)], "ports": _tcp_ports([port])})
            continue
        except ValueError:
            pass  # a name
        rule = _service_rule(mlflow_service_ref(host), port, services or [], slices or [])
        rules.append(rule or {"ports": _tcp_ports([port])})
    unique: list[dict[str, Any]] = []
    for rule in rules:
        if rule not in unique:
            unique.append(rule)
    return unique


def _service_rule(
    ref: Mapping[str, str], port: int, services: list[Mapping[str, Any]], slices: list[Mapping[str, Any]]
) -> dict[str, Any] | None:
    if not ref:
        return None
    service = next(
        (
            s
            for s in services
            if (s.get("metadata") or {}).get("name") == ref["name"]
            and (s.get("metadata") or {}).get("namespace") == ref["namespace"]
        ),
        None,
    )
    if service is None or (service.get("spec") or {}).get("type") == "ExternalName":
        return None
    spec = service.get("spec") or {}
    service_port = next((p for p in spec.get("ports") or [] if int(p.get("port", 0)) == port), None)
    if service_port is None:
        return None
    port_name = service_port.get("name") or ""
    peers: list[dict[str, Any]] = []
    ports: set[int] = set()
    pods = False
    for endpoint_slice in slices:
        meta = endpoint_slice.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("namespace") != ref["namespace"] or labels.get("kubernetes.io/service-name") != ref["name"]:
            continue
        for slice_port in endpoint_slice.get("ports") or []:
            if (slice_port.get("name") or "") == port_name and slice_port.get("port"):
                ports.add(int(slice_port["port"]))
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("targetRef") or {}).get("kind") == "Pod":
                pods = True
                continue
            for address in endpoint.get("addresses") or []:
                block = _ip_block(address)
                if block not in peers:
                    peers.append(block)
    if pods:
        peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ref["namespace"]}}}
        if spec.get("selector"):
            peer["podSelector"] = {"matchLabels": dict(sorted(spec["selector"].items()))}
        peers.insert(0, peer)
    target_port = service_port.get("targetPort")
    if not ports and isinstance(target_port, int):
        ports.add(target_port)
    if not peers or not ports:
        return None  # nothing behind the Service yet: its port, on any address
    return {"to": sorted(peers, key=repr), "ports": _tcp_ports(ports)}


def mlflow_object_refs(results: Any) -> list[dict[str, str]]:
    """``[{api_version, kind, name}]`` of the objects in a looped k8s_info's ``results`` (each with its
    ``item``: api_version and kind): what a delete loop needs, without the objects (a Secret's data) in it."""
    if not isinstance(results, list):
        raise AnsibleFilterError("mlflow_object_refs: the input must be the results list of a looped k8s_info")
    refs = []
    for result in results:
        item = result.get("item") or {}
        for resource in result.get("resources") or []:
            refs.append(
                {
                    "api_version": item.get("api_version", ""),
                    "kind": item.get("kind", ""),
                    "name": (resource.get("metadata") or {}).get("name", ""),
                }
            )
    return refs


def mlflow_secret_key_problems(
    results: Any, required: Mapping[str, Any], namespace: str, prefix: str = "secret/"
) -> list[str]:
    """Which of the ``required`` Secrets (name -> keys) the ``k8s_read`` ``results`` lack.

    Each Secret's result is under ``prefix`` + its name, as ``k8s_info`` would return it. Reads only the
    key names of what was found, never a value, so the problems can be printed.
    """
    problems = []
    for name, keys in required.items():
        resources = ((results or {}).get(f"{prefix}{name}") or {}).get("resources") or []
        if not resources:
            problems.append(f"{namespace}/{name} does not exist")
            continue
        found = set((resources[0].get("data") or {}).keys())
        missing = [key for key in keys if key not in found]
        if missing:
            problems.append(f"{namespace}/{name} lacks the key(s) {', '.join(missing)}")
    return problems


class FilterModule:
    """mlstack.mlflow filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "mlflow_db_uri": mlflow_db_uri,
            "dockerconfigjson": dockerconfigjson,
            "sealed_secret": sealed_secret,
            "maintenance_result": maintenance_result,
            "image_version": image_version,
            "mlflow_service_hosts": mlflow_service_hosts,
            "mlflow_route_problems": mlflow_route_problems,
            "mlflow_resource_problems": mlflow_resource_problems,
            "mlflow_service_ref": mlflow_service_ref,
            "mlflow_egress_rules": mlflow_egress_rules,
            "mlflow_object_refs": mlflow_object_refs,
            "mlflow_secret_key_problems": mlflow_secret_key_problems,
        }
