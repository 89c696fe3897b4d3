"""Build Go binaries from the Go module proxy into ~/.cache/mlstack/bin/<name>-<version>/.

Kubernetes and etcd cannot be `go install`ed (their go.mod files replace staging modules with local
paths), so each gets a small wrapper module under ~/.cache/mlstack/src/ that requires the real module
and pins the staging modules to their published versions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from .base import Context
from .proc import StackError, run_logged, say

GO_ENV = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}


def _go_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(GO_ENV)
    if extra:
        env.update(extra)
    return env


def binaries_present(directory: Path, names: list[str]) -> bool:
    return all((directory / name).is_file() and os.access(directory / name, os.X_OK) for name in names)


def go_install(ctx: Context, *, label: str, version: str, packages: list[str], names: list[str]) -> Path:
    """`go install pkg@version` for modules without replace directives (sealed-secrets, crictl, ...)."""
    target = ctx.paths.bin / f"{label}-{version}"
    if binaries_present(target, names):
        return target
    target.mkdir(parents=True, exist_ok=True)
    for index, package in enumerate(packages, start=1):
        say(f"    building {package}@{version} ({index}/{len(packages)}; cached afterwards)")
        run_logged(
            ctx.paths,
            f"build-{label}",
            ["go", "install", f"{package}@{version}"],
            env=_go_env({"GOBIN": str(target)}),
            cwd=ctx.paths.cache,
            what=f"go install {package}@{version}",
        )
    return target


def staging_replaces(kubernetes_go_mod: str, staging_version: str) -> list[str]:
    """One `replace k8s.io/X => k8s.io/X vSTAGING` line per `=> ./staging/...` line of k8s.io/kubernetes."""
    modules = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kubernetes_go_mod, flags=re.MULTILINE)
    return [f"replace {module} => {module} {staging_version}" for module in modules]


def kubernetes_wrapper_go_mod(version: str, kubernetes_go_mod: str) -> str:
    """go.mod of a module that builds k8s.io/kubernetes commands at ``version`` (e.g. v1.35.4)."""
    major_minor_patch = version.lstrip("v").split(".")
    staging_version = f"v0.{major_minor_patch[1]}.{major_minor_patch[2]}"
    go_line = re.search(r"^go\s+(\S+)", kubernetes_go_mod, flags=re.MULTILINE)
    godebug = re.search(r"^godebug\s+.*$", kubernetes_go_mod, flags=re.MULTILINE)
    lines = ["module mlstack.local/k8sbuild", "", f"go {go_line.group(1) if go_line else '1.25.0'}", ""]
    if godebug:
        lines += [godebug.group(0), ""]
    lines += [f"require k8s.io/kubernetes {version}", ""]
    lines += staging_replaces(kubernetes_go_mod, staging_version)
    return "\n".join(lines) + "\n"


def version_ldflags(version: str) -> str:
    """-X flags so /version reports the real release instead of v0.0.0-master."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def module_dir(module: str, version: str, cwd: Path) -> Path:
    """A module's directory in the Go module cache (downloaded if missing, e.g. after a cache clean)."""
    cwd.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(  # noqa: S603
        ["go", "mod", "download", "-json", f"{module}@{version}"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **GO_ENV},
        cwd=cwd,
    )
    if out.returncode != 0:
        raise StackError(f"go mod download {module}@{version} failed:\n{out.stdout}{out.stderr}")
    return Path(json.loads(out.stdout)["Dir"])


KUBERNETES_COMMANDS = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
]


def build_kubernetes(ctx: Context, version: str) -> Path:
    target = ctx.paths.bin / f"k8s-{version}"
    if binaries_present(target, KUBERNETES_COMMANDS):
        return target
    src = ctx.paths.src / f"k8s-{version}"
    src.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    say(f"    fetching k8s.io/kubernetes {version} from the Go module proxy")
    kube_dir = module_dir("k8s.io/kubernetes", version, src)
    (src / "go.mod").write_text(kubernetes_wrapper_go_mod(version, (kube_dir / "go.mod").read_text()))
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{cmd}"' for cmd in KUBERNETES_COMMANDS)
    (src / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    run_logged(ctx.paths, "build-kubernetes", ["go", "mod", "tidy"], env=_go_env(), cwd=src, what="go mod tidy")
    ldflags = f"-s -w {version_ldflags(version)}"
    for index, cmd in enumerate(KUBERNETES_COMMANDS, start=1):
        if binaries_present(target, [cmd]):
            continue
        say(f"    compiling {cmd} {version} ({index}/{len(KUBERNETES_COMMANDS)}; 5-25 min cold on 2 cores)")
        run_logged(
            ctx.paths,
            "build-kubernetes",
            ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(target / cmd), f"k8s.io/kubernetes/cmd/{cmd}"],
            env=_go_env(),
            cwd=src,
            what=f"go build {cmd}",
        )
    return target


def build_etcd(ctx: Context, version: str) -> Path:
    target = ctx.paths.bin / f"etcd-{version}"
    if binaries_present(target, ["etcd"]):
        return target
    src = ctx.paths.src / f"etcd-{version}"
    src.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    if not (src / "go.mod").exists():
        (src / "go.mod").write_text("module mlstack.local/etcdbuild\n\ngo 1.25.0\n")
    say(f"    compiling etcd {version} (cached afterwards)")
    run_logged(
        ctx.paths,
        "build-etcd",
        ["go", "get", f"go.etcd.io/etcd/server/v3@{version}"],
        env=_go_env(),
        cwd=src,
        what="go get etcd",
    )
    run_logged(
        ctx.paths,
        "build-etcd",
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(target / "etcd"), "go.etcd.io/etcd/server/v3"],
        env=_go_env(),
        cwd=src,
        what="go build etcd",
    )
    return target


def build_module(ctx: Context, *, label: str, version: str, require: str, main_go: str, binary: str) -> Path:
    """Build a small main package of our own against one required module (CoreDNS with our plugin set)."""
    target = ctx.paths.bin / f"{label}-{version}"
    if binaries_present(target, [binary]):
        return target
    src = ctx.paths.src / f"{label}-{version}"
    src.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(f"module mlstack.local/{label}build\n\ngo 1.25.0\n\nrequire {require}\n")
    (src / "main.go").write_text(main_go)
    say(f"    compiling {label} {version} (cached afterwards)")
    run_logged(
        ctx.paths, f"build-{label}", ["go", "mod", "tidy"], env=_go_env(), cwd=src, what=f"go mod tidy ({label})"
    )
    run_logged(
        ctx.paths,
        f"build-{label}",
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(target / binary), "."],
        env=_go_env(),
        cwd=src,
        what=f"go build {label}",
    )
    return target
