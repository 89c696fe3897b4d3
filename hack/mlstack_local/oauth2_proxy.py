"""The oauth2-proxy image: the forward-auth service the collection deploys with mlflow_auth_mode=proxy.

The binary is built from the Go module proxy (``go install`` of github.com/oauth2-proxy/oauth2-proxy/v7,
which has no replace directives) into ``~/.cache/mlstack/bin/oauth2-proxy-<version>/``. The image is
images/oauth2-proxy/Containerfile on the stack's debootstrapped base, built with buildah like the MLflow
images (images.py), kept as an OCI archive keyed by the Containerfile, the binary's hash and the base,
and pushed to the stack registry with the robot credentials, where the collection's pull secret lets
the kubelet pull it. ``OAUTH2_PROXY_IMAGE`` in stack.env names it.

Nothing runs: ``stop`` has nothing to stop (the archive stays cached, the registry keeps the image).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from . import images
from .base import Context
from .config import REPO_ROOT, Paths
from .gobuild import GO_ENV, binaries_present
from .proc import StackError, run_logged, say
from .registry import PROJECT

NAME = "oauth2-proxy"
VERSION = "v7.15.6"
MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
REVISION = "mlstack.1"
REPOSITORY = "oauth2-proxy"
CONTAINERFILE = REPO_ROOT / "images" / "oauth2-proxy" / "Containerfile"


def tag(version: str = VERSION) -> str:
    return f"{version}-{REVISION}"


def image_ref(host: str | None = None, project: str = PROJECT, version: str = VERSION) -> str:
    """``<registry host>/<project>/oauth2-proxy:<version>-mlstack.1``, as mlflow_oauth2_proxy_image names it."""
    return f"{host or images.registry_host()}/{project}/{REPOSITORY}:{tag(version)}"


def image_key(containerfile: bytes, binary_digest: str, base: str, version: str = VERSION) -> str:
    return images.content_key(NAME, images.RECIPE, version, REVISION, containerfile, binary_digest, base)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def binary_dir(paths: Paths, version: str = VERSION) -> Path:
    return paths.bin / f"{NAME}-{version}"


def install_argv(version: str = VERSION) -> list[str]:
    """``go install`` with the version stamped as upstream's release build does (-X .../version.VERSION)."""
    ldflags = f"-s -w -X {MODULE}/pkg/version.VERSION={version}"
    return ["go", "install", "-trimpath", "-ldflags", ldflags, f"{MODULE}@{version}"]


def build_binary(ctx: Context, version: str = VERSION) -> Path:
    """The oauth2-proxy binary, cached by version (~80 s cold on 2 cores)."""
    target = binary_dir(ctx.paths, version)
    if binaries_present(target, [NAME]):
        return target / NAME
    target.mkdir(parents=True, exist_ok=True)
    say(f"    building {MODULE}@{version} (cached afterwards)")
    run_logged(
        ctx.paths,
        f"build-{NAME}",
        install_argv(version),
        env={**GO_ENV, "GOBIN": str(target)},
        cwd=ctx.paths.cache,
        what=f"go install {MODULE}@{version}",
    )
    return target / NAME


def spec(paths: Paths, host: str | None = None, project: str = PROJECT) -> images.Image:
    base = images.image_specs().base
    key = image_key(CONTAINERFILE.read_bytes(), file_digest(binary_dir(paths) / NAME), base.ref)
    return images.Image(NAME, image_ref(host, project), key)


def build_image(paths: Paths, binary: Path) -> images.Image:
    """Build and archive the image unless its archive is cached (buildah, on the debootstrapped base)."""
    base = images.image_specs().base
    image = spec(paths)
    archive = image.archive(paths)
    if archive.is_file():
        say(f"    {image.ref}: cached ({archive.name})")
        return image
    images._ensure_dirs(paths)  # noqa: SLF001 - the images component's own storage layout
    if not base.archive(paths).is_file():
        raise StackError("the debootstrapped base image is missing: run `python -m mlstack_local up images` first")
    images.load_archive(paths, base)
    context = images.work_dir(paths) / NAME
    images._clear_work(context)  # noqa: SLF001
    context.mkdir(parents=True)
    try:
        shutil.copy2(CONTAINERFILE, context / "Containerfile")
        shutil.copy2(binary, context / NAME)
        say(f"    building {image.ref} (cached afterwards)")
        build_args = {"BASE_IMAGE": base.ref, "OAUTH2_PROXY_VERSION": VERSION, "IMAGE_REVISION": REVISION}
        images.build_containerfile(paths, image, context, build_args)
        images.export_archive(paths, image)
        images.forget_stale(paths, image)
    finally:
        images._clear_work(context)  # noqa: SLF001
    return image


def pushed(access: images.RegistryAccess, archive: Path) -> bool:
    url = images.manifest_url(access.url, access.project, REPOSITORY, tag())
    digest = images.registry_digest(url, images.manifest_headers(access.user, access.password))
    return digest is not None and digest == images.archive_manifest(archive)[1]


class OAuth2Proxy:
    """Builds the oauth2-proxy binary and image (prepare) and pushes the image to the registry (start)."""

    name = NAME
    title = "oauth2-proxy image"
    wanted_secrets: dict[str, str] = {}

    def prepare(self, ctx: Context) -> None:
        images.check_tools()
        build_image(ctx.paths, build_binary(ctx))

    def is_up(self, ctx: Context) -> bool:
        access = images.RegistryAccess.from_env(ctx.env)
        if access is None or not (binary_dir(ctx.paths) / NAME).is_file():
            return False
        archive = spec(ctx.paths).archive(ctx.paths)
        return archive.is_file() and pushed(access, archive)

    def start(self, ctx: Context) -> None:
        access = images.RegistryAccess.from_env(ctx.env)
        if access is None:
            raise StackError("the oauth2-proxy image is pushed to the registry: start the registry component first")
        archive = spec(ctx.paths).archive(ctx.paths)
        destination = image_ref(access.host, access.project)
        authfile = ctx.paths.component_dir(NAME) / f"auth-{os.getpid()}.json"
        images.write_private(authfile, images.auth_config(access.host, access.user, access.password))
        try:
            run_logged(
                ctx.paths,
                NAME,
                images.push_argv(archive, destination, authfile),
                env=images.tool_env(ctx.paths),
                what=f"push {destination}",
            )
        finally:
            authfile.unlink(missing_ok=True)
        if not pushed(access, archive):
            raise StackError(f"pushed {destination}, but the registry does not serve its manifest digest")
        say(f"    pushed {destination}")

    def stop(self, ctx: Context) -> None:
        """Nothing runs: the binary and archive stay cached, the registry keeps what it got."""

    def env(self, ctx: Context) -> dict[str, str]:
        host = ctx.env.get("REGISTRY_HOST", images.registry_host())
        project = ctx.env.get("REGISTRY_PROJECT", PROJECT)
        return {"OAUTH2_PROXY_IMAGE": image_ref(host, project)}
