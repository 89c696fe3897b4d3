"""Every module, lookup and filter of the collection documents itself: ``ansible-doc`` renders it (a real call)."""

from __future__ import annotations

import functools
import importlib
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


NAMES = {"module": MODULES, "lookup": LOOKUPS, "filter": FILTERS}


@functools.cache
def ansible_doc_runs() -> dict[tuple[str, bool], tuple[int, str, str]]:
    """``ansible-doc -t TYPE`` (text and ``--json``) over every plugin of each type: six real runs, at once."""
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": collections_path(),
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PAGER": "cat",
    }
    running = {}
    for plugin_type, names in NAMES.items():
        for as_json in (False, True):
            args = [str(ANSIBLE_DOC), "-t", plugin_type, *(["--json"] if as_json else [])]
            args += [f"mlstack.mlflow.{name}" for name in names]
            running[(plugin_type, as_json)] = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
    done = {}
    for key, process in running.items():
        out, err = process.communicate(timeout=120)
        done[key] = (process.returncode, out, err)
    return done


def doc_json(plugin_type: str) -> dict[str, Any]:
    returncode, out, err = ansible_doc_runs()[(plugin_type, True)]
    assert returncode == 0, err
    return json.loads(out)


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
    returncode, out, err = ansible_doc_runs()[(plugin_type, False)]
    assert returncode == 0, err
    assert "ERROR" not in err, err
    for name in names:
        assert f"mlstack.mlflow.{name}" in out

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


def module_parameters(run_module, name: str, required: dict[str, Any]) -> list[str]:
    """The parameters a module accepts, as its AnsibleModule reports them for an unknown one."""
    module = importlib.import_module(f"ansible_collections.mlstack.mlflow.plugins.modules.{name}")
    result = run_module(module.main, {**required, "not_an_option": "x"})
    assert result["failed"], result
    message = result["msg"]
    assert "Unsupported parameters" in message and "not_an_option" in message, message
    return sorted(message.split("Supported parameters include: ", 1)[1].rstrip(".").split(", "))


# Arguments that keep a module's own cross-checks (required_if, types) quiet, so the unknown one is what it reports.
QUIET_ARGS = {"mlflow_check": {"auth_mode": "none"}, "k8s_read": {"queries": {}}, "k8s_secret": {"name": "s"}}


def test_module_docs_name_the_modules_parameters(run_module):
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
        assert module_parameters(run_module, name, required) == sorted(options), name
