"""The first five minutes on the chat page, in a real headless Chromium: the last code run next
to an answer (live and reopened) or "no code was run", clean transcripts, who is speaking and
the step of a sequential workflow, the workflow as given, the By-model table at phone width, a
toast that covers no control, distinct sidebar titles, and examples needing a missing sandbox."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import PHONE, ChatPage, api_session_with_answer, launch_browser, new_chat_page
from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer, start_server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


def _server(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLM, name: str, **env: str) -> Any:
    workdir = tmp_path_factory.mktemp(name)
    base = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm.base_url}
    return start_server(workdir, env={**base, **env})


@pytest.fixture(scope="module")
def sandboxed(llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose code runs in the local (bubblewrap) sandbox, Docker's examples included."""
    # The sandbox's uid must reach the work dirs: pytest's own temp root is private (mode 700).
    work_root = Path(tempfile.mkdtemp(prefix="autobots-browser-work-"))
    work_root.chmod(0o755)
    srv = _server(
        tmp_path_factory,
        llm_server,
        "sandboxed",
        AUTOBOTS_CODE_EXECUTION__EXECUTOR="local",
        AUTOBOTS_CODE_EXECUTION__FALLBACK_TO_LOCAL="true",
        AUTOBOTS_CODE_EXECUTION__DOCKER_HOST="unix:///nonexistent/docker.sock",
        AUTOBOTS_CODE_EXECUTION__WORK_ROOT=str(work_root),
    )
    yield srv
    srv.stop()
    shutil.rmtree(work_root, ignore_errors=True)


@pytest.fixture
def chat(browser: Any, server: RunningServer, llm: ScriptedLLM, user_id: str) -> Iterator[ChatPage]:
    page = new_chat_page(browser, server, user_id)
    yield page
    page.page.context.close()
    assert not page.errors, page.errors


def _local_sandbox_or_skip() -> None:
    from autobots.execution.errors import ExecutionUnavailable
    from autobots.execution.local_executor import check_bwrap

    try:
        check_bwrap()
    except ExecutionUnavailable as exc:
        pytest.skip(f"no local sandbox here: {exc}")


def coder_flow() -> dict[str, Any]:
    proxy = wf.userproxy(code_execution_config={"executor": "local", "timeout_s": 30})
    return wf.autonomous(wf.assistant("coder"), sender=proxy)


def _open_flow(chat: ChatPage, flow: dict[str, Any]) -> None:
    chat.open()
    chat.paste_workflow(flow)


# the last code run next to the answer ------------------------------------------------------


