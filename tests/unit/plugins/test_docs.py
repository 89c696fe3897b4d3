"""Every module, lookup and filter of the collection documents itself: ``ansible-doc`` renders it (a real call)."""

from __future__ import annotations

import functools
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.mlstack.mlflow.plugins.filter.mlflow import FilterModule

REPO_ROOT = Path(__file__).resolve().parents[3]
PLUGINS = REPO_ROOT / "plugins"
ANSIBLE_DOC = Path(sys.executable).parent / "ansible-doc"
MODULES = sorted(p.stem for p in (PLUGINS / "modules").glob("*.py") if not p.name.startswith("_"))
LOOKUPS = sorted(p.stem for p in (PLUGINS / "lookup").glob("*.py") if not p.name.startswith("_"))
FILTERS = sorted(FilterModule().filters())


def collections_path() -> str:
    """The directory holding ansible_collections/mlstack/mlflow -> this tree (made by tests/unit/conftest.py)."""
    return next(p for p in sys.path if (Path(p) / "ansible_collections" / "mlstack" / "mlflow").is_dir())


def ansible_doc(plugin_type: str, names: list[str], *, as_json: bool) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": collections_path(),
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PAGER": "cat",
    }
    args = [str(ANSIBLE_DOC), "-t", plugin_type, *(["--json"] if as_json else [])]
    args += [f"mlstack.mlflow.{name}" for name in names]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)


@functools.cache
def doc_json(plugin_type: str) -> dict[str, Any]:
    """``ansible-doc --json`` of every plugin of a type, run once per test session."""
    names = {"module": MODULES, "lookup": LOOKUPS, "filter": FILTERS}[plugin_type]
    result = ansible_doc(plugin_type, names, as_json=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def descriptions(doc: Any, where: str = "") -> list[tuple[str, Any]]:
    """Every ``description`` in a doc tree, with where it is."""
    found = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "description":
                found.append((where, value))
            found += descriptions(value, f"{where}.{key}")
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += descriptions(value, f"{where}[{index}]")
    return found


def test_every_filter_has_a_documentation_file():
    assert FILTERS, "FilterModule exposes no filter"
    assert sorted(p.stem for p in (PLUGINS / "filter").glob("*.yml")) == FILTERS


@pytest.mark.parametrize(
    ("plugin_type", "names"), [("module", MODULES), ("lookup", LOOKUPS), ("filter", FILTERS)], ids=str
)
def test_ansible_doc_renders(plugin_type, names):
    text = ansible_doc(plugin_type, names, as_json=False)
    assert text.returncode == 0, text.stderr
    assert "ERROR" not in text.stderr, text.stderr
    for name in names:
        assert f"mlstack.mlflow.{name}" in text.stdout

    docs = doc_json(plugin_type)
    assert sorted(docs) == sorted(f"mlstack.mlflow.{name}" for name in names)
    for fqcn, data in docs.items():
        doc = data["doc"]
        assert doc["short_description"], fqcn
        assert doc.get("author"), fqcn
        assert data.get("examples"), f"{fqcn} has no EXAMPLES"
        assert data.get("return"), f"{fqcn} has no RETURN"
        # A description is text or a list of texts; "a: b" unquoted in YAML silently makes a mapping.
        for where, text_or_list in descriptions(doc):
            items = text_or_list if isinstance(text_or_list, list) else [text_or_list]
            assert all(isinstance(item, str) for item in items), f"{fqcn}{where}: {text_or_list!r}"


def filter_doc_options() -> dict[str, dict[str, Any]]:
    docs = doc_json("filter")
    return {fqcn.rsplit(".", 1)[1]: data["doc"] for fqcn, data in docs.items()}


def test_filter_docs_name_the_filters_parameters():
    """The documented options are the function's parameters (the input is ``_input``), required alike."""
    filters = FilterModule().filters()
    for name, doc in filter_doc_options().items():
        parameters = list(inspect.signature(filters[name]).parameters.values())
        expected = {"_input": parameters[0].default is inspect.Parameter.empty}
        expected |= {p.name: p.default is inspect.Parameter.empty for p in parameters[1:]}
        documented = {option: bool(spec.get("required")) for option, spec in doc["options"].items()}
        assert documented == expected, name
        positional = [p.strip() for p in str(doc.get("positional", "_input")).split(",")]
        assert positional == list(expected)[: len(positional)], name


def module_parameters(name: str, required: dict[str, Any], tmp_path: Path) -> list[str]:
    """The parameters a module accepts, as the module itself reports them for an unknown one (a real run)."""
    args = tmp_path / f"{name}.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**required, "not_an_option": "x"}}))
    env = {**os.environ, "PYTHONPATH": collections_path()}
    run = subprocess.run(
        [sys.executable, "-m", f"ansible_collections.mlstack.mlflow.plugins.modules.{name}", str(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    result = json.loads(run.stdout)
    assert result["failed"], result
    message = result["msg"]
    assert "Unsupported parameters" in message and "not_an_option" in message, message
    return sorted(message.split("Supported parameters include: ", 1)[1].rstrip(".").split(", "))


# Arguments that keep a module's own cross-checks (required_if) quiet, so the unknown one is what it reports.
QUIET_ARGS = {"mlflow_check": {"auth_mode": "none"}}


def test_module_docs_name_the_modules_parameters(tmp_path):
    docs = doc_json("module")
    for name in MODULES:
        options = docs[f"mlstack.mlflow.{name}"]["doc"]["options"]
        # Values long enough that no_log masking of one never garbles the message.
        required = {
            option: 1 if spec.get("type") == "int" else f"placeholder-{option}-value"
            for option, spec in options.items()
            if spec.get("required")
        }
        required |= QUIET_ARGS.get(name, {})
        assert module_parameters(name, required, tmp_path) == sorted(options), name
