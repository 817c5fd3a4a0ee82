"""How a chat in which an agent runs code takes its turns: the rules AutoGen leaves to us.

AutoGen's two-party chat asks the other side again until a termination message or the reply
cap, and checks termination before it runs code. With a small model both go wrong in ways a
user sees; each rule here is one AutoGen hook or reply function, registered by the factory on
the agents it concerns:

- A message that still holds code the receiver can run never ends the chat, even when it ends
  with TERMINATE: the code runs first (`termination_check`).
- An agent without an LLM (a user proxy) with nothing to say ends its chat instead of asking
  again: AutoGen would send its empty default reply (or a fixed "reply TERMINATE when done"),
  and the model's answer to that is only "TERMINATE", an LLM call and seconds spent on nothing
  (`end_when_nothing_to_add`).
- A reply cut off inside its code block (the model hit its token cap, usually looping over the
  same lines) is answered with what happened and a request for shorter code, not with the
  generic default reply; a cut-off reply to that request ends the chat, since asking a model
  at temperature 0 again buys the same loop again, its whole `max_tokens` each time (about
  20 s for the coder example's 400 on the embedded model) (`follow_up_cut_off_code`).
- An agent with an LLM reads its own earlier messages without what it wrote after a code block
  that then ran (`hide_claims_made_before_the_run`): that text was written before the output
  existed ("... the sum is 768. TERMINATE"), and a small model reading it again repeats it
  instead of the real output (115) that follows.
- An agent that runs code does not run the termination word as code (small models close a
  block with "TERMINATE" on its last line), nor a block in a language no sandbox runs next to
  code it can (`drop_terminate_in_code`).

What was said stays in the chat and the transcript as it was; only an agent's reading of it,
and its own next turn, change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from autogen import ConversableAgent, GroupChatManager
from autogen.agentchat import Agent
from autogen.code_utils import UNKNOWN, extract_code

from ..execution.base import NO_OUTPUT_NOTE
from ..execution.codeprep import LANGUAGES
from .transcript import message_text

# A reply rule of a two-party chat, given the agent and what it received: (True, text) answers
# with text, (True, None) ends the chat, (False, None) leaves the turn to AutoGen's next reply.
_Rule = Callable[[ConversableAgent, list[dict[str, Any]]], tuple[bool, str | None]]

# What a user proxy answers a reply cut off inside its code block, the first time.
CUT_OFF_REPLY = (
    "Your reply was cut off before its code block was closed: it was too long, and nothing ran. "
    "Reply with one shorter complete code block: let loops and the standard library do the work "
    "instead of writing cases out one by one."
)


def termination_check(keyword: str | None, runs_code: bool = False) -> Callable[[dict[str, Any]], bool]:
    """A message ends the chat when its text ends with the keyword (default TERMINATE).

    For an agent that runs code, a message that still holds a code block it can run never ends
    the chat: AutoGen checks termination before it executes code, so "here is the code ...
    TERMINATE" would end the chat with the code never run (small models write exactly that). The
    code runs first; the reply to its output may then end the chat."""
    word = keyword or "TERMINATE"

    def is_termination(message: dict[str, Any]) -> bool:
        text = message_text(message)
        if not text.rstrip().rstrip(".!").endswith(word):
            return False
        return not (runs_code and has_runnable_code(text))

    return is_termination


def has_runnable_code(text: str) -> bool:
    """Whether the text holds a fenced block in a language the sandboxes run."""
    return any(lang.lower() in LANGUAGES for lang, _ in extract_code(text) if lang != UNKNOWN)


# How AutoGen's user proxy reports a block that ran, exited 0 and printed something (its
# code-execution reply; the sandboxes mark an empty output with NO_OUTPUT_NOTE).
_RAN_OK = re.compile(
    r"^exitcode: 0 \(execution succeeded\)\nCode output: (?!\s*$)(?!" + re.escape(NO_OUTPUT_NOTE) + ")"
)


def end_when_nothing_to_add(agent: ConversableAgent) -> None:
    """Make an agent without an LLM end a two-party chat when it has nothing to say.

    Its reply functions run in AutoGen's order (termination and a human's reply, then code
    execution); this one comes last, where AutoGen would otherwise send `default_auto_reply`:
    - with an empty default reply: the chat ends (AutoGen would send an empty message);
    - right after code it ran succeeded and printed something, a reply without code is the
      answer to that output: the chat ends (a default reply such as "go on, reply TERMINATE
      when done" would only buy a "TERMINATE" from the model). Before any code ran, after a
      failed run and after code that printed nothing, a default reply is still sent: it asks
      for (fixed) code, which is work, not a formality.
    In a group chat (the manager asks for a reply) it changes nothing: a member's turn is the
    manager's to give.
    """

    def nothing_to_add(
        recipient: ConversableAgent, messages: list[dict[str, Any]]
    ) -> tuple[bool, str | None]:
        if recipient._default_auto_reply and not _answers_code_output(messages):
            return False, None
        return True, None  # no reply: AutoGen ends the chat here

    _add_two_party_rule(agent, nothing_to_add)


def follow_up_cut_off_code(agent: ConversableAgent) -> None:
    """Make an agent that runs code answer a reply cut off inside its code block.

    Registered before `end_when_nothing_to_add`, so it runs where AutoGen found no complete
    block to run: a cut-off reply gets `CUT_OFF_REPLY` (the generic default reply would not
    say why nothing ran, and the model repeats itself); a cut-off reply to `CUT_OFF_REPLY`
    ends the chat. The agent's own last message is what tells: the one before it may be an
    earlier turn of the session, replayed, which proves nothing about this reply. In a group
    chat it changes nothing (the manager gives turns).
    """

    def cut_off(recipient: ConversableAgent, messages: list[dict[str, Any]]) -> tuple[bool, str | None]:
        if not cut_off_in_code(message_text(messages[-1])):
            return False, None
        asked = messages[-2] if len(messages) >= 2 else {}  # this agent's own last message
        if asked.get("role") == "assistant" and message_text(asked) == CUT_OFF_REPLY:
            return True, None  # no reply: AutoGen ends the chat here
        return True, CUT_OFF_REPLY

    _add_two_party_rule(agent, cut_off)


def _add_two_party_rule(agent: ConversableAgent, rule: _Rule) -> None:
    """Register a rule as the agent's last reply function so far (after AutoGen's termination
    check and code execution), for two-party chats only: in a group chat the manager gives the
    turns, and a member's rule would take them from it."""

    def reply(
        recipient: ConversableAgent,
        messages: list[dict[str, Any]] | None = None,
        sender: Agent | None = None,
        config: Any | None = None,
    ) -> tuple[bool, str | None]:
        if isinstance(sender, GroupChatManager) or not messages:
            return False, None
        return rule(recipient, messages)

    agent.register_reply([Agent, None], reply, position=len(agent._reply_func_list))


