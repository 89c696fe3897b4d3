"""A container's environment, resolved the way kubelet does (makeEnvironmentVariables).

Order and precedence follow kubelet: ``envFrom`` sources in order, then ``env`` entries (literal
values are ``$(VAR)``-expanded against what came before and the service variables), then the service
link variables for names not yet set. The process starts from a minimal base (PATH, HOME, LANG,
HOSTNAME, TMPDIR) instead of the runner's own environment, so a pod never inherits the stack's secrets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from .expansion import expand, mapping_for
from .sources import MissingReference, ObjectSource, configmap_data, secret_data

# What the runner's Node advertises; a resourceFieldRef to an unset limit reports these, as kubelet does.
NODE_ALLOCATABLE = {"cpu": "2", "memory": "8Gi", "pods": "50", "ephemeral-storage": "20Gi"}
_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Mapping[str, Any], pod_ip: str, path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath`` for ``pod``."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    match = _LABEL_REF.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{key}="{value}"' for key, value in sorted(values.items()))
    raise MissingReference(f"unsupported fieldPath {path!r}")


def resource_value(pod: Mapping[str, Any], container_name: str, ref: Mapping[str, Any]) -> str:
    """The value of a ``resourceFieldRef``: limit or request divided by ``divisor``, rounded up."""
    containers = (pod.get("spec") or {}).get("containers") or []
    container = next((c for c in containers if c.get("name") == (ref.get("containerName") or container_name)), {})
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    resources = (container.get("resources") or {}).get(kind) or {}
    raw = resources.get(resource)
    if raw is None:
        raw = NODE_ALLOCATABLE.get(resource, "0") if kind == "limits" else "0"
    divisor: Decimal = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = Decimal(1)
    return str(math.ceil(parse_quantity(raw) / divisor))


def _resolve_key(kind: str, obj: dict[str, Any] | None, ref: Mapping[str, Any], namespace: str) -> str | None:
    """A value from a configMapKeyRef / secretKeyRef; None when optional and missing."""
    optional = bool(ref.get("optional"))
    name, key = ref.get("name", ""), ref.get("key", "")
    if obj is None:
        if optional:
            return None
        raise MissingReference(f'{kind} "{name}" not found in namespace "{namespace}"')
    data = secret_data(obj) if kind == "secret" else configmap_data(obj)
    if key not in data:
        if optional:
            return None
        raise MissingReference(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key].decode(errors="replace")


def _env_from(container: Mapping[str, Any], namespace: str, source: ObjectSource) -> dict[str, tuple[str, bool]]:
    """``envFrom`` variables as name -> (value, is_secret)."""
    out: dict[str, tuple[str, bool]] = {}
    for entry in container.get("envFrom") or []:
        prefix = entry.get("prefix") or ""
        for kind, field in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = entry.get(field)
            if ref is None:
                continue
            name = ref.get("name", "")
            obj = source.get_secret(namespace, name) if kind == "secret" else source.get_configmap(namespace, name)
            if obj is None:
                if ref.get("optional"):
                    continue
                raise MissingReference(f'{kind} "{name}" not found in namespace "{namespace}"')
            data = secret_data(obj) if kind == "secret" else configmap_data(obj)
            for key, value in data.items():
                if "=" in key or not key:
                    continue  # kubelet skips keys that are not valid variable names
                out[prefix + key] = (value.decode(errors="replace"), kind == "secret")
    return out


def service_env(services: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Docker-links style variables (``FOO_SERVICE_HOST`` ...) for ``services``, as kubelet injects them.

    Each service dict carries ``metadata.name``, ``spec.clusterIP`` (the address to advertise) and
    ``spec.ports``. Later services win on a clash, so pass the ``kubernetes`` master service last.
    """
    env: dict[str, str] = {}
    for service in services:
        spec = service.get("spec") or {}
        host = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not host or host == "None" or not ports:
            continue
        prefix = str((service.get("metadata") or {}).get("name", "")).upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = host
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        first = ports[0]
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{host}:{first['port']}"
        for port in ports:
            proto = port.get("protocol", "TCP")
            base = f"{prefix}_PORT_{port['port']}_{proto.upper()}"
            env[base] = f"{proto.lower()}://{host}:{port['port']}"
            env[base + "_PROTO"] = proto.lower()
            env[base + "_PORT"] = str(port["port"])
            env[base + "_ADDR"] = host
    return env


def resolve_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    source: ObjectSource,
    pod_ip: str,
    services: Mapping[str, str],
) -> tuple[dict[str, str], set[str]]:
    """The container's variables from the pod spec, and the names whose value came from a Secret.

    Raises :class:`MissingReference` when a non-optional reference is missing (kubelet reports
    ``CreateContainerConfigError`` and retries).
    """
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    env: dict[str, str] = {}
    secret_names: set[str] = set()
    for name, (value, is_secret) in _env_from(container, namespace, source).items():
        env[name] = value
        if is_secret:
            secret_names.add(name)
    for entry in container.get("env") or []:
        name = entry["name"]
        value = _resolve_entry(pod, container, entry, source, pod_ip, mapping_for(env, services))
        if value is None:
            continue
        env[name] = value
        if "secretKeyRef" in (entry.get("valueFrom") or {}):
            secret_names.add(name)
        else:
            secret_names.discard(name)
    for name, value in services.items():
        env.setdefault(name, value)
    return env, secret_names


def _resolve_entry(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    entry: Mapping[str, Any],
    source: ObjectSource,
    pod_ip: str,
    mapping: Any,
) -> str | None:
    """One ``env`` entry's value (None: optional reference that is missing)."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    value = entry.get("value")
    if value:
        return expand(value, mapping)
    value_from = entry.get("valueFrom")
    if not value_from:
        return ""
    if "fieldRef" in value_from:
        return field_value(pod, pod_ip, value_from["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in value_from:
        return resource_value(pod, container.get("name", ""), value_from["resourceFieldRef"])
    if "configMapKeyRef" in value_from:
        ref = value_from["configMapKeyRef"]
        return _resolve_key("configmap", source.get_configmap(namespace, ref.get("name", "")), ref, namespace)
    if "secretKeyRef" in value_from:
        ref = value_from["secretKeyRef"]
        return _resolve_key("secret", source.get_secret(namespace, ref.get("name", "")), ref, namespace)
    raise MissingReference(f"unsupported valueFrom {sorted(value_from)} for {entry['name']}")


def expand_command(container: Mapping[str, Any], env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """``command`` and ``args`` with ``$(VAR)`` expanded against the final environment."""
    mapping = mapping_for(env)
    command = [expand(part, mapping) for part in container.get("command") or []]
    args = [expand(part, mapping) for part in container.get("args") or []]
    return command, args
