"""Run the collection's modules in-process, as Ansible runs them, and read back what they return."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from ansible.module_utils import basic


@pytest.fixture
def run_module(monkeypatch, capsys) -> Callable[..., dict[str, Any]]:
    """``run_module(main, args, check_mode=False, diff=False)``: the module's JSON result (with ``failed``).

    The arguments reach a real ``AnsibleModule`` the way the controller hands them over (the legacy JSON
    profile); ``exit_json``/``fail_json`` print the result and exit, which is what is parsed here.
    """

    def run(main: Callable[[], None], args: dict[str, Any], check_mode: bool = False, diff: bool = False):
        module_args = {**args, "_ansible_check_mode": check_mode, "_ansible_diff": diff}
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": module_args}).encode())
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
        capsys.readouterr()
        with pytest.raises(SystemExit):
            main()
        out = capsys.readouterr().out
        result = json.loads(out)
        result["_stdout"] = out  # the raw text, to search for leaked values
        return result

    return run
