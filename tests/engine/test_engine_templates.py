"""Chat templates: each built-in renders the format its models were trained on."""

from __future__ import annotations

import pytest

from engine.errors import InvalidMessages
from engine.templates import BUILTIN_TEMPLATES, ConvTemplate, builtin_template, template_from_config

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]


def test_llama3():
    template = builtin_template("llama-3")
    assert template.render(CHAT) == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert template.system_prefix_token_ids == (128000,)
    assert "<|eot_id|>" in template.stop_str


@pytest.mark.parametrize("name", ["chatml", "qwen2"])
def test_chatml_family(name):
    assert builtin_template(name).render(CHAT) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_default_system_message_when_none_is_given():
    prompt = builtin_template("qwen2").render([{"role": "user", "content": "Hi"}])
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_phi3():
    assert builtin_template("phi-3").render(CHAT) == (
        "<|system|>\nBe brief.<|end|>\n"
        "<|user|>\nHi<|end|>\n"
        "<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nBye<|end|>\n"
        "<|assistant|>\n"
    )


def test_tinyllama():
    assert builtin_template("tinyllama_v1_0").render(CHAT) == (
        "<|system|>\nBe brief.</s>\n"
        "<|user|>\nHi</s>\n"
        "<|assistant|>\nHello!</s>\n"
        "<|user|>\nBye</s>\n"
        "<|assistant|>\n"
    )


@pytest.mark.parametrize("name", list(BUILTIN_TEMPLATES))
def test_dict_round_trip(name):
    template = BUILTIN_TEMPLATES[name]
    assert ConvTemplate.from_dict(template.to_dict()) == template
    assert template_from_config(template.to_dict()) == template


def test_mlc_dict_with_two_seps_and_no_role_after_system():
    template = ConvTemplate.from_dict(
        {
            "name": "inst",
            "system_template": "[INST] <<SYS>>{system_message}<</SYS>> ",
            "system_message": "sys",
            "roles": {"user": "[INST]", "assistant": "[/INST]"},
            "seps": [" ", "</s>"],
            "role_content_sep": " ",
            "role_empty_sep": " ",
            "add_role_after_system_message": False,
        }
    )
    turns = [("user", "a"), ("assistant", "b"), ("user", "c")]
    prompt = template.render([{"role": role, "content": content} for role, content in turns])
    assert prompt == "[INST] <<SYS>>sys<</SYS>> a [/INST] b</s>[INST] c [/INST] "


def test_unknown_role_is_a_clear_error():
    with pytest.raises(InvalidMessages, match=r"role 'narrator'.*use one of: system, user, assistant"):
        builtin_template("chatml").render([{"role": "narrator", "content": "Once"}])


def test_late_system_message_is_a_clear_error():
    with pytest.raises(InvalidMessages, match="only the first message may be one"):
        builtin_template("chatml").render([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])


def test_unknown_template_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: llama-3, chatml, qwen2, phi-3, tinyllama_v1_0"):
        builtin_template("vicuna")


def test_prompt_token_ids_put_the_prefix_first():
    template = builtin_template("llama-3")
    ids = template.prompt_token_ids([{"role": "user", "content": "Hi"}], encode=lambda text: [len(text)])
    assert ids == [128000, len(template.render([{"role": "user", "content": "Hi"}]))]
