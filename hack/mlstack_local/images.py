"""Container images of the local node, built with buildah without a registry pull, cached, pushed.

Nothing can be pulled from docker.io here, so every image starts from a Debian trixie root filesystem
made with ``debootstrap`` (the ``base``). On it: ``tools`` (shells, curl, Python for test pods and
helper Jobs, from images/tools/Containerfile) and one MLflow server image per pinned requirements file
(images/mlflow/Containerfile with ``BASE_IMAGE`` swapped). ``pause`` is a static binary in an empty
image (images/pause/pause.c).

Each image is kept as an OCI archive under ``~/.cache/mlstack/images/<name>-<key>.oci.tar``, where the
key is a hash of what defines the image (the debootstrap command line, the Containerfile, the
requirements file, the base it is built on), so a second run builds nothing and a fresh clone only
pushes. ``prepare`` builds what is missing; ``start`` pushes the MLflow images to the stack's registry
with the robot credentials (an auth file, never argv); the node imports pause and tools into its
containerd with ``import_into_containerd``.

buildah keeps its storage under ``~/.cache/mlstack/buildah/root`` (run root in the state dir). buildah
and skopeo also write a blob-info cache to /var/lib/containers/cache when run as root, whatever their
storage flags say; they run in a private mount namespace where /var/lib is read-only (they then keep
that cache in memory), and any mount they make ends with the namespace, so nothing stays mounted.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .base import Context
from .config import BIND, PORTS, REPO_ROOT, Paths
from .proc import StackError, run_logged, say
from .registry import PROJECT

NAME = "images"
IMAGES_SRC = REPO_ROOT / "images"
LOCAL_PREFIX = "localhost/mlstack"
# Bump when how an image is assembled changes (not what it contains): every key changes.
RECIPE = "1"

BASE_SUITE = "trixie"
BASE_VARIANT = "minbase"
# python-is-python3: the MLflow Containerfile runs `python -m venv`, as in the python:3.13-slim image.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_CONFIG = (
    "--env",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--env",
    "LANG=C.UTF-8",
    "--cmd",
    '["/bin/bash"]',
    "--label",
    "org.opencontainers.image.title=mlstack-base",
)
# debootstrap copies these from the host; an image carries none (the runtime provides them).
BASE_EXCLUDES = (
    "./dev/*",
    "./proc/*",
    "./sys/*",
    "./etc/resolv.conf",
    "./etc/hostname",
    "./var/cache/apt/archives/*.deb",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))

PAUSE_VERSION = "3.10"
PAUSE_CFLAGS = ("-static", "-O2", "-s")
# As registry.k8s.io/pause: the sandbox process runs as nobody.
PAUSE_CONFIG = (
    "--entrypoint",
    '["/pause"]',
    "--user",
    "65535:65535",
    "--label",
    "org.opencontainers.image.title=pause",
)
PAUSE_IMAGE = f"{LOCAL_PREFIX}/pause:{PAUSE_VERSION}"

# One image per pinned requirements file (images/mlflow/requirements-<version>.txt). The first is the
# collection's default mlflow_image; the second is the one before it, for the upgrade tests.
MLFLOW_VERSIONS = ("3.18.0", "3.17.2")
MLFLOW_REVISION = "mlstack.1"
MLFLOW_REPOSITORY = "mlflow"

STORAGE_DRIVER = "overlay"
# Where buildah/skopeo would write /var/lib/containers/cache: read-only for them (see the module doc).
PRIVATE_RO_VAR_LIB = 'mount --rbind /var/lib /var/lib && mount -o remount,bind,ro /var/lib && exec "$@"'
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
PIP_CA_SECRET = "pip-ca"  # noqa: S105 - the id of a build secret, not a secret
TOOLS = {
    "buildah": "buildah",
    "skopeo": "skopeo",
    "debootstrap": "debootstrap",
    "gcc": "gcc",
    "unshare": "util-linux",
    "tar": "tar",
}


# --- what each image is: names, tags and cache keys (pure, unit-tested) -----------------------------


@dataclass(frozen=True)
class Image:
    """One image: ``name`` names its archive, ``ref`` is the tag it carries, ``key`` its content hash."""

    name: str
    ref: str
    key: str

    def archive_in(self, directory: Path) -> Path:
        return directory / f"{self.name}-{self.key}.oci.tar"

    def archive(self, paths: Paths) -> Path:
        return self.archive_in(archive_dir(paths))


@dataclass(frozen=True)
class ImageSet:
    base: Image
    pause: Image
    tools: Image
    mlflow: dict[str, Image]  # by MLflow version, in MLFLOW_VERSIONS order

    def all(self) -> list[Image]:
        return [self.base, self.pause, self.tools, *self.mlflow.values()]


def content_key(*parts: str | bytes) -> str:
    """12 hex digits of a sha256 over ``parts`` (length-prefixed, so parts never run into each other)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(f"{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()[:12]


def debootstrap_argv(
    rootfs: Path | str, mirror: str, suite: str = BASE_SUITE, packages: Sequence[str] = BASE_PACKAGES
) -> list[str]:
    return ["debootstrap", f"--variant={BASE_VARIANT}", f"--include={','.join(packages)}", suite, str(rootfs), mirror]


def base_key(suite: str = BASE_SUITE, packages: Sequence[str] = BASE_PACKAGES) -> str:
    # The mirror and the target directory are where, not what: they are left out of the key.
    argv = debootstrap_argv("ROOTFS", "MIRROR", suite, packages)
    return content_key("base", RECIPE, *argv, *BASE_EXCLUDES, *BASE_CONFIG)


def base_ref(key: str, suite: str = BASE_SUITE) -> str:
    return f"{LOCAL_PREFIX}/base:{suite}-{key}"


def pause_key(source: bytes) -> str:
    return content_key("pause", RECIPE, PAUSE_VERSION, source, *PAUSE_CFLAGS, *PAUSE_CONFIG)


def tools_key(containerfile: bytes, base: str) -> str:
    return content_key("tools", RECIPE, containerfile, base)


def tools_ref(key: str) -> str:
    return f"{LOCAL_PREFIX}/tools:{key}"


def mlflow_key(version: str, containerfile: bytes, requirements: bytes, base: str) -> str:
    return content_key("mlflow", RECIPE, version, MLFLOW_REVISION, containerfile, requirements, base)


def registry_host() -> str:
    """The stack registry's host:port, as registry.py serves it and the collection's mlflow_image names it."""
    return f"{BIND}:{PORTS['registry']}"


def mlflow_tag(version: str) -> str:
    return f"{version}-{MLFLOW_REVISION}"


def mlflow_ref(version: str, host: str | None = None, project: str = PROJECT) -> str:
    """``<registry host>/<project>/mlflow:<version>-mlstack.1``, exactly as mlflow_image names it."""
    return f"{host or registry_host()}/{project}/{MLFLOW_REPOSITORY}:{mlflow_tag(version)}"


def mlflow_env_key(version: str) -> str:
    major, minor = version.split(".")[:2]
    return f"MLFLOW_IMAGE_{major}_{minor}"


def requirements_name(version: str) -> str:
    """The requirements file the Containerfile COPYs for ``MLFLOW_VERSION=version``."""
    return f"requirements-{version}.txt"


def image_specs(src: Path = IMAGES_SRC, versions: Sequence[str] = MLFLOW_VERSIONS) -> ImageSet:
    """Every image with its tag and key, from the recipes under ``src`` (reads files, builds nothing)."""
    bkey = base_key()
    base = Image("base", base_ref(bkey), bkey)
    pkey = pause_key((src / "pause" / "pause.c").read_bytes())
    pause = Image("pause", PAUSE_IMAGE, pkey)
    tkey = tools_key((src / "tools" / "Containerfile").read_bytes(), base.ref)
    tools = Image("tools", tools_ref(tkey), tkey)
    containerfile = (src / "mlflow" / "Containerfile").read_bytes()
    mlflow = {}
    for version in versions:
        requirements = src / "mlflow" / requirements_name(version)
        if not requirements.is_file():
            raise StackError(f"{requirements} is missing: every MLflow image is built from its own pinned file")
        key = mlflow_key(version, containerfile, requirements.read_bytes(), base.ref)
        mlflow[version] = Image(f"mlflow-{version}", mlflow_ref(version), key)
    return ImageSet(base=base, pause=pause, tools=tools, mlflow=mlflow)


# --- paths and command lines (pure, unit-tested) -----------------------------------------------------


def archive_dir(paths: Paths) -> Path:
    return paths.cache / "images"


def work_dir(paths: Paths) -> Path:
    return archive_dir(paths) / "work"


def tmp_dir(paths: Paths) -> Path:
    """TMPDIR of buildah and skopeo (they unpack archives and stage layers there, else in /var/tmp)."""
    return archive_dir(paths) / "tmp"


def buildah_root(paths: Paths) -> Path:
    return paths.cache / "buildah" / "root"


def buildah_runroot(paths: Paths) -> Path:
    return paths.state / "buildah-run"


def contained(argv: Sequence[str]) -> list[str]:
    """``argv`` in a private mount namespace with /var/lib read-only (see the module docstring)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", PRIVATE_RO_VAR_LIB, "mlstack-images", *argv]


def buildah_argv(paths: Paths, *args: str) -> list[str]:
    """buildah on our own storage, always: never /var/lib/containers."""
    return contained(
        [
            "buildah",
            "--root",
            str(buildah_root(paths)),
            "--runroot",
            str(buildah_runroot(paths)),
            "--storage-driver",
            STORAGE_DRIVER,
            *args,
        ]
    )


def tool_env(paths: Paths) -> dict[str, str]:
    return {"TMPDIR": str(tmp_dir(paths))}


def tar_rootfs_argv(rootfs: Path, tarball: Path) -> list[str]:
    # buildah copy would chown everything to root; buildah add of a tarball keeps owners and modes.
    excludes = [f"--exclude={pattern}" for pattern in BASE_EXCLUDES]
    options = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--one-file-system", *excludes]
    return ["tar", *options, "-C", str(rootfs), "-cf", str(tarball), "."]


def pause_gcc_argv(source: Path, output: Path) -> list[str]:
    return ["gcc", *PAUSE_CFLAGS, "-o", str(output), str(source)]


def bud_args(
    containerfile: Path,
    context_dir: Path,
    ref: str,
    build_args: Mapping[str, str],
    secrets: Mapping[str, Path] | None = None,
) -> list[str]:
    """Arguments of ``buildah bud``: host network (the Debian mirror, PyPI), never a registry pull."""
    args = ["bud", "--network", "host", "--pull=never", "--layers=false", "--format", "oci"]
    for name, value in build_args.items():
        args += ["--build-arg", f"{name}={value}"]
    for secret_id, source in (secrets or {}).items():
        args += ["--secret", f"id={secret_id},src={source}"]
    return [*args, "-f", str(containerfile), "-t", ref, str(context_dir)]


def export_args(ref: str, archive: Path) -> list[str]:
    return ["push", "--quiet", ref, f"oci-archive:{archive}:{ref}"]


def push_argv(archive: Path, destination: str, authfile: Path) -> list[str]:
    """skopeo copy of a cached archive: its compressed layers go up as they are (fast, same digest)."""
    return contained(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-authfile",
            str(authfile),
            f"oci-archive:{archive}",
            f"docker://{destination}",
        ]
    )


def ctr_import_argv(
    address: str, archive: Path, namespace: str = "k8s.io", snapshotter: str = "overlayfs"
) -> list[str]:
    # ctr takes OCI archives and keeps the org.opencontainers.image.ref.name annotation as the image name.
    return [
        "ctr",
        "--address",
        address,
        "-n",
        namespace,
        "images",
        "import",
        f"--snapshotter={snapshotter}",
        str(archive),
    ]


def auth_config(host: str, user: str, password: str) -> str:
    """A containers-auth.json(5) with one registry's credentials."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": token}}})


def manifest_url(registry_url: str, project: str, repository: str, tag: str) -> str:
    return f"{registry_url.rstrip('/')}/v2/{project}/{repository}/manifests/{tag}"


def manifest_headers(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Accept": ", ".join(MANIFEST_TYPES)}


def apt_mirror(sources: str) -> str | None:
    """The first Debian (not security) mirror of apt sources, deb822 or one-line style."""
    uris: list[str] = []
    for stanza in re.split(r"\n\s*\n", sources):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, flags=re.MULTILINE))
        if "URIs" in fields and "deb" in fields.get("Types", "deb").split():
            if not any(s.endswith("-security") for s in fields.get("Suites", "").split()):
                uris += fields["URIs"].split()
    for line in sources.splitlines():
        match = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
        if match and not match.group(2).endswith("-security"):
            uris.append(match.group(1))
    usable = [uri.rstrip("/") for uri in uris if uri.startswith(("http://", "https://"))]
    preferred = [uri for uri in usable if uri.endswith("/debian")]
    return (preferred or usable or [None])[0]


