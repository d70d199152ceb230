"""`tandem ask` as a user runs it: clear exit codes and one-line messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def tandem(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], input=stdin, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )


def test_an_empty_question_exits_2_with_one_line():
    done = tandem("ask", stdin="   \n")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "the question is empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_cloud_and_offline_contradict():
    done = tandem("--offline", "ask", "--cloud", "hi")
    assert done.returncode == 2
    assert "--cloud and --offline" in done.stderr


def test_local_and_cloud_cannot_both_be_given():
    done = tandem("ask", "--local", "--cloud", "hi")
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr


def test_a_damaged_database_exits_1_and_is_left_untouched(tmp_path):
    damaged = tmp_path / "tandem.db"
    damaged.write_bytes(b"not a database" * 100)
    done = tandem("--db", str(damaged), "ask", "hello")
    assert done.returncode == 1
    assert done.stderr.startswith("tandem ask: ")
    assert "Traceback" not in done.stderr
    assert damaged.read_bytes() == b"not a database" * 100


def test_ask_is_listed_in_help():
    done = tandem("--help")
    assert "ask" in done.stdout


def _real_engine_available() -> bool:
    import importlib.util

    from assets import embedded_model_dir

    return importlib.util.find_spec("engine.loader") is not None and embedded_model_dir().is_dir()


real_engine = pytest.mark.skipif(
    not _real_engine_available(), reason="needs engine.loader and assets/models/tandem-nano (not landed yet)"
)


@real_engine
def test_ask_json_answers_locally_on_the_embedded_model():
    done = tandem("ask", "--local", "--json", "What is Tandem?")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"reply", "route", "confidence", "reason"} <= set(answer)
    assert answer["route"] == "local" and answer["reply"].strip()


@real_engine
def test_ask_reads_the_question_from_stdin():
    done = tandem("ask", "--local", "--json", "-", stdin="What is Tandem?\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["reply"].strip()


@real_engine
def test_a_machine_without_any_keyring_still_answers_locally(monkeypatch):
    """A headless machine has no keyring: the cloud's key cannot even be looked up, and the
    local model must answer all the same, with no traceback."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    done = tandem("ask", "--json", "hello")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["route"] == "local"
