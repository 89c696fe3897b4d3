"""Volumes materialised as directories, and each container's mounts as :class:`~.rewrite.Mount` s.

Layout under the runner's state dir::

    pods/<ns>_<pod>/            one per pod name; wiped when a pod with a new UID takes the name
        uid                     the UID the directory belongs to
        volumes/<volume>/       configMap, secret, downwardAPI, projected, emptyDir contents
        home/  tmp/             the container HOME and TMPDIR (unless a volume is mounted on /tmp)
        <container>.log         stdout and stderr of every run of that container
    pvcs/<ns>/<claim>/          a persistentVolumeClaim: survives pod restarts and re-creation

configMap/secret/downwardAPI/projected contents are written when the pod starts and not refreshed
afterwards (kubelet refreshes them every minute or so; the stack never relies on that).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .envs import field_value, resource_value
from .expansion import expand, mapping_for
from .rewrite import Mount
from .sources import MissingReference, ObjectSource, configmap_data, secret_data

DEFAULT_MODE = 0o644
UNSUPPORTED = ("csi", "nfs", "iscsi", "ephemeral", "image", "cephfs", "rbd", "fc", "gitRepo")


class VolumeError(Exception):
    """A volume cannot be set up yet (missing source, unsupported type): the pod waits, like FailedMount."""


@dataclass(frozen=True)
class PodDirs:
    """The per-pod directories (see the module docstring)."""

    root: Path

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def log(self, container: str) -> Path:
        return self.root / f"{container}.log"

    def volume(self, name: str) -> Path:
        return self.volumes / name


def pod_dirs(state: Path, namespace: str, name: str) -> PodDirs:
    return PodDirs(state / "pods" / f"{namespace}_{name}")


def claim_dir(state: Path, namespace: str, claim: str) -> Path:
    return state / "pvcs" / namespace / claim


def prepare_pod_dirs(dirs: PodDirs, uid: str) -> None:
    """Create the pod's directories; a different UID under the same name starts from scratch."""
    marker = dirs.root / "uid"
    if dirs.root.exists() and (not marker.exists() or marker.read_text().strip() != uid):
        shutil.rmtree(dirs.root)
    for path in (dirs.root, dirs.volumes, dirs.home, dirs.tmp):
        path.mkdir(parents=True, exist_ok=True)
    marker.write_text(uid + "\n")


def remove_pod_dirs(dirs: PodDirs, uid: str) -> None:
    """Remove a deleted pod's directories (logs included, as kubelet does), unless a newer pod with
    the same name already owns them. Persistent volume claims live elsewhere and stay."""
    marker = dirs.root / "uid"
    try:
        owner = marker.read_text().strip()
    except OSError:
        return
    if owner == uid:
        shutil.rmtree(dirs.root, ignore_errors=True)


def _write_file(root: Path, relative: str, content: bytes, mode: int) -> None:
    """Write one projected file, refusing paths that escape the volume directory."""
    target = (root / relative).resolve()
    if root.resolve() not in target.parents:
        raise VolumeError(f"item path {relative!r} escapes the volume")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    os.chmod(target, mode)


def _project_keys(
    root: Path, data: Mapping[str, bytes], items: list[dict[str, Any]] | None, mode: int, what: str, optional: bool
) -> None:
    """Write all keys, or only ``items`` (key -> path, optional per-item mode)."""
    if not items:
        for key, value in data.items():
            _write_file(root, key, value, mode)
        return
    for item in items:
        key = item["key"]
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{what} references non-existent key {key}")
        _write_file(root, item.get("path") or key, data[key], item.get("mode") or mode)


def _configmap(root: Path, spec: Mapping[str, Any], namespace: str, source: ObjectSource, mode: int) -> None:
    name = spec.get("name", "")
    obj = source.get_configmap(namespace, name)
    if obj is None:
        if spec.get("optional"):
            return
        raise VolumeError(f'configmap "{name}" not found')
    _project_keys(root, configmap_data(obj), spec.get("items"), mode, f"configmap {name}", bool(spec.get("optional")))


def _secret(root: Path, spec: Mapping[str, Any], namespace: str, source: ObjectSource, mode: int) -> None:
    name = spec.get("secretName") or spec.get("name", "")
    obj = source.get_secret(namespace, name)
    if obj is None:
        if spec.get("optional"):
            return
        raise VolumeError(f'secret "{name}" not found')
    _project_keys(root, secret_data(obj), spec.get("items"), mode, f"secret {name}", bool(spec.get("optional")))


def _downward(root: Path, spec: Mapping[str, Any], pod: Mapping[str, Any], pod_ip: str, mode: int) -> None:
    for item in spec.get("items") or []:
        try:
            if "fieldRef" in item:
                value = field_value(pod, pod_ip, item["fieldRef"]["fieldPath"])
            else:
                ref = item.get("resourceFieldRef") or {}
                value = resource_value(pod, ref.get("containerName", ""), ref)
        except MissingReference as err:
            raise VolumeError(str(err)) from err
        _write_file(root, item["path"], value.encode(), item.get("mode") or mode)


