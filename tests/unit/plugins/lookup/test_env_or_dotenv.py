"""env_or_dotenv: the environment wins, then the dotenv file, parsed as documented; values stay data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.mlstack.mlflow.plugins.lookup.env_or_dotenv import parse_dotenv

REPO_ROOT = Path(__file__).resolve().parents[4]
ANSIBLE = Path(sys.executable).parent / "ansible"


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("KEY=plain", "plain"),
        ("export KEY=exported", "exported"),
        ("export   KEY=spaced-export", "spaced-export"),
        ("KEY = around", "around"),
        ("KEY='single quoted # not a comment'", "single quoted # not a comment"),
        ('KEY="double quoted # not a comment"', "double quoted # not a comment"),
        ("KEY=pa#ss", "pa#ss"),
        ("KEY=#start-is-a-comment", ""),
        ("KEY=value # a comment", "value"),
        ("KEY=value\t# a comment after a tab", "value"),
        ("KEY=$HOME/literal", "$HOME/literal"),
        ('KEY="${HOME} not expanded"', "${HOME} not expanded"),
        ("KEY='p$ss'", "p$ss"),
        ("KEY=two  words", "two words"),
        ('KEY="two  spaces kept"', "two  spaces kept"),
        (r"KEY=back\ slash", "back slash"),
        ("KEY={{ 7 * 6 }}", "{{ 7 * 6 }}"),
        ('KEY=\'{{ lookup("pipe", "id") }}\'', '{{ lookup("pipe", "id") }}'),
        ("KEY=a=b=c", "a=b=c"),
        ("KEY=", ""),
        ("KEY='it''s'", "its"),
        ('KEY="unbalanced', '"unbalanced'),
    ],
)
def test_parse_dotenv_values(line, value):
    assert parse_dotenv(line) == {"KEY": value}


def test_parse_dotenv_skips_what_is_not_an_assignment():
    text = "\n# KEY=commented\n  # indented comment\nnot an assignment\n1BAD=x\nBAD-NAME=y\n=z\nGOOD=1\n"
    assert parse_dotenv(text) == {"GOOD": "1"}


def test_parse_dotenv_last_assignment_wins():
    assert parse_dotenv("KEY=first\nKEY=second\n") == {"KEY": "second"}


def lookups(calls: list[str], env: dict[str, str], home: Path) -> list[list[str]]:
    """Each ``query('mlstack.mlflow.env_or_dotenv', <call>)``, all in one real ``ansible`` run on localhost."""
    queries = ", ".join(f"query('mlstack.mlflow.env_or_dotenv', {call})" for call in calls)
    expression = "{{ [" + queries + "] | to_json }}"
    run_env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "MLSTACK_TEST_"))} | {
        "HOME": str(home),
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": next(
            p for p in sys.path if (Path(p) / "ansible_collections" / "mlstack" / "mlflow").is_dir()
        ),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        **env,
    }
    run = subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-o", "-m", "ansible.builtin.debug", "-a", f"msg={expression}"],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=home,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.split("=>", 1)[1])
    return json.loads(result["msg"]) if isinstance(result["msg"], str) else result["msg"]


def test_environment_wins_then_the_dotenv_file_then_nothing(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".env").write_text(
        "MLSTACK_TEST_BOTH=from-file\n"
        "MLSTACK_TEST_EMPTY_ENV=file-fills-an-empty-variable\n"
        "export MLSTACK_TEST_FILE='s3cr#t $HOME {{ 7 * 6 }}'\n"
        "MLSTACK_TEST_HASH=pa#ss # comment\n"
    )
    other = tmp_path / "secrets.env"
    other.write_text('MLSTACK_TEST_TOKEN="robot token"\n')
    names = ["MLSTACK_TEST_BOTH", "MLSTACK_TEST_EMPTY_ENV", "MLSTACK_TEST_FILE", "MLSTACK_TEST_HASH"]
    default_file, named_file, missing_file = lookups(
        [
            ", ".join(map(repr, [*names, "MLSTACK_TEST_NONE"])),
            f"'MLSTACK_TEST_TOKEN', file={str(other)!r}",
            f"'MLSTACK_TEST_TOKEN', 'MLSTACK_TEST_HASH', file={str(tmp_path / 'missing.env')!r}",
        ],
        {"MLSTACK_TEST_BOTH": "from-env", "MLSTACK_TEST_EMPTY_ENV": ""},
        home,
    )
    # {{ in a value comes back as written: lookup results are data, never templated again.
    assert default_file == ["from-env", "file-fills-an-empty-variable", "s3cr#t $HOME {{ 7 * 6 }}", "pa#ss", ""]
    assert named_file == ["robot token"]
    # A missing file: empty strings, for the caller's own message.
    assert missing_file == ["", ""]
