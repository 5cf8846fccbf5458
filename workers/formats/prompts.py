"""Prompt strings in a model's chat template -> system texts and messages. Pure.

Text-completion bodies (Llama, Mistral text, Claude text completions, Titan, Cohere Command,
Jurassic) carry the whole conversation in one string. `parse_prompt` recognises the templates
and strips their tokens, so the canonical request holds the human text:

    llama3   <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>
             <|start_header_id|>assistant<|end_header_id|>
    inst     <s>[INST] <<SYS>>\\nsys\\n<</SYS>>\\n\\nHi [/INST] answer</s><s>[INST] more [/INST]
             (Llama 2 and Mistral; Mistral's [SYSTEM_PROMPT]...[/SYSTEM_PROMPT] too)
    human    \\n\\nHuman: Hi\\n\\nAssistant:               (Claude text completions)
    userbot  User: Hi\\nBot:                              (Titan)

The special-token templates (llama3, inst) are recognised in any family, since they cannot be
mistaken for prose. The word templates (human, userbot) are only tried when the family names them.
A prompt with no template is one user message with the text unchanged. Text before the first turn
marker of a word template becomes a system text. A trailing empty assistant turn (the usual
"generation starts here" marker) is dropped; a non-empty one stays as an assistant prefill.
"""
from __future__ import annotations

import re

from finops.shared.model import Message, TextBlock

from .common import fail

# A conversation being read: [role, text] per turn (`_add` joins a turn's texts with a blank line);
# the Messages are built from it at the end.
Turns = list[list]

_LLAMA3_HEADER = re.compile(r"<\|start_header_id\|>(.*?)<\|end_header_id\|>")
_LLAMA3_END = re.compile(r"<\|(?:eot_id|eom_id|end_of_text)\|>")
_LLAMA3_STRIP = re.compile(r"<\|begin_of_text\|>")
_INST = re.compile(r"\[INST\](.*?)(?:\[/INST\]|$)", re.S)
_SYS_TAG = re.compile(r"<<SYS>>(.*?)<</SYS>>", re.S)
_MISTRAL_SYS = re.compile(r"\[SYSTEM_PROMPT\](.*?)\[/SYSTEM_PROMPT\]", re.S)
_BOS_EOS = re.compile(r"</?s>")
_HUMAN = re.compile(r"(?:^|\n\n|\n)(Human|Assistant):")
_USERBOT = re.compile(r"(?m)^(User|Bot):")


def _add(msgs: Turns, role: str, text: str) -> None:
    text = text.strip()
    if not text:
        return
    if msgs and msgs[-1][0] == role:
        msgs[-1][1] += "\n\n" + text
    else:
        msgs.append([role, text])


def _llama3(prompt: str) -> tuple[list[str], Turns]:
    p = _LLAMA3_STRIP.sub("", prompt)
    system: list[str] = []
    msgs: Turns = []
    heads = list(_LLAMA3_HEADER.finditer(p))
    for i, h in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(p)
        text = _LLAMA3_END.sub("", p[h.end():end]).strip()
        role = h.group(1).strip()
        if role == "system":
            if text:
                system.append(text)
        else:
            _add(msgs, "assistant" if role == "assistant" else "user", text)
    return system, msgs


def _inst(prompt: str) -> tuple[list[str], Turns]:
    system: list[str] = []
    p = prompt
    m = _MISTRAL_SYS.search(p)
    if m:
        system.append(m.group(1).strip())
        p = p[:m.start()] + p[m.end():]
    msgs: Turns = []
    pos = 0
    for m in _INST.finditer(p):
        before = _BOS_EOS.sub("", p[pos:m.start()])
        if pos == 0:  # text ahead of the first [INST] is a preamble
            if before.strip():
                system.append(before.strip())
        else:
            _add(msgs, "assistant", before)
        user = m.group(1)
        s = _SYS_TAG.search(user)
        if s:
            if s.group(1).strip():
                system.append(s.group(1).strip())
            user = user[:s.start()] + user[s.end():]
        _add(msgs, "user", user)
        pos = m.end()
    _add(msgs, "assistant", _BOS_EOS.sub("", p[pos:]))
    return system, msgs


def _turns(prompt: str, pattern: re.Pattern, roles: dict) -> tuple[list[str], Turns]:
    marks = list(pattern.finditer(prompt))
    system = [prompt[:marks[0].start()].strip()] if prompt[:marks[0].start()].strip() else []
    msgs: Turns = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(prompt)
        _add(msgs, roles[m.group(1)], prompt[m.end():end])
    return system, msgs


def parse_prompt(prompt, path: str = "prompt", *, words: str | None = None
                 ) -> tuple[list[str], list[Message]]:
    """Split a templated prompt into (system texts, messages).

    Args:
        words: also recognise the word template "human" (Claude) or "userbot" (Titan).
    Raises:
        ValidationException naming `path` when the prompt is not a string, is blank, or holds no
        user turn.
    """
    if not isinstance(prompt, str):
        raise fail(path, "required; send the prompt text as a string")
    if not prompt.strip():
        raise fail(path, "is blank; send the prompt text")
    if "<|start_header_id|>" in prompt:
        system, msgs = _llama3(prompt)
    elif "[INST]" in prompt:
        system, msgs = _inst(prompt)
    elif words == "human" and _HUMAN.search(prompt):
        system, msgs = _turns(prompt, _HUMAN, {"Human": "user", "Assistant": "assistant"})
    elif words == "userbot" and _USERBOT.search(prompt):
        system, msgs = _turns(prompt, _USERBOT, {"User": "user", "Bot": "assistant"})
    else:
        return [], [Message("user", [TextBlock(prompt)])]
    if not any(role == "user" for role, _ in msgs):
        raise fail(path, "holds no user text after its template tokens; put the question in a user turn")
    return system, [Message(role, [TextBlock(text)]) for role, text in msgs]
