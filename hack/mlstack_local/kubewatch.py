"""Pieces the stack's two daemons (pod runner, ingress controller) share: the raw watch stream and logging."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any


def watch_events(lister: Callable[..., Any], resource_version: str, timeout: int, **selectors: Any) -> Iterator[dict]:
    """Raw watch events (``{"type", "object"}``) from ``resource_version``, bookmarks included.

    ``lister`` is a kubernetes client ``list_*`` method; JSON is decoded here rather than by the client's
    Watch helper so objects stay plain dicts, as the daemons' status code expects.
    """
    from kubernetes.watch.watch import iter_resp_lines

    response = lister(
        **selectors,
        resource_version=resource_version,
        watch=True,
        allow_watch_bookmarks=True,
        timeout_seconds=timeout,
        _preload_content=False,
        _request_timeout=(10, timeout + 30),
    )
    try:
        for line in iter_resp_lines(response):
            if line:
                yield json.loads(line)
    finally:
        response.close()
        response.release_conn()


def setup_daemon_logging() -> None:
    """One concise line per event on stdout (the daemon's log file); client libraries kept quiet."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname).1s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stdout,
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
