"""What the upgrade path reads: image versions, maintenance Job results, backup selection, input patterns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.mlstack.mlflow.plugins.filter.mlflow import FilterModule, image_version, maintenance_result
from ansible_collections.mlstack.mlflow.plugins.modules.mlflow_backup_info import select

REPO = Path(__file__).resolve().parents[2]
PATTERNS = yaml.safe_load((REPO / "roles" / "preflight" / "vars" / "main.yml").read_text())


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("registry.example.com/library/mlflow:3.18.0-mlstack.1", "3.18.0"),
        ("127.0.0.1:35000/mlstack/mlflow:3.17.2-mlstack.1", "3.17.2"),
        ("ghcr.io/mlflow/mlflow:v3.18.0", "3.18.0"),
        ("registry.example.com/mlflow:3.18.0", "3.18.0"),
        ("registry.example.com:5000/mlflow@sha256:" + "a" * 64, ""),
        ("registry.example.com/mlflow:latest", ""),
        ("registry.example.com/mlflow:3.18", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_image_version_reads_the_release_from_the_tag_only(image: str | None, version: str) -> None:
    assert image_version(image) == version


def test_the_registry_port_is_not_mistaken_for_a_version() -> None:
    assert image_version("10.0.0.1:5000/mlflow:custom") == ""


def test_maintenance_result_takes_the_last_marked_json_line() -> None:
    lines = [
        "warning: something",
        'MLSTACK_RESULT {"ok": false, "error": "first"}',
        "MLSTACK_RESULT {not json",
        'MLSTACK_RESULT {"ok": true, "name": "b"}',
        "trailing noise",
    ]
    assert maintenance_result(lines) == {"ok": True, "name": "b"}


@pytest.mark.parametrize("lines", [[], None, ["no marker"], ["MLSTACK_RESULT [1, 2]"]])
def test_maintenance_result_falls_back_to_the_default(lines: list[str] | None) -> None:
    assert maintenance_result(lines, {"name": "x"}) == {"name": "x"}
    assert maintenance_result(lines) == {}


def test_the_filters_are_registered() -> None:
    filters = FilterModule().filters()
    assert filters["image_version"] is image_version and filters["maintenance_result"] is maintenance_result


BACKUPS = [
    {"name": "20261201T010000Z-3.17.2-3.18.0", "image": "a"},
    {"name": "20261202T010000Z-scheduled", "image": "b"},
]


def test_select_takes_the_named_backup_or_the_newest() -> None:
    assert select(BACKUPS, "")["name"] == "20261202T010000Z-scheduled"
    assert select(BACKUPS, "20261201T010000Z-3.17.2-3.18.0")["image"] == "a"
    assert select(BACKUPS, "missing") == {}
    assert select([], "") == {}


def _matches(pattern: str, value: str) -> bool:
    return re.match(pattern, value) is not None


@pytest.mark.parametrize("value", ["", "0 3 * * *", "*/15 * * * *", "0 3 * * MON-FRI", "@daily", "0\t3 1,15 * ?"])
def test_cron_pattern_accepts_schedules(value: str) -> None:
    assert _matches(PATTERNS["_preflight_cron"], value)


@pytest.mark.parametrize(
    "value", ["every night", "0 3 * *", "0 3 * * * *", "@sometimes", "0 3 * * *\n", "0 3 * * $(id)"]
)
def test_cron_pattern_refuses_the_rest(value: str) -> None:
    assert not _matches(PATTERNS["_preflight_cron"], value)


@pytest.mark.parametrize("value", ["30d", "1d2h3m4s", "12h", "1.5d", "0s", "90m"])
def test_duration_pattern_accepts_mlflow_gc_ages(value: str) -> None:
    assert _matches(PATTERNS["_preflight_duration"], value)


@pytest.mark.parametrize("value", ["", "30 days", "d", "3h2d", "30d\n", "-1d"])
def test_duration_pattern_refuses_the_rest(value: str) -> None:
    assert not _matches(PATTERNS["_preflight_duration"], value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("backups", True), ("mlflow/backups", True), ("/backups", False), ("b/", False), ("a//b", False), ("", False)],
)
def test_key_prefix_pattern(value: str, ok: bool) -> None:
    assert _matches(PATTERNS["_preflight_key_prefix"], value) is ok
