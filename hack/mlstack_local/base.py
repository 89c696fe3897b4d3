"""The contract every stack component follows, and the context they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .config import Paths


@dataclass
class Context:
    """What components share: paths, generated credentials and the environment published so far."""

    paths: Paths
    secrets: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)


class Component(Protocol):
    """One service of the local stack.

    ``prepare`` builds or downloads what the component needs (cached by version); ``start`` is a
    no-op when the component is already up; ``stop`` stops only processes recorded by PID.
    """

    name: str
    title: str
    # Keys of Context.secrets this component needs, with their kind ("password" or "key").
    wanted_secrets: dict[str, str]

    def prepare(self, ctx: Context) -> None: ...

    def is_up(self, ctx: Context) -> bool: ...

    def start(self, ctx: Context) -> None: ...

    def stop(self, ctx: Context) -> None: ...

    def env(self, ctx: Context) -> dict[str, str]: ...
