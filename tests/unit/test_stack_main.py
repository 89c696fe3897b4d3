"""The local stack's command line: early builds overlap the components before them, start() stays in order."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local import __main__ as cli  # noqa: E402
from mlstack_local.base import Context  # noqa: E402
from mlstack_local.config import Paths  # noqa: E402
from mlstack_local.proc import StackError  # noqa: E402


class Fake:
    def __init__(self, name: str, log: list[str], *, build: bool = True, fail: bool = False) -> None:
        self.name, self.title, self.log, self.build, self.fail = name, name, log, build, fail
        self.wanted_secrets: dict[str, str] = {}
        self.prepared_in: str | None = None

    def needs_build(self, ctx: Context) -> bool:
        return self.build

    def prepare(self, ctx: Context) -> None:
        self.prepared_in = threading.current_thread().name
        if self.fail:
            raise StackError(f"{self.name} failed to build")
        self.log.append(f"prepare {self.name}")

    def is_up(self, ctx: Context) -> bool:
        return False

    def start(self, ctx: Context) -> None:
        self.log.append(f"start {self.name}")

    def stop(self, ctx: Context) -> None: ...

    def env(self, ctx: Context) -> dict[str, str]:
        return {}


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    paths = Paths(state=tmp_path / ".local", cache=tmp_path / "cache")
    paths.state.mkdir(parents=True)
    return Context(paths=paths, secrets={})


def test_the_images_build_runs_in_the_background_and_starts_keep_their_order(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    kube, images, node = Fake("kube", log), Fake("images", log), Fake("node", log)
    monkeypatch.setattr(cli, "components", lambda: [kube, images, node])
    assert cli.cmd_up(ctx, []) == 0
    assert images.prepared_in.startswith("early-build") and kube.prepared_in == threading.main_thread().name
    starts = [line for line in log if line.startswith("start")]
    assert starts == ["start kube", "start images", "start node"]
    assert log.index("prepare images") < log.index("start images")


def test_nothing_runs_early_when_the_images_are_built(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    images = Fake("images", log, build=False)
    monkeypatch.setattr(cli, "components", lambda: [images])
    assert cli.cmd_up(ctx, []) == 0
    assert images.prepared_in == threading.main_thread().name


def test_an_early_build_failure_stops_the_start_at_its_component(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    kube, images, node = Fake("kube", log), Fake("images", log, fail=True), Fake("node", log)
    monkeypatch.setattr(cli, "components", lambda: [kube, images, node])
    with pytest.raises(StackError, match="images failed to build"):
        cli.cmd_up(ctx, [])
    assert "start kube" in log and "start images" not in log and "start node" not in log
