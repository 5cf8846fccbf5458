"""Chat-template prompt strings -> system texts and messages (workers/formats/prompts.py)."""
from __future__ import annotations

import pytest

from finops.shared.model import TextBlock
from finops.workers.formats.prompts import parse_prompt
from tests.unit.formats.family_support import LLAMA3, raises


# --- prompt templates ---------------------------------------------------------------------------

def test_prompt_llama3():
    system, msgs = parse_prompt(LLAMA3)
    assert system == ["You are a bot."]
    assert [(m.role, m.content) for m in msgs] == [
        ("user", (TextBlock("Hi"),)), ("assistant", (TextBlock("Hello!"),)), ("user", (TextBlock("What is 2+2?"),))]


def test_prompt_llama2_with_sys():
    system, msgs = parse_prompt("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nName a colour. [/INST] Red </s>"
                                "<s>[INST] Another [/INST]")
    assert system == ["Be brief."]
    assert [(m.role, m.content[0].text) for m in msgs] == [
        ("user", "Name a colour."), ("assistant", "Red"), ("user", "Another")]


def test_prompt_mistral_documented_multi_turn():
    p = ("<s>[INST] What is your favourite condiment? [/INST] Well, I'm quite partial to a good squeeze of "
         "fresh lemon juice.</s> [INST] Do you have mayonnaise recipes? [/INST]")
    system, msgs = parse_prompt(p)
    assert system == []
    assert [(m.role, m.content[0].text) for m in msgs] == [
        ("user", "What is your favourite condiment?"),
        ("assistant", "Well, I'm quite partial to a good squeeze of fresh lemon juice."),
        ("user", "Do you have mayonnaise recipes?")]


def test_prompt_mistral_system_prompt_tag():
    system, msgs = parse_prompt("<s>[SYSTEM_PROMPT]Be kind.[/SYSTEM_PROMPT][INST]Hi[/INST]")
    assert system == ["Be kind."] and msgs[0].content == (TextBlock("Hi"),)


def test_prompt_claude_human_assistant():
    system, msgs = parse_prompt("You are Claude.\n\nHuman: Hi there\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant:",
                                words="human")
    assert system == ["You are Claude."]
    assert [(m.role, m.content[0].text) for m in msgs] == [
        ("user", "Hi there"), ("assistant", "Hello"), ("user", "Bye")]


def test_prompt_claude_prefill_kept():
    _, msgs = parse_prompt("\n\nHuman: Give JSON\n\nAssistant: {", words="human")
    assert [(m.role, m.content[0].text) for m in msgs] == [("user", "Give JSON"), ("assistant", "{")]


def test_prompt_titan_user_bot():
    system, msgs = parse_prompt("User: Write a haiku\nBot:", words="userbot")
    assert system == [] and [(m.role, m.content[0].text) for m in msgs] == [("user", "Write a haiku")]


def test_prompt_plain_is_one_user_message_unchanged():
    _, msgs = parse_prompt("  Say hello from Mistral using Invoke API. ")
    text = "  Say hello from Mistral using Invoke API. "
    assert [(m.role, m.content) for m in msgs] == [("user", (TextBlock(text),))]


def test_prompt_word_templates_only_where_named():
    # a Mistral user may well write "Human:" in prose; only Claude's family splits on it
    _, msgs = parse_prompt("Translate:\n\nHuman: hello\n\nAssistant: bonjour")
    assert len(msgs) == 1 and msgs[0].role == "user"


@pytest.mark.parametrize("prompt,text", [(None, "required"), (5, "required"), ("   ", "blank"),
                                         ("<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\nhi",
                                          "no user text")])
def test_prompt_errors(prompt, text):
    msg = raises(parse_prompt, prompt)
    assert msg.startswith("prompt: ") and text in msg
