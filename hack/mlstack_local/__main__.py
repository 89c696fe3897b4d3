"""Command line of the local stack: ``python -m mlstack_local up|down|status|env``.

Run through the Makefile (``make up``, ``make down``, ``make status``), which sets PYTHONPATH.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time

from . import secrets as stack_secrets
from .base import Component, Context
from .config import default_paths
from .proc import StackError, say


def components() -> list[Component]:
    # Imported here so `status` and `down` work even if a component module has a heavy import.
    from .images import Images
    from .keycloak import Keycloak
    from .kube import Kube
    from .kuberouter import KubeRouter
    from .metallb import MetalLB
    from .network import Network
    from .node import Node
    from .oauth2_proxy import OAuth2Proxy
    from .platform import Platform
    from .postgres import Postgres
    from .registry import Registry
    from .s3 import SeaweedS3
    from .sealed import SealedSecrets
    from .traefik import Traefik

    # The network first: the API server and the platform services listen on the node IP.
    return [
        Network(),
        Kube(),
        Postgres(),
        SeaweedS3(),
        Platform(),
        Keycloak(),
        SealedSecrets(),
        Registry(),
        Images(),
        OAuth2Proxy(),
        Node(),
        # Right after the node: NetworkPolicies are enforced before anything else runs pods' traffic.
        KubeRouter(),
        Traefik(),
        MetalLB(),
    ]


def make_context() -> Context:
    paths = default_paths()
    wanted: dict[str, str] = {}
    for component in components():
        wanted.update(component.wanted_secrets)
    paths.state.mkdir(parents=True, exist_ok=True)
    secrets = stack_secrets.load_or_create(paths.secrets_file, wanted)
    return Context(paths=paths, secrets=secrets)


def cmd_up(ctx: Context, only: list[str]) -> int:
    every = components()
    unknown = set(only) - {c.name for c in every}
    if unknown:
        known = ", ".join(c.name for c in every)
        raise StackError(f"unknown component(s) {', '.join(sorted(unknown))}; known: {known}")
    total = len(only) if only else len(every)
    started = time.monotonic()
    early = start_early_builds(ctx, [c for c in every if not only or c.name in only])
    index = 0
    for component in every:
        step = time.monotonic()
        if only and component.name not in only:
            # Not asked for, but its environment is published if it is up.
            if component.is_up(ctx):
                ctx.env.update(component.env(ctx))
            continue
        index += 1
        if component.is_up(ctx):
            say(f"[{index}/{total}] {component.title}: already up")
        else:
            say(f"[{index}/{total}] {component.title}: preparing")
            if component.name in early:
                early.pop(component.name).result()  # built meanwhile; its error, if any, surfaces here
            else:
                component.prepare(ctx)
            say(f"[{index}/{total}] {component.title}: starting")
            component.start(ctx)
            say(f"[{index}/{total}] {component.title}: up in {time.monotonic() - step:.1f}s")
        ctx.env.update(component.env(ctx))
    write_stack_env(ctx)
    say(f"Local stack up in {time.monotonic() - started:.1f}s; environment in {ctx.paths.stack_env}")
    return 0


# Builds that need nothing of the components before them, started in the background while those start:
# the images (debootstrap, apt and pip downloads: mostly waiting on the network and the disk) overlap the
# Go builds of the control plane and the platform (mostly CPU). Only a build; start() stays in order.
EARLY_BUILDS = ("images",)


def start_early_builds(ctx: Context, wanted: list[Component]) -> dict[str, concurrent.futures.Future[None]]:
    early = [c for c in wanted if c.name in EARLY_BUILDS and c.needs_build(ctx)]
    if not early:
        return {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="early-build")
    futures = {c.name: pool.submit(c.prepare, ctx) for c in early}
    pool.shutdown(wait=False)
    return futures


def write_stack_env(ctx: Context) -> None:
    values = dict(ctx.env)
    values["MLSTACK_STATE_DIR"] = str(ctx.paths.state)
    stack_secrets.write_env_file(ctx.paths.stack_env, values)


def cmd_down(ctx: Context) -> int:
    for component in reversed(components()):
        component.stop(ctx)
        say(f"{component.title}: stopped")
    ctx.paths.stack_env.unlink(missing_ok=True)
    return 0


def cmd_status(ctx: Context) -> int:
    all_up = True
    for component in components():
        up = component.is_up(ctx)
        if up:
            ctx.env.update(component.env(ctx))
        all_up = all_up and up
        say(f"{component.title:<28} {'up' if up else 'down'}")
    return 0 if all_up else 3


def cmd_endpoint(ctx: Context, namespace: str, service: str) -> int:
    """Write .local/mlflow.env with where the deployed MLflow answers, and print it."""
    from .endpoint import mlflow_env

    values = mlflow_env(ctx, namespace, service)
    path = ctx.paths.state / "mlflow.env"
    stack_secrets.write_env_file(path, values)
    say(f"MLflow is up: {values['MLFLOW_TRACKING_URI']} (Host: {values['MLFLOW_HOST']}); environment in {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlstack_local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack (a no-op for what is already up)")
    up.add_argument("only", nargs="*", help="component names to start (default: all)")
    sub.add_parser("down", help="stop everything the stack started, by recorded PID")
    sub.add_parser("status", help="report each component; exit 3 if any is down")
    endpoint = sub.add_parser("endpoint", help="write .local/mlflow.env for the deployed MLflow")
    endpoint.add_argument("--namespace", default="mlflow")
    endpoint.add_argument("--service", default="mlflow")
    args = parser.parse_args(argv)
    ctx = make_context()
    try:
        if args.command == "up":
            return cmd_up(ctx, args.only)
        if args.command == "down":
            return cmd_down(ctx)
        if args.command == "endpoint":
            return cmd_endpoint(ctx, args.namespace, args.service)
        return cmd_status(ctx)
    except StackError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
