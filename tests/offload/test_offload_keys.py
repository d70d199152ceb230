"""Keys live in the keyring (a real file backend under the test's own home), the environment
overrides them, and no command or error ever prints one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from offload import keys
from offload.errors import KeyStoreError, MissingKey
from offload.network import Network
from offload.providers import Anthropic, OpenAICompatible, open_provider

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-live-9f8e7d6c5b4a39281706SECRET"


def tandem(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], input=stdin, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )


def keyring_files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file()]


def test_a_stored_key_lands_in_the_keyring_file_under_the_tests_home(isolated_home):
    keys.set_key("openai", SECRET)
    assert keys.get_key("openai") == SECRET
    assert keys.source_of("openai") == "keyring"
    files = keyring_files(isolated_home)
    assert files and all(isolated_home in f.parents for f in files)
    assert any("python_keyring" in str(f) for f in files)


def test_environment_overrides_the_keyring(monkeypatch):
    keys.set_key("anthropic", "sk-ant-from-keyring-123456")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env-654321")
    assert keys.get_key("anthropic") == "sk-ant-from-env-654321"
    assert keys.source_of("anthropic") == "env"
    assert keys.env_var("my-vllm") == "MY_VLLM_API_KEY"


def test_remove_deletes_only_the_keyring_entry():
    keys.set_key("openrouter", SECRET)
    assert ("openrouter", "keyring") in keys.providers()
    assert keys.remove_key("openrouter") is True
    assert keys.get_key("openrouter") is None
    assert keys.remove_key("openrouter") is False
    assert "openrouter" not in [name for name, _ in keys.providers()]


@pytest.mark.parametrize("bad", ["", "  ", "two words", "line\nbreak"])
def test_empty_or_broken_keys_are_refused(bad):
    with pytest.raises(KeyStoreError):
        keys.set_key("openai", bad)


def test_provider_names_are_checked():
    with pytest.raises(KeyStoreError, match="not a provider name"):
        keys.get_key("../etc")


def test_open_provider_reads_the_key_and_missing_keys_are_typed(monkeypatch):
    network = Network(offline=True)
    with pytest.raises(MissingKey, match="tandem keys set anthropic"):
        list(Anthropic(None, network=network).stream_chat([], "m", 8, 0.0))
    with pytest.raises(MissingKey, match="OPENAI_API_KEY"):
        list(OpenAICompatible(network=network).stream_chat([], "m", 8, 0.0))
    keys.set_key("openai", SECRET)
    provider = open_provider("openai-compatible", network=network)
    assert SECRET not in repr(provider)


def test_cli_round_trip_never_shows_the_key(isolated_home):
    stored = tandem("keys", "set", "openai", stdin=SECRET + "\n")
    assert stored.returncode == 0, stored.stderr
    assert keys.get_key("openai") == SECRET
    listed = tandem("keys", "list")
    assert listed.returncode == 0
    lines = dict(line.split(None, 1) for line in listed.stdout.splitlines())
    # Issue 13 items 4 and 15: the backend is named as the plaintext file it is, and onprem is listed.
    assert lines == {"openai": "plaintext keyring file", "anthropic": "not set", "onprem": "not set"}
    removed = tandem("keys", "remove", "openai")
    assert removed.returncode == 0
    assert keys.get_key("openai") is None
    for done in (stored, listed, removed):
        assert SECRET not in done.stdout + done.stderr


def test_cli_list_names_the_environment_variable(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    listed = tandem("keys", "list")
    assert "anthropic  environment (ANTHROPIC_API_KEY)" in listed.stdout
    assert SECRET not in listed.stdout + listed.stderr


def test_cli_refuses_a_key_on_the_command_line():
    done = tandem("keys", "set", "openai", SECRET)
    assert done.returncode == 2
    assert "never taken from the command line" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert keys.get_key("openai") is None


def test_cli_errors_are_one_clear_line():
    empty = tandem("keys", "set", "openai", stdin="\n")
    assert empty.returncode == 1 and empty.stderr.startswith("tandem: ") and "Traceback" not in empty.stderr
    missing = tandem("keys", "remove", "anthropic")
    assert missing.returncode == 1 and "no anthropic key" in missing.stderr
    assert os.environ.get("PYTHON_KEYRING_BACKEND") == "keyrings.alt.file.PlaintextKeyring"


def test_no_usable_keyring_is_a_clear_error_and_env_keys_still_work(monkeypatch):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    with pytest.raises(KeyStoreError, match="environment variable"):
        keys.set_key("openai", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert keys.get_key("openai") == SECRET
    listed = tandem("keys", "list")
    assert listed.returncode == 1
    assert listed.stderr.startswith("tandem: The system keyring cannot be used") and "Traceback" not in listed.stderr