def _token(root: Path, spec: Mapping[str, Any], pod: Mapping[str, Any], source: ObjectSource, mode: int) -> None:
    """A bound service-account token from the TokenRequest API (empty file if the API refuses)."""
    meta = pod.get("metadata") or {}
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    token = source.service_account_token(
        meta.get("namespace", ""),
        account,
        spec.get("audience"),
        int(spec.get("expirationSeconds") or 3607),
        meta.get("name", ""),
        meta.get("uid", ""),
    )
    _write_file(root, spec.get("path") or "token", (token or "").encode(), mode)


def _projected(root: Path, spec: Mapping[str, Any], pod: Mapping[str, Any], ctx: MaterialiseContext) -> None:
    mode = spec.get("defaultMode") or DEFAULT_MODE
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    for entry in spec.get("sources") or []:
        if "configMap" in entry:
            _configmap(root, entry["configMap"], namespace, ctx.source, mode)
        elif "secret" in entry:
            _secret(root, entry["secret"], namespace, ctx.source, mode)
        elif "downwardAPI" in entry:
            _downward(root, entry["downwardAPI"], pod, ctx.pod_ip, mode)
        elif "serviceAccountToken" in entry:
            _token(root, entry["serviceAccountToken"], pod, ctx.source, mode)
        # clusterTrustBundle / podCertificate sources are skipped: nothing here uses them.


@dataclass(frozen=True)
class MaterialiseContext:
    """What materialising a pod's volumes needs besides the pod itself."""

    state: Path
    source: ObjectSource
    pod_ip: str


def materialise(pod: Mapping[str, Any], dirs: PodDirs, ctx: MaterialiseContext) -> dict[str, Path]:
    """Create every volume of ``pod``; return volume name -> the directory standing in for it.

    Raises :class:`VolumeError` when a non-optional source is missing or the type is unsupported.
    """
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    result: dict[str, Path] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        result[volume["name"]] = _materialise_one(volume, pod, namespace, dirs, ctx)
    return result


def _fresh(path: Path) -> Path:
    """An empty directory at ``path`` (projected contents are rewritten from scratch at pod start)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _materialise_one(
    volume: Mapping[str, Any], pod: Mapping[str, Any], namespace: str, dirs: PodDirs, ctx: MaterialiseContext
) -> Path:
    name = volume["name"]
    target = dirs.volume(name)
    if "emptyDir" in volume:
        target.mkdir(parents=True, exist_ok=True)  # kept across container restarts of the same pod
        return target
    if "configMap" in volume:
        spec = volume["configMap"]
        _configmap(_fresh(target), spec, namespace, ctx.source, spec.get("defaultMode") or DEFAULT_MODE)
        return target
    if "secret" in volume:
        spec = volume["secret"]
        _secret(_fresh(target), spec, namespace, ctx.source, spec.get("defaultMode") or DEFAULT_MODE)
        return target
    if "downwardAPI" in volume:
        spec = volume["downwardAPI"]
        _downward(_fresh(target), spec, pod, ctx.pod_ip, spec.get("defaultMode") or DEFAULT_MODE)
        return target
    if "projected" in volume:
        _projected(_fresh(target), volume["projected"], pod, ctx)
        return target
    if "persistentVolumeClaim" in volume:
        return _link(target, claim_dir(ctx.state, namespace, volume["persistentVolumeClaim"]["claimName"]))
    if "hostPath" in volume:
        return _host_path(volume["hostPath"])
    kinds = sorted(set(volume) - {"name"})
    raise VolumeError(f"volume {name}: type {', '.join(kinds) or '?'} is not supported by the pod runner")


def _link(link: Path, real: Path) -> Path:
    """Point ``link`` at the persistent directory ``real`` (created on first use)."""
    real.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real, target_is_directory=True)
    return real


def _host_path(spec: Mapping[str, Any]) -> Path:
    """A hostPath volume is the host's own path here (which is what it means on a real node too)."""
    path = Path(spec["path"])
    kind = spec.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif kind and not path.exists():
        raise VolumeError(f"hostPath {path} does not exist (type {kind})")
    return path


def container_mounts(
    container: Mapping[str, Any], volume_dirs: Mapping[str, Path], env: Mapping[str, str]
) -> list[Mount]:
    """The container's ``volumeMounts`` as host directories, with ``subPath``/``subPathExpr`` applied."""
    mounts: list[Mount] = []
    for entry in container.get("volumeMounts") or []:
        base = volume_dirs.get(entry["name"])
        if base is None:
            raise VolumeError(f"volumeMount {entry['name']} refers to no volume")
        sub = entry.get("subPath") or ""
        if entry.get("subPathExpr"):
            sub = expand(entry["subPathExpr"], mapping_for(env))
        host = base
        if sub:
            host = (base / sub).resolve()
            if base.resolve() != host and base.resolve() not in host.parents:
                raise VolumeError(f"subPath {sub!r} escapes volume {entry['name']}")
            if not host.exists():
                host.mkdir(parents=True)  # kubelet creates a missing subPath as a directory
        mounts.append(Mount(entry["mountPath"], host, bool(entry.get("readOnly"))))
    return mounts