def test_the_last_code_run_is_shown_next_to_the_answer_live_and_reopened(
    browser: Any, sandboxed: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    _local_sandbox_or_skip()
    llm.queue(Reply("Let me compute it.\n\n```python\nprint(6 * 7)\n```"), "The answer is 41. TERMINATE")
    chat = new_chat_page(browser, sandboxed, user_id)
    page = chat.page
    try:
        _open_flow(chat, coder_flow())
        chat.send("what is six times seven?")
        answer = chat.wait_for_answer()
        panel = answer.locator(".code-run")
        panel.wait_for()
        # The sentence says 41; the output next to it says 42, visible without opening anything.
        assert "42" in panel.locator(".code-run-output").inner_text()
        assert "print(6 * 7)" in panel.inner_text()
        assert "exit code 0" in panel.inner_text()
        assert answer.locator(".no-code-run").count() == 0

        page.reload()  # the saved view, built from the stored messages
        answer = chat.wait_for_answer()
        assert "42" in answer.locator(".code-run .code-run-output").inner_text()
        assert "print(6 * 7)" in answer.locator(".code-run").inner_text()

        llm.queue("No code needed: it is 42. TERMINATE")
        chat.send("and without code?")
        second = chat.wait_for_answer(2)
        second.locator(".no-code-run", has_text="No code was run").wait_for()
        assert second.locator(".code-run").count() == 0
    finally:
        page.context.close()
    assert not chat.errors, chat.errors


def test_code_that_asked_for_docker_says_it_ran_in_the_local_sandbox(
    browser: Any, sandboxed: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    """The sandboxed server has no Docker engine: a workflow asking for Docker runs its code in
    the local sandbox, and the answer says so where it can be seen."""
    _local_sandbox_or_skip()
    llm.queue(Reply("```python\nprint(6 * 7)\n```"), "It is 42.")
    proxy = wf.userproxy(code_execution_config={"executor": "docker", "timeout_s": 30})
    chat = new_chat_page(browser, sandboxed, user_id)
    try:
        _open_flow(chat, wf.autonomous(wf.assistant("coder"), sender=proxy))
        chat.send("what is six times seven?")
        answer = chat.wait_for_answer()
        answer.locator(".code-run").wait_for()
        assert "42" in answer.locator(".code-run .code-run-output").inner_text()
        assert "local (bubblewrap) sandbox" in answer.locator(".answer-notes").inner_text()
    finally:
        chat.page.context.close()
    assert not chat.errors, chat.errors


def test_an_answer_of_a_workflow_without_code_has_no_code_note(chat: ChatPage, llm: ScriptedLLM) -> None:
    llm.queue("Plain answer. TERMINATE")
    _open_flow(chat, wf.autonomous(wf.assistant()))
    chat.send("hello")
    answer = chat.wait_for_answer()
    assert answer.locator(".no-code-run").count() == 0 and answer.locator(".code-run").count() == 0


# clean transcripts -------------------------------------------------------------------------


def test_terminate_markers_and_empty_turns_are_hidden_but_kept(
    chat: ChatPage, llm: ScriptedLLM, server: RunningServer
) -> None:
    # The user proxy answers "First part." with an empty turn (a blank default reply: with none
    # at all it would end the chat, see test_no_wasted_calls.py); the last turn ends with TERMINATE.
    llm.queue("First part.", Reply("Done now.\n\nTERMINATE", delay=3))
    page = chat.page
    _open_flow(chat, wf.autonomous(wf.assistant(), sender=wf.userproxy(default_auto_reply=" ")))
    chat.send("two parts please")
    live = chat.live_run()
    live.locator(".step .step-body", has_text="First part.").wait_for()
    page.wait_for_timeout(1000)  # the empty turn has arrived by now
    assert live.locator(".step-empty").count() == 0
    assert live.locator(".step").count() == 2  # the question and "First part."
    answer = chat.wait_for_answer()
    answer.locator(".steps-details summary").click()
    bodies = answer.locator(".steps .step-body").all_inner_texts()
    assert bodies[-1].strip() == "Done now."
    assert not any("TERMINATE" in b for b in bodies) and answer.locator(".step-empty").count() == 0

    stored = server.get("/api/messages", user_id=chat.user_id, session_id=chat.current_session_id()).json()
    raw = stored["data"][-1]["metadata"]["messages"]
    assert any(not str(m["content"]).strip() for m in raw), "the raw data keeps the empty turn"
    assert "TERMINATE" in raw[-1]["content"]
    assert len(bodies) == len(raw) - 1

    # A turn that is only "TERMINATE" is not shown either.
    llm.queue("Second.", "TERMINATE")
    chat.send("again")
    second = chat.wait_for_answer(2)
    second.locator(".steps-details summary").click()
    texts = second.locator(".steps .step-body").all_inner_texts()
    assert texts and not any(t.strip() in ("", "TERMINATE") for t in texts), texts


# nothing silent ------------------------------------------------------------------------------


def test_the_live_run_says_who_is_thinking_and_the_sequential_step(chat: ChatPage, llm: ScriptedLLM) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        system = str(body["messages"][0].get("content", ""))
        if "researcher" in system:
            return Reply("Facts: one, two. TERMINATE", delay=2.5)
        return Reply("The draft. TERMINATE", delay=2.5)

    llm.responder = respond
    flow = wf.sequential(wf.assistant("researcher"), wf.assistant("writer"))
    _open_flow(chat, flow)
    chat.send("write about bikes")
    live = chat.live_run()
    activity = live.locator(".run-activity")
    activity.locator(".run-step-label", has_text="Step 1 of 2 (researcher)").wait_for()
    activity.locator(".run-who", has_text="researcher is thinking…").wait_for()
    activity.locator(".run-step-label", has_text="Step 2 of 2 (writer)").wait_for()
    activity.locator(".run-who", has_text="writer is thinking…").wait_for()
    handover = live.locator(".step.step-handover")
    handover.wait_for()
    assert handover.get_attribute("data-sender") != "writer"
    assert "hand-over summary" in handover.locator(".step-head").inner_text()
    assert live.locator(".step-handover").count() == 1
    chat.wait_for_answer()


def test_a_slow_first_reply_is_explained_honestly(chat: ChatPage, llm: ScriptedLLM) -> None:
    llm.queue(Reply("Finally. TERMINATE", delay=6))
    _open_flow(chat, wf.autonomous(wf.assistant()))
    chat.send("slowly")
    live = chat.live_run()
    live.locator(".run-wait", has_text="waiting for the model's first reply").wait_for(timeout=8000)
    assert "local model" not in live.locator(".run-wait").inner_text()  # it uses a remote model
    assert live.locator(".run-elapsed").inner_text().strip()  # elapsed time is shown
    answer = chat.wait_for_answer()
    assert answer.locator(".run-wait").count() == 0

    # The embedded model (no config_list, or an embedded: name) gets the loading note.
    note = chat.page.evaluate(
        """async () => {
          const t = await import('/static/js/transcript.js');
          const a = await import('/static/js/activity.js');
          const assistant = (llm) => ({type: 'assistant', config: {name: 'a', llm_config: llm}});
          const proxy = {type: 'userproxy', config: {name: 'u', llm_config: false}};
          const flow = (llm) => ({type: 'autonomous', agents: [{agent: proxy}, {agent: assistant(llm)}]});
          const activity = new a.Activity(flow({temperature: 0}));
          activity.tick(5, 'running');
          return {
            none: t.flowUsesEmbedded(flow({temperature: 0})),
            named: t.flowUsesEmbedded(flow({config_list: [{model: 'embedded:qwen'}]})),
            remote: t.flowUsesEmbedded(flow({config_list: [{model: 'gpt-4o-mini'}]})),
            text: activity.wait.textContent,
          };
        }"""
    )
    assert note["none"] and note["named"] and not note["remote"], note
    assert "local model may be loading" in note["text"] and "30-60 s" in note["text"], note


# the wait for the embedded model -------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A keyless server on the small embedded model (SmolLM2-135M), its own model server."""
    from tests.test_embedded_api import SMALL, keyless_server

    srv = keyless_server(tmp_path_factory.mktemp("browser-embedded"), default_model=SMALL)
    yield srv
    srv.stop()


def test_a_run_queued_at_the_local_model_says_how_many_are_ahead_and_how_long(
    browser: Any, embedded: RunningServer, user_id: str
) -> None:
    from tests.test_embedded_api import SMALL, embedded_assistant
    from tests.test_embedded_wait import busy_model

    flow = wf.autonomous(embedded_assistant(SMALL), sender=wf.userproxy(max_consecutive_auto_reply=0))
    api_session_with_answer(embedded, user_id, flow, "Say hello.")  # the model server is up
    chat = new_chat_page(browser, embedded, user_id)
    try:
        _open_flow(chat, flow)
        busy = busy_model(embedded, calls=2, tokens=300)  # others' long replies hold the model
        chat.send("Say hi.")
        live = chat.live_run()
        note = live.locator(
            ".run-wait", has_text=re.compile(r"\d+ requests? ahead of yours, about \d+ (s|min)\.")
        )
        note.wait_for(timeout=20_000)
        assert "may be loading" not in note.inner_text()
        for thread in busy:
            thread.join(120)
        answer = chat.wait_for_answer()  # its own reply is short, once the others are done
        assert answer.locator(".run-wait").count() == 0

        # The other sentences, as the page writes them for the server's answers.
        texts = chat.page.evaluate(
            """async () => {
              const w = await import('/static/js/waitnote.js');
              return [
                w.waitText({state: 'loading', ahead: 0, estimate_s: 12.3}),
                w.waitText({state: 'loading', ahead: 1, estimate_s: 140}),
                w.waitText({state: 'queued', ahead: 2, estimate_s: 41}),
                w.waitText({state: 'reading', ahead: 0, estimate_s: 3}),
                w.waitText({state: 'writing', ahead: 0, estimate_s: null}),
                w.waitText(null),
              ];
            }"""
        )
        assert texts == [
            "Model loading, about 12 s.",
            "Model loading, then 1 request ahead of yours, about 2 min.",
            "2 requests ahead of yours, about 41 s.",
            "The model is reading the conversation, about 3 s.",
            "",
            "",
        ], texts
    finally:
        chat.page.context.close()
    assert not chat.errors, chat.errors


# the rest --------------------------------------------------------------------------------


def test_the_workflow_dialog_shows_the_workflow_as_given(chat: ChatPage, llm: ScriptedLLM) -> None:
    llm.queue("Hi. TERMINATE")
    flow = {
        "name": "Tiny",
        "type": "autonomous",
        "agents": [
            {
                "agent": {"type": "userproxy", "config": {"name": "me", "llm_config": False}},
                "link": {"agent_type": "sender"},
            },
            {
                "agent": {"type": "assistant", "config": {"name": "helper", "llm_config": wf.llm_config()}},
                "link": {"agent_type": "receiver"},
            },
        ],
    }
    page = chat.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    _open_flow(chat, flow)
    chat.send("hi")
    chat.wait_for_answer()
    page.locator("#show-workflow").click()
    page.locator("#workflow-view pre").wait_for()
    shown = page.locator("#workflow-view pre").inner_text()
    assert json.loads(shown) == flow
    assert "is_termination_msg" not in shown and "max_round" not in shown
    page.locator("#workflow-copy").click()
    page.locator("#workflow-copy", has_text="Copied").wait_for()
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == flow
    page.keyboard.press("Escape")
    page.reload()  # still as given after a reload
    chat.wait_for_answer()
    page.locator("#show-workflow").click()
    page.locator("#workflow-view pre").wait_for()
    assert json.loads(page.locator("#workflow-view pre").inner_text()) == flow


def test_by_model_table_shows_every_column_at_phone_width(
    browser: Any, server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    model = "gpt-4o-mini-2024-07-18-a-rather-long-deployment-name"
    flow = wf.autonomous(wf.assistant(model=model))
    llm.queue("Answer. TERMINATE")
    api_session_with_answer(server, user_id, flow, "a question", "Phone table")
    chat = new_chat_page(browser, server, user_id, viewport=PHONE)
    page = chat.page
    try:
        chat.open()
        page.locator("#open-sidebar").click()
        page.locator(".session-link", has_text="Phone table").click()
        answer = chat.wait_for_answer()
        answer.locator(".usage-details summary").click()
        table = answer.locator(".usage-table", has=page.locator("caption", has_text="By model"))
        table.wait_for()
        headers = table.locator("thead th")
        assert headers.count() == 4
        widths = table.evaluate("t => ({scroll: t.scrollWidth, client: t.clientWidth})")
        assert widths["scroll"] <= widths["client"] + 1, widths  # nothing to scroll to, nothing cut
        for cell in table.locator("th, td").all():
            box = cell.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 0.5, (
                cell.inner_text(),
                box,
            )
        assert model[:10] in table.locator("tbody th").first.inner_text()
    finally:
        page.context.close()
    assert not chat.errors, chat.errors


def _overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def test_the_publish_toast_covers_no_control(chat: ChatPage, llm: ScriptedLLM) -> None:
    llm.queue("Publishable. TERMINATE")
    page = chat.page
    _open_flow(chat, wf.autonomous(wf.assistant()))
    chat.send("publish me")
    chat.wait_for_answer()
    page.locator("#publish").click()
    page.locator("#publish-submit").click()
    toast = page.locator(".toast", has_text="Published")
    toast.wait_for()
    page.evaluate("location.hash = '#/gallery'")
    page.locator("#tag-filter").wait_for()
    assert toast.is_visible()
    box = toast.bounding_box()
    assert box
    controls = page.locator("#tag-filter, #gallery-filter button, .topbar button:visible, .gallery-grid a")
    for control in controls.all():
        if not control.is_visible():
            continue
        other = control.bounding_box()
        assert other and not _overlaps(box, other), (
            control.evaluate("e => e.outerHTML.slice(0, 80)"),
            box,
            other,
        )


def test_sidebar_titles_are_distinct(chat: ChatPage, llm: ScriptedLLM, server: RunningServer) -> None:
    llm.responder = lambda _body: "Same. TERMINATE"
    for _ in range(3):
        api_session_with_answer(
            server, chat.user_id, wf.autonomous(wf.assistant()), "same question", "same question"
        )
    chat.open()
    links = chat.page.locator(".session-link .session-title")
    links.nth(2).wait_for()
    titles = links.all_inner_texts()
    assert len(titles) == 3 and len(set(titles)) == 3, titles
    assert all(t.startswith("same question") for t in titles), titles


def test_the_picker_marks_examples_needing_a_missing_sandbox(
    browser: Any,
    llm_server: ScriptedLLM,
    tmp_path_factory: pytest.TempPathFactory,
    sandboxed: RunningServer,
    user_id: str,
) -> None:
    bare = _server(
        tmp_path_factory,
        llm_server,
        "no-sandbox",
        AUTOBOTS_CODE_EXECUTION__EXECUTOR="docker",
        AUTOBOTS_CODE_EXECUTION__DOCKER_HOST="unix:///nonexistent/docker.sock",
        AUTOBOTS_CODE_EXECUTION__FALLBACK_TO_LOCAL="false",
    )
    try:
        data = bare.get("/api/examples").json()["data"]
        coders = [e["name"] for e in data if e["needs_sandbox"]]
        assert coders and all(not e["sandbox_available"] for e in data if e["needs_sandbox"])
        assert all(e["sandbox_available"] for e in data if not e["needs_sandbox"])
        for srv, marked in ((bare, True), (sandboxed, False)):
            if not marked:
                _local_sandbox_or_skip()
            chat = new_chat_page(browser, srv, user_id)
            try:
                chat.open()
                for example in data:
                    card = chat.page.locator("label.picker-card", has_text=example["name"])
                    card.wait_for()
                    expected = marked and example["name"] in coders
                    missing = card.locator(".picker-note-missing", has_text="sandbox")
                    assert missing.count() == int(expected), example["name"]
                    # The sandboxed server has no Docker either: the Docker examples say where
                    # their code runs instead.
                    fallback = card.locator(".picker-note-fallback", has_text="local sandbox")
                    expected_fallback = not marked and example["name"] in coders
                    assert fallback.count() == int(expected_fallback), example["name"]
            finally:
                chat.page.context.close()
            assert not chat.errors, chat.errors
    finally:
        bare.stop()


def test_examples_flags_sandbox_needs(tmp_path: Path) -> None:
    from autobots.web.pages import _executors

    assert _executors(wf.autonomous(wf.assistant())) == set()
    assert _executors(coder_flow()) == {"local"}
    assert _executors(wf.autonomous(wf.assistant(), sender=wf.userproxy(code_execution_config={}))) == {""}