def pip_ca_bundle(environ: Mapping[str, str], pip_configs: Iterable[str]) -> Path | None:
    """The CA bundle host pip trusts, if set anywhere (PIP_CERT, pip.conf `cert`, REQUESTS_CA_BUNDLE)."""
    candidates = [environ.get("PIP_CERT", "")]
    for text in pip_configs:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(text)
        except configparser.Error:
            continue
        for section in ("install", "download", "global"):
            candidates.append(parser.get(section, "cert", fallback=""))
    candidates += [environ.get("REQUESTS_CA_BUNDLE", ""), environ.get("SSL_CERT_FILE", "")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    home = Path(environ.get("HOME", "/root"))
    files = [
        Path("/etc/pip.conf"),
        Path("/etc/xdg/pip/pip.conf"),
        home / ".pip/pip.conf",
        home / ".config/pip/pip.conf",
    ]
    if environ.get("PIP_CONFIG_FILE"):
        files.append(Path(environ["PIP_CONFIG_FILE"]))
    return files


def mounts_below(mountinfo: str, root: Path) -> list[Path]:
    """Mount points at or below ``root`` in /proc/self/mountinfo text, deepest first."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = Path(fields[4].replace("\\040", " "))
        if point == root or root in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def stale_archives(directory: Path, image: Image) -> list[Path]:
    """Archives of ``image`` under other keys (an older recipe)."""
    pattern = re.compile(re.escape(image.name) + r"-[0-9a-f]{12}\.oci\.tar$")
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name) and p != image.archive_in(directory))


def archive_manifest(archive: Path) -> tuple[str, str]:
    """(ref name, manifest digest) recorded in an OCI archive's index.json."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise StackError(f"{archive} has no index.json; delete it to rebuild")
        index = json.load(member)
    manifest = index["manifests"][0]
    return manifest.get("annotations", {}).get("org.opencontainers.image.ref.name", ""), manifest["digest"]


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


# --- building (buildah, debootstrap, gcc) ----------------------------------------------------------


def _ensure_dirs(paths: Paths) -> None:
    for directory in (archive_dir(paths), tmp_dir(paths), work_dir(paths), buildah_root(paths), buildah_runroot(paths)):
        directory.mkdir(parents=True, exist_ok=True)


def _buildah(paths: Paths, *args: str, what: str) -> None:
    run_logged(paths, NAME, buildah_argv(paths, *args), env=tool_env(paths), what=what)


def _buildah_quiet(paths: Paths, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argv is built by us
        buildah_argv(paths, *args), capture_output=True, text=True, env={**os.environ, **tool_env(paths)}
    )


def in_storage(paths: Paths, ref: str) -> bool:
    return _buildah_quiet(paths, "inspect", "--type", "image", ref).returncode == 0


def _clear_work(work: Path) -> None:
    """Remove a build's scratch directory, but never through something still mounted in it."""
    mounted = mounts_below(Path("/proc/self/mountinfo").read_text(), work)
    if mounted:
        raise StackError(f"{mounted[0]} is still mounted; unmount it (umount {mounted[0]}) and retry: make up")
    if work.exists():
        shutil.rmtree(work)


def _commit_scratch(paths: Paths, image: Image, steps: Sequence[Sequence[str]], config: Sequence[str]) -> None:
    """``buildah from scratch``, ``steps`` (e.g. ("add", SRC, DEST)), ``config``, commit; the container is removed."""
    container = f"mlstack-build-{image.name}"
    _buildah_quiet(paths, "rm", container)  # left over from an interrupted run
    _buildah(paths, "from", "--name", container, "scratch", what=f"buildah from scratch ({image.name})")
    try:
        for command, *args in steps:
            _buildah(paths, command, container, *args, what=f"buildah {command} ({image.name})")
        _buildah(paths, "config", *config, container, what=f"buildah config ({image.name})")
        _buildah(paths, "commit", "--quiet", container, image.ref, what=f"buildah commit {image.ref}")
    finally:
        _buildah_quiet(paths, "rm", container)


def build_base(paths: Paths, image: Image, mirror: str) -> None:
    work = work_dir(paths) / image.name
    _clear_work(work)
    work.mkdir(parents=True)
    rootfs, tarball = work / "rootfs", work / "rootfs.tar"
    say(f"    debootstrap {BASE_SUITE} ({', '.join(BASE_PACKAGES)}) from {mirror}")
    try:
        # A private mount namespace: whatever debootstrap mounts in the target (proc, sys) ends with it.
        run_logged(
            paths,
            NAME,
            ["unshare", "--mount", "--propagation", "private", *debootstrap_argv(rootfs, mirror)],
            what=f"debootstrap {BASE_SUITE}",
        )
        python = rootfs / "usr" / "bin" / "python"
        if not python.is_symlink() and not python.exists():
            python.symlink_to("python3")
        run_logged(paths, NAME, tar_rootfs_argv(rootfs, tarball), what="tar the base root filesystem")
        _commit_scratch(paths, image, [("add", str(tarball), "/")], BASE_CONFIG)
    finally:
        _clear_work(work)


def build_pause(paths: Paths, image: Image, source: Path) -> None:
    work = work_dir(paths) / image.name
    _clear_work(work)
    work.mkdir(parents=True)
    try:
        binary = work / "pause"
        run_logged(paths, NAME, pause_gcc_argv(source, binary), what="gcc -static pause.c")
        _commit_scratch(paths, image, [("copy", str(binary), "/pause")], PAUSE_CONFIG)
    finally:
        _clear_work(work)


def build_containerfile(
    paths: Paths,
    image: Image,
    context_dir: Path,
    build_args: Mapping[str, str],
    secrets: Mapping[str, Path] | None = None,
) -> None:
    args = bud_args(context_dir / "Containerfile", context_dir, image.ref, build_args, secrets)
    _buildah(paths, *args, what=f"buildah bud {image.ref}")


def export_archive(paths: Paths, image: Image) -> Path:
    """Write the stored image to its cache archive (atomically: a partial archive is never taken as cached)."""
    archive = image.archive(paths)
    incomplete = archive.with_name(archive.name + ".partial")
    incomplete.unlink(missing_ok=True)
    _buildah(paths, *export_args(image.ref, incomplete), what=f"export {image.ref} to {archive.name}")
    os.replace(incomplete, archive)
    return archive


def load_archive(paths: Paths, image: Image) -> None:
    """Put a cached image back into buildah's storage (to build on it), when it is not there."""
    if not in_storage(paths, image.ref):
        _buildah(paths, "pull", "--quiet", f"oci-archive:{image.archive(paths)}", what=f"load {image.ref}")


def forget_stale(paths: Paths, image: Image) -> None:
    """Delete archives of older keys of ``image``, and their images in buildah's storage."""
    stale = stale_archives(archive_dir(paths), image)
    for archive in stale:
        try:
            ref, _ = archive_manifest(archive)
        except (OSError, tarfile.TarError, KeyError, ValueError, StackError):
            ref = ""
        archive.unlink(missing_ok=True)
        if ref and ref != image.ref:
            _buildah_quiet(paths, "rmi", ref)
    if stale:
        _buildah_quiet(paths, "rmi", "--prune")  # images a new build untagged (same tag, new content)


def host_mirror() -> str:
    for path in APT_SOURCES:
        try:
            mirror = apt_mirror(path.read_text())
        except OSError:
            continue
        if mirror:
            return mirror
    return DEFAULT_MIRROR


def host_pip_ca() -> Path | None:
    texts = []
    for path in pip_config_files(os.environ):
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    return pip_ca_bundle(os.environ, texts)


def check_tools() -> None:
    missing = sorted({package for tool, package in TOOLS.items() if not shutil.which(tool)})
    if missing:
        packages = " ".join([*missing, "libc6-dev"])
        raise StackError(f"missing tools to build the node images; install them with: apt-get install -y {packages}")


def build_images(paths: Paths, images: ImageSet, *, src: Path = IMAGES_SRC) -> dict[str, float]:
    """Build and archive every image whose archive is missing; returns seconds per image built."""
    _ensure_dirs(paths)
    took: dict[str, float] = {}
    pip_ca = host_pip_ca()

    def ensure(image: Image, build: Callable[[], None], needs_base: bool) -> None:
        archive = image.archive(paths)
        if archive.is_file():
            say(f"    {image.ref}: cached ({archive.name})")
            return
        if needs_base:
            load_archive(paths, images.base)
        say(f"    building {image.ref} (cached afterwards)")
        start = time.monotonic()
        build()
        export_archive(paths, image)
        took[image.name] = time.monotonic() - start
        say(f"    built {image.ref} in {took[image.name]:.0f}s ({human_size(archive.stat().st_size)} archive)")
        forget_stale(paths, image)

    ensure(images.base, lambda: build_base(paths, images.base, host_mirror()), False)
    ensure(images.pause, lambda: build_pause(paths, images.pause, src / "pause" / "pause.c"), False)
    ensure(
        images.tools,
        lambda: build_containerfile(paths, images.tools, src / "tools", {"BASE_IMAGE": images.base.ref}),
        True,
    )
    for version, image in images.mlflow.items():
        build_args = {"BASE_IMAGE": images.base.ref, "MLFLOW_VERSION": version, "IMAGE_REVISION": MLFLOW_REVISION}
        secrets = {PIP_CA_SECRET: pip_ca} if pip_ca else None
        ensure(image, partial(build_containerfile, paths, image, src / "mlflow", build_args, secrets), True)
    return took


# --- the registry (publishing) and the node (containerd) ---------------------------------------------


@dataclass(frozen=True)
class RegistryAccess:
    url: str
    host: str
    project: str
    user: str
    password: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RegistryAccess | None:
        """From the registry component's environment (registry.py env()), or None when it is not up."""
        try:
            host = env["REGISTRY_HOST"]
            return cls(
                url=env.get("REGISTRY_URL", f"http://{host}"),
                host=host,
                project=env["REGISTRY_PROJECT"],
                user=env["REGISTRY_USER"],
                password=env["REGISTRY_PASSWORD"],
            )
        except KeyError:
            return None

    def manifest_url(self, version: str) -> str:
        return manifest_url(self.url, self.project, MLFLOW_REPOSITORY, mlflow_tag(version))


def registry_digest(url: str, headers: Mapping[str, str]) -> str | None:
    """The digest the registry serves for a manifest URL (HEAD), or None if absent or unreachable."""
    request = urllib.request.Request(url, headers=dict(headers), method="HEAD")  # noqa: S310 - local URLs only
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.headers.get("Docker-Content-Digest")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def pushed(access: RegistryAccess, version: str, archive: Path) -> bool:
    """The registry serves the archive's very manifest under the version's tag."""
    headers = manifest_headers(access.user, access.password)
    digest = registry_digest(access.manifest_url(version), headers)
    return digest is not None and digest == archive_manifest(archive)[1]


def write_private(path: Path, content: str) -> None:
    """Create ``path`` readable by us only (0600 from the start, never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def push_mlflow(paths: Paths, images: ImageSet, access: RegistryAccess) -> dict[str, float]:
    """Push every MLflow archive the registry does not serve yet; credentials go in a 0600 auth file."""
    took: dict[str, float] = {}
    authfile = paths.component_dir(NAME) / f"auth-{os.getpid()}.json"
    write_private(authfile, auth_config(access.host, access.user, access.password))
    try:
        for version, image in images.mlflow.items():
            archive = image.archive(paths)
            destination = mlflow_ref(version, access.host, access.project)
            if pushed(access, version, archive):
                say(f"    {destination}: already in the registry")
                continue
            start = time.monotonic()
            run_logged(
                paths, NAME, push_argv(archive, destination, authfile), env=tool_env(paths), what=f"push {destination}"
            )
            if not pushed(access, version, archive):
                raise StackError(f"pushed {destination}, but the registry does not serve its manifest digest")
            took[version] = time.monotonic() - start
            say(f"    pushed {destination} in {took[version]:.0f}s")
    finally:
        authfile.unlink(missing_ok=True)
    return took


def infra_archives(paths: Paths, images: ImageSet | None = None) -> dict[str, Path]:
    """The node's side-loaded images: {image ref: OCI archive} for pause and tools."""
    images = images or image_specs()
    archives = {image.ref: image.archive(paths) for image in (images.pause, images.tools)}
    missing = [str(path) for path in archives.values() if not path.is_file()]
    if missing:
        raise StackError(f"node image archives missing ({', '.join(missing)}); run: make up (the images component)")
    return archives


def import_into_containerd(paths: Paths, address: str, archive: Path, namespace: str = "k8s.io") -> None:
    """Import an OCI archive into the containerd at ``address``; the image keeps its name (the ref.name)."""
    run_logged(paths, NAME, ctr_import_argv(address, archive, namespace), what=f"ctr images import {archive.name}")


# --- the component -----------------------------------------------------------------------------------


class Images:
    """Builds and caches the node's images (prepare) and publishes the MLflow ones (start).

    Needs the registry component up before ``start`` (it reads REGISTRY_* from ctx.env).
    """

    name = NAME
    title = "Node images (buildah)"
    wanted_secrets: dict[str, str] = {}

    def prepare(self, ctx: Context) -> None:
        check_tools()
        build_images(ctx.paths, image_specs())

    def needs_build(self, ctx: Context) -> bool:
        """Whether prepare() has anything to build (an image archive is missing)."""
        return not all(image.archive(ctx.paths).is_file() for image in image_specs().all())

    def is_up(self, ctx: Context) -> bool:
        access = RegistryAccess.from_env(ctx.env)
        if access is None:
            return False
        images = image_specs()
        if not all(image.archive(ctx.paths).is_file() for image in images.all()):
            return False
        return all(pushed(access, version, image.archive(ctx.paths)) for version, image in images.mlflow.items())

    def start(self, ctx: Context) -> None:
        access = RegistryAccess.from_env(ctx.env)
        if access is None:
            raise StackError("the images component pushes to the registry: start the registry component first")
        push_mlflow(ctx.paths, image_specs(), access)

    def stop(self, ctx: Context) -> None:
        """Nothing runs: the archives and buildah's storage stay cached, the registry keeps what it got."""

    def env(self, ctx: Context) -> dict[str, str]:
        images = image_specs()
        host = ctx.env.get("REGISTRY_HOST", registry_host())
        project = ctx.env.get("REGISTRY_PROJECT", PROJECT)
        values = {
            "MLSTACK_PAUSE_IMAGE": images.pause.ref,
            "MLSTACK_TOOLS_IMAGE": images.tools.ref,
            "MLSTACK_PAUSE_ARCHIVE": str(images.pause.archive(ctx.paths)),
            "MLSTACK_TOOLS_ARCHIVE": str(images.tools.archive(ctx.paths)),
        }
        for version in images.mlflow:
            values[mlflow_env_key(version)] = mlflow_ref(version, host, project)
        return values