def cut_off_in_code(text: str) -> bool:
    """Whether the text opens a fenced block it never closes (a reply cut off at its token cap):
    an odd number of lines that start with a fence. Counting lines, not matching blocks, keeps
    complete replies complete whatever their tags (```c++, ```python title=x.py), empty blocks
    and fences quoted in prose."""
    return len(_FENCE_LINE.findall(text)) % 2 == 1


def _answers_code_output(messages: list[dict[str, Any]]) -> bool:
    """Whether the last message replies to this agent's report of code that ran successfully."""
    if len(messages) < 2 or messages[-2].get("role") != "assistant":  # the agent's own message
        return False
    return bool(_RAN_OK.match(message_text(messages[-2])))


# A fenced code block, as AutoGen's extractor finds them; and an execution report (any exit code).
_CODE_BLOCK = re.compile(r"```[ \t]*\w*[ \t]*\r?\n.*?\r?\n[ \t]*```", re.DOTALL)
_RAN = re.compile(r"^exitcode: -?\d+")
_FENCE_LINE = re.compile(r"^[ \t]*```", re.MULTILINE)


def hide_claims_made_before_the_run(agent: ConversableAgent) -> None:
    """Before each LLM call, trim the agent's own messages whose code then ran to end at their
    last code block: the model sees its code and the real output, not the result it guessed."""

    def trim(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        view: list[dict[str, Any]] | None = None
        for i, message in enumerate(messages[:-1]):
            content = message.get("content")
            if message.get("role") != "assistant" or not isinstance(content, str):
                continue
            if not _RAN.match(message_text(messages[i + 1])):
                continue
            blocks = [b for b in _CODE_BLOCK.finditer(content) if _runnable(b.group(0))]
            if not blocks or not content[blocks[-1].end() :].strip():
                continue
            if view is None:
                view = list(messages)  # AutoGen's own history stays as it was said
            view[i] = {**message, "content": content[: blocks[-1].end()]}
        return messages if view is None else view

    agent.register_hook("process_all_messages_before_reply", trim)


def drop_terminate_in_code(agent: ConversableAgent, keyword: str) -> None:
    """The message the agent is about to act on, cleaned of what was never meant to run: a
    termination word alone on the last line of a code block (meant for the chat, not the
    interpreter), and, next to code it can run, blocks in a language no sandbox runs (small
    models add an "```output" block with the output they expect, which would fail the whole
    run as an unsupported language). Only the agent's own reading changes: the transcript
    keeps what was said."""
    last_line = re.compile(rf"(\r?\n)[ \t]*{re.escape(keyword)}[.!]?[ \t]*(\r?\n[ \t]*```)")

    def drop(content: Any) -> Any:
        if not isinstance(content, str) or "```" not in content:
            return content
        if keyword in content:
            content = _CODE_BLOCK.sub(lambda block: last_line.sub(r"\2", block.group(0)), content)
        if has_runnable_code(content):
            content = _CODE_BLOCK.sub(lambda b: b.group(0) if _runnable(b.group(0)) else "", content)
        return content

    agent.register_hook("process_last_received_message", drop)


def _runnable(block: str) -> bool:
    """Whether a fenced block is tagged with a language the sandboxes run (untagged: AutoGen
    guesses, so it is left to run)."""
    lang = block[3:].split("\n", 1)[0].strip().lower()
    return not lang or lang in LANGUAGES
