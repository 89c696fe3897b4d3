"""Services: a TCP proxy per Service port on a stable loopback address, in front of ready runner pods.

There is no kube-proxy here. Every Service with a selector (and a type other than ExternalName) gets
an address ``127.0.2.N`` (allocated once, kept in ``STATE/services.json`` and stable across runner
restarts) and a listener on ``127.0.2.N:<port>`` for each TCP port. A connection goes round-robin to
the *ready* runner pods the selector matches, at the resolved ``targetPort`` (number or container port
name), so a pod that fails readiness stops getting traffic just as with Endpoints.

``STATE/services.json``::

    {"<ns>/<name>": {"address": "127.0.2.N", "ports": {"<port name or number>": <port>}}}
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import read_json, write_json
from .ipam import SERVICE_PREFIX, SERVICE_RANGE, AddressPool

log = logging.getLogger("podrunner")
Backend = tuple[str, int]
Listen = tuple[str, int]


@dataclass(frozen=True)
class PodEndpoint:
    """What the proxy needs to know about one runner pod."""

    namespace: str
    labels: Mapping[str, str]
    ip: str
    ready: bool
    named_ports: Mapping[str, int]


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def proxied(service: Mapping[str, Any]) -> bool:
    spec = service.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def service_key(service: Mapping[str, Any]) -> str:
    meta = service.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _target(port: Mapping[str, Any], endpoint: PodEndpoint) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if str(target).isdigit():
        return int(target)
    return endpoint.named_ports.get(str(target))


def backends_for(
    service: Mapping[str, Any], port: Mapping[str, Any], endpoints: Iterable[PodEndpoint]
) -> list[Backend]:
    """Ready pods behind one Service port, sorted for a stable round-robin order."""
    namespace = (service.get("metadata") or {}).get("namespace")
    selector = (service.get("spec") or {}).get("selector") or {}
    backends = []
    for endpoint in endpoints:
        if endpoint.namespace != namespace or not endpoint.ready:
            continue
        if not selector_matches(selector, endpoint.labels):
            continue
        target = _target(port, endpoint)
        if target is not None:
            backends.append((endpoint.ip, target))
    return sorted(backends)


def plan(
    services: Iterable[Mapping[str, Any]], endpoints: list[PodEndpoint], pool: AddressPool
) -> tuple[dict[Listen, list[Backend]], dict[str, dict[str, Any]]]:
    """Listeners with their backends, and the services.json content, for the current objects."""
    listeners: dict[Listen, list[Backend]] = {}
    published: dict[str, dict[str, Any]] = {}
    keys = []
    for service in services:
        if not proxied(service):
            continue
        key = service_key(service)
        keys.append(key)
        address = pool.allocate(key)
        ports: dict[str, int] = {}
        for port in (service.get("spec") or {}).get("ports") or []:
            if port.get("protocol", "TCP") != "TCP":
                continue
            ports[str(port.get("name") or port["port"])] = int(port["port"])
            listeners[(address, int(port["port"]))] = backends_for(service, port, endpoints)
        published[key] = {"address": address, "ports": ports}
    pool.retain(keys)
    return listeners, published


class ServiceProxy:
    """The listeners, run by an asyncio loop in a thread of their own."""

    def __init__(self, state: Path) -> None:
        self.path = state / "services.json"
        initial = {key: entry["address"] for key, entry in read_json(self.path, {}).items()}
        self.pool = AddressPool(None, SERVICE_PREFIX, SERVICE_RANGE, initial)
        self._lock = threading.Lock()
        self._services: list[Mapping[str, Any]] | None = None
        self._endpoints: list[PodEndpoint] = []
        self._published: dict[str, dict[str, Any]] | None = None
        self._backends: dict[Listen, list[Backend]] = {}
        self._servers: dict[Listen, asyncio.Server] = {}
        self._counter = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="services", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self._close_all(), self._loop)
        try:
            future.result(timeout=5)
        except Exception as err:  # noqa: BLE001 - shutting down anyway
            log.warning("service proxy: closing listeners failed: %s", err)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def address_of(self, namespace: str, name: str) -> str | None:
        return self.pool.get(f"{namespace}/{name}")

    def set_services(self, services: list[Mapping[str, Any]]) -> None:
        with self._lock:
            self._services = services
        self._replan()

    def set_endpoints(self, endpoints: list[PodEndpoint]) -> None:
        with self._lock:
            if endpoints == self._endpoints:
                return
            self._endpoints = endpoints
        self._replan()

    def _replan(self) -> None:
        with self._lock:
            if self._services is None:
                return  # no service list yet: keep what we had
            listeners, published = plan(self._services, self._endpoints, self.pool)
            if published != self._published:
                write_json(self.path, published)
                self._published = published
        self._loop.call_soon_threadsafe(self._apply, listeners)

    # ---- inside the loop -----------------------------------------------------------------------
    def _apply(self, listeners: dict[Listen, list[Backend]]) -> None:
        self._backends = listeners
        for listen in [key for key in self._servers if key not in listeners]:
            self._servers.pop(listen).close()
            log.info("service proxy: closed %s:%d", *listen)
        for listen in listeners:
            if listen not in self._servers:
                self._loop.create_task(self._listen(listen))

    async def _listen(self, listen: Listen) -> None:
        if listen in self._servers:
            return
        try:
            server = await asyncio.start_server(
                lambda r, w: self._handle(listen, r, w), host=listen[0], port=listen[1], reuse_address=True
            )
        except OSError as err:
            log.warning("service proxy: cannot listen on %s:%d: %s", listen[0], listen[1], err)
            return
        self._servers[listen] = server
        log.info("service proxy: listening on %s:%d", *listen)

    async def _close_all(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()

    async def _handle(self, listen: Listen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backends = list(self._backends.get(listen) or [])
        start = next(self._counter)
        for offset in range(len(backends)):
            host, port = backends[(start + offset) % len(backends)]
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=3)
            except (OSError, TimeoutError):
                continue
            await _splice(reader, writer, up_reader, up_writer)
            return
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: asyncio.StreamWriter) -> None:
    """Copy one direction; pass a clean EOF on as a half-close, abort both sides on an error."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        for side in (writer, peer):
            side.transport.abort()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both directions until both sides are done."""
    await asyncio.gather(_pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer))
    for side in (writer, up_writer):
        side.close()
