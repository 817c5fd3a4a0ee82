"""The chat page at `/`, as a person uses it, in a real headless Chromium against the real server
and the scripted LLM: sessions, live runs over SSE, cancel, human input, publishing and the
gallery, safe rendering of what an LLM writes, workflow JSON errors, phone width.

The first tests need no browser: the page's HTTP side (examples, caching, CSP)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import (
    LAPTOP,
    PHONE,
    ChatPage,
    api_session_with_answer,
    launch_browser,
    new_chat_page,
    two_turn_workflow,
)
from tests.support import workflows as wf
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer

XSS_REPLY = (
    "Careful: <script>window.__pwned=1</script> and "
    '<img src=x onerror="window.__pwned=1"> and [click](javascript:window.__pwned=1) **bold** TERMINATE'
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def chat(browser: Any, server: RunningServer, llm: ScriptedLLM, user_id: str) -> Iterator[ChatPage]:
    page = new_chat_page(browser, server, user_id)
    yield page
    page.page.context.close()
    assert not page.errors, page.errors


def examples(server: RunningServer) -> dict[str, dict[str, Any]]:
    body = server.get("/api/examples").json()
    return {e["type"]: e for e in body["data"]}


# the page's HTTP side ---------------------------------------------------------------------


def _has_key(value: Any, key: str) -> bool:
    if isinstance(value, dict):
        return key in value or any(_has_key(v, key) for v in value.values())
    return isinstance(value, list) and any(_has_key(v, key) for v in value)


def test_examples_endpoint_offers_valid_workflows_of_each_type(
    server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    response = server.get("/api/examples")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] is True and body["message"]
    from autobots.web.pages import EXAMPLES_DIR

    shipped = sorted(EXAMPLES_DIR.glob("*.json"))
    assert len(body["data"]) == len(shipped), "an example file was dropped as invalid: see the server log"
    per_type: dict[str, int] = {}
    for example in body["data"]:
        per_type[example["type"]] = per_type.get(example["type"], 0) + 1
    assert per_type.keys() == {"autonomous", "sequential", "groupchat"}
    assert min(per_type.values()) >= 2, per_type
    assert len({e["name"] for e in body["data"]}) == len(body["data"])
    # The page offers the first one to a new visitor: it must work without a code sandbox.
    assert not _has_key(body["data"][0]["flow_config"], "executor"), body["data"][0]["name"]
    speakers: list[str] = []  # the assistants of the example being run

    def members(value: Any) -> list[str]:
        if isinstance(value, dict):
            own = [value["config"]["name"]] if value.get("type") == "assistant" else []
            return own + [n for v in value.values() for n in members(v)]
        return [n for v in value for n in members(v)] if isinstance(value, list) else []

    # Any speaker selection is answered with a member's name, everything else ends the chat.
    def respond(request: dict[str, Any]) -> str:
        selecting = "select the next role" in json.dumps(request["messages"]).lower()
        return speakers[0] if selecting and speakers else "Noted. TERMINATE"

    llm.responder = respond
    for example in body["data"]:
        assert set(example) == {
            "name",
            "type",
            "description",
            "flow_config",
            "needs_sandbox",
            "sandbox_available",
            "sandbox_fallback",
        }
        assert example["needs_sandbox"] == _has_key(example["flow_config"], "executor"), example["name"]
        assert example["name"] and example["description"]
        flow = example["flow_config"]
        assert flow["type"] == example["type"]
        # They work offline: the server's default model, no endpoint or key of their own.
        assert not _has_key(flow, "config_list"), example["name"]
        created = server.post(
            "/api/sessions",
            {"user_id": user_id, "session": {"user_id": user_id, "flow_config": flow}},
        )
        assert created.status_code == 200, created.text
        if _has_key(flow, "executor"):
            continue  # needs the Docker sandbox: runs in test_code_execution's environment
        speakers[:] = members(flow)
        answered = server.post(
            "/api/messages", {"message": wf.message(user_id, "Ideas for a bike lock?"), "flow_config": flow}
        )
        assert answered.status_code == 200, (example["name"], answered.text)
        assert answered.json()["data"]["metadata"]["status"] == "completed", example["name"]


def test_page_is_served_with_csp_and_sensible_caching(server: RunningServer) -> None:
    page = server.get("/")
    assert page.status_code == 200, "the chat page is not served at /: register autobots.web.pages.bp"
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-cache"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    meta_csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page.text)
    assert meta_csp and "script-src 'self'" in meta_csp.group(1) and "unsafe" not in meta_csp.group(1)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), "no inline script"
    assert not re.search(r"\son[a-z]+=", page.text), "no inline event handlers"

    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert any(a.endswith("app.js") for a in assets)
    for asset in assets:
        response = server.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        if "/vendor/" in asset:
            assert "immutable" in response.headers["Cache-Control"], asset
        else:
            assert response.headers["Cache-Control"] == "no-cache", asset
    module = server.get("/static/js/app.js")
    assert "javascript" in module.headers["Content-Type"]
    again = server.http.get(
        server.url + "/static/js/app.js", headers={"If-None-Match": module.headers["ETag"]}
    )
    assert again.status_code == 304


def test_pages_blueprint_serves_static_files_on_an_app_without_its_own(tmp_path: Path) -> None:
    from flask import Flask

    from autobots.web import pages

    app = Flask("bare", static_folder=None)
    app.register_blueprint(pages.bp)
    client = app.test_client()
    module = client.get("/static/js/app.js")
    assert module.status_code == 200 and module.headers["Cache-Control"] == "no-cache"
    vendor = client.get("/static/vendor/MANIFEST.txt")
    assert vendor.status_code == 200 and "immutable" in vendor.headers["Cache-Control"]
    assert client.get("/static/../pages.py").status_code == 404
    index = client.get("/")
    assert index.status_code == 200 and "Content-Security-Policy" in index.headers


def test_broken_example_files_are_left_out(tmp_path: Path) -> None:
    from autobots.web.pages import EXAMPLES_DIR, load_examples

    for path in EXAMPLES_DIR.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "broken.json").write_text('{"type": "autonomous",')
    (tmp_path / "wrong-type.json").write_text('{"type": "relay", "agents": []}')
    found = load_examples(tmp_path)
    shipped = load_examples(EXAMPLES_DIR)
    assert [e.name for e in found] == [e.name for e in shipped]  # both broken files left out
    assert {e.type for e in found} == {"autonomous", "sequential", "groupchat"}


def test_vendored_libraries_keep_their_licences(server: RunningServer) -> None:
    manifest = server.get("/static/vendor/MANIFEST.txt")
    assert manifest.status_code == 200
    for package in ("marked-", "dompurify-", "highlight-"):
        licence = next(
            line.split()[-1]
            for line in manifest.text.splitlines()
            if f"{package}" in line and line.endswith("LICENSE")
        )
        assert server.get("/static/vendor/" + licence.removeprefix("./")).status_code == 200


# sessions and live runs -------------------------------------------------------------------


def test_first_visit_asks_for_a_user_id_once(browser: Any, server: RunningServer, llm: ScriptedLLM) -> None:
    chat = new_chat_page(browser, server, user_id=None)
    page = chat.page
    try:
        chat.open()
        dialog = page.locator("#user-dialog")
        dialog.wait_for(state="visible")
        page.keyboard.press("Escape")  # cannot be dismissed without an id
        assert dialog.is_visible()
        page.locator("#user-form button[type=submit]").click()
        assert "Enter a user id" in page.locator("#user-error").inner_text()
        page.locator("#user-input").fill("  first-visit@example.com  ")
        page.locator("#user-input").press("Enter")
        dialog.wait_for(state="hidden")
        assert page.locator("#user-id-label").inner_text() == "first-visit@example.com"
        page.reload()
        page.wait_for_selector("#user-id-label:text('first-visit@example.com')")
        assert not page.locator("#user-dialog").is_visible()
    finally:
        page.context.close()
    assert not chat.errors, chat.errors


def test_send_and_watch_agents_answer_live(chat: ChatPage, llm: ScriptedLLM, server: RunningServer) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        system = str(body["messages"][0].get("content", ""))
        if "researcher" in system:
            return Reply("- fact **one**\n- fact two\n\nTERMINATE", delay=1.5)
        return Reply("Here it is:\n\n```python\nprint('hi')\n```\n\nTERMINATE", delay=2.5)

    llm.responder = respond
    page = chat.open().page
    chat.choose_example("Research then write")
    prompt = page.locator("#prompt")
    prompt.fill("first line")
    prompt.press("Shift+Enter")
    prompt.type("second line")
    assert prompt.input_value() == "first line\nsecond line"  # Shift+Enter is a new line, not a send
    prompt.press("Enter")

    live = chat.live_run()
    live.wait_for()
    assert prompt.input_value() == ""
    assert page.locator("#stop").is_visible() and not page.locator("#send").is_visible()
    page.locator("article.msg-user .bubble", has_text="second line").wait_for()
    live.locator(".step[data-sender=researcher]").wait_for()
    # The researcher's message is on screen while the writer is still working: streamed, not at the end.
    run_id = live.get_attribute("data-run-id")
    assert run_id
    assert server.get(f"/api/runs/{run_id}").json()["data"]["status"] in ("running", "queued")
    assert live.locator(".typing").is_visible()
    assert live.locator(".step[data-sender=researcher] strong", has_text="one").count() == 1
    assert live.locator(".live-usage").inner_text().startswith("$")

    answer = chat.wait_for_answer()
    assert chat.live_run().count() == 0
    assert answer.locator(".msg-body > .md .codeblock .hljs").count() == 1  # highlighted
    assert "print('hi')" in answer.locator(".msg-body > .md .codeblock pre").inner_text()
    footer = answer.locator(".usage-line").inner_text()
    assert re.search(r"\$0\.\d+", footer) and "tokens" in footer and "2 LLM calls" in footer
    answer.locator(".steps-details summary").click()
    senders = answer.locator(".steps .step-sender").all_inner_texts()
    assert "researcher" in senders and "writer" in senders
    assert page.locator("#session-totals").is_visible()
    assert page.locator("#send").is_visible() and not page.locator("#stop").is_visible()

    session_id = chat.current_session_id()
    sessions = server.get("/api/sessions", user_id=chat.user_id).json()["data"]
    assert [s["session_id"] for s in sessions] == [session_id]
    assert sessions[0]["name"] == "first line second line"
    assert page.locator(".session-link[aria-current=page]").inner_text().strip() == "first line second line"
    stored = server.get("/api/messages", user_id=chat.user_id, session_id=session_id).json()["data"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    usage = stored[1]["metadata"]["usage"]
    shown = (page.locator("#session-totals .usage-cost").get_attribute("title") or "").split()[0]
    assert Decimal(shown) == Decimal(usage["total_cost_usd"]) > 0

    # A follow-up in the same session, then the history after a reload.
    llm.responder = lambda _body: "Follow-up answer. TERMINATE"
    chat.send("and again")
    chat.wait_for_answer(2)
    page.reload()
    chat.wait_for_answer(2)
    assert page.locator("#thread article.msg-user").count() == 2


def test_switch_sessions_while_a_run_goes_on(chat: ChatPage, llm: ScriptedLLM, server: RunningServer) -> None:
    other = api_session_with_answer(
        server, chat.user_id, wf.autonomous(wf.assistant()), "older question", "Older chat"
    )
    llm.responder = lambda _body: Reply("Slow answer. TERMINATE", delay=2.0)
    page = chat.open().page
    chat.choose_example("General assistant")
    chat.send("a slow one")
    chat.live_run().wait_for()
    running_id = chat.current_session_id()
    page.locator(".session-link", has_text="Older chat").click()
    chat.wait_for_hash(f"#/chat/{other}")
    page.locator("article.msg-user", has_text="older question").wait_for()
    assert page.locator(".session-item.current").get_attribute("data-session-id") == other
    assert page.locator(f".session-item[data-session-id='{running_id}'] .running-dot").count() == 1
    page.locator(f".session-item[data-session-id='{running_id}'] .session-link").click()
    chat.wait_for_hash(f"#/chat/{running_id}")
    page.locator("article.msg-user", has_text="a slow one").wait_for()
    chat.wait_for_answer()
    chat.answers().filter(has_text="Slow answer.").first.wait_for()
    assert "older question" not in page.locator("#thread").inner_text()


def test_reloading_during_a_run_picks_the_stream_up_again(chat: ChatPage, llm: ScriptedLLM) -> None:
    llm.queue(Reply("First part, no end yet.", delay=0.5), Reply("Second part. TERMINATE", delay=3.0))
    page = chat.open().page
    chat.paste_workflow(two_turn_workflow())
    chat.send("tell me in two parts")
    chat.live_run().locator(".step[data-sender=primary_assistant]").wait_for()
    page.reload()
    live = chat.live_run()
    live.wait_for()
    # The events so far are replayed once (not twice), then the run goes on live.
    live.locator(".step[data-sender=primary_assistant]").first.wait_for()
    assert live.locator(".step[data-sender=primary_assistant]").count() == 1
    assert page.locator("#stop").is_visible()
    answer = chat.wait_for_answer()
    assert "Second part." in answer.inner_text()
    assert page.locator("#thread article.msg-user").count() == 1


def test_cancel_a_run(chat: ChatPage, llm: ScriptedLLM, server: RunningServer) -> None:
    llm.responder = lambda _body: Reply("Too late. TERMINATE", delay=8)
    page = chat.open().page
    chat.choose_example("General assistant")
    chat.send("take your time")
    live = chat.live_run()
    live.wait_for()
    run_id = live.get_attribute("data-run-id")
    live.locator(".step").first.wait_for()
    page.locator("#stop").click()
    answer = chat.wait_for_answer()
    assert answer.locator(".badge", has_text="Stopped").count() == 1
    assert server.get(f"/api/runs/{run_id}").json()["data"]["status"] == "cancelled"
    assert page.locator("#send").is_visible() and not page.locator("#stop").is_visible()
    assert page.evaluate("document.activeElement.id") == "prompt"


def test_a_failed_run_says_why_and_can_be_tried_again(
    chat: ChatPage, llm: ScriptedLLM, server: RunningServer
) -> None:
    llm.responder = lambda _body: Reply("upstream exploded", status=500)
    page = chat.open().page
    chat.choose_example("General assistant")
    chat.send("this will fail")
    error = chat.live_run().locator(".run-error")
    error.wait_for()
    assert "upstream exploded" in error.inner_text()
    assert chat.live_run().locator(".run-pill").inner_text() == "Failed"
    assert page.locator("#send").is_visible()
    stored = server.get("/api/messages", user_id=chat.user_id, session_id=chat.current_session_id()).json()[
        "data"
    ]
    assert [m["content"] for m in stored] == ["this will fail"]  # the question is kept

    llm.responder = lambda _body: "Worked this time. TERMINATE"
    error.locator("button.retry").click()
    answer = chat.wait_for_answer()
    assert "Worked this time." in answer.inner_text()
    chat.errors[:] = [e for e in chat.errors if "status of 502" not in e]


def test_answer_a_human_input_prompt(chat: ChatPage, llm: ScriptedLLM) -> None:
    llm.responder = lambda body: (
        "Thanks for the reply. TERMINATE"
        if "my answer is 42" in str(body["messages"][-1])
        else "What number do you pick?"
    )
    flow = wf.autonomous(
        wf.assistant("asker"), sender=wf.userproxy(human_input_mode="ALWAYS", max_consecutive_auto_reply=3)
    )
    page = chat.open().page
    chat.paste_workflow(flow)
    chat.send("let us play")
    card = chat.live_run().locator(".input-card")
    card.wait_for()
    assert page.locator(".run-pill").inner_text() == "Waiting for you"
    assert "reply" in (page.locator("#prompt").get_attribute("placeholder") or "").lower()
    assert page.evaluate("document.activeElement.id") == "prompt"
    chat.send("my answer is 42")
    card.locator(".input-hint", has_text="You replied: my answer is 42").wait_for()
    # AutoGen asks again after the assistant's next message; an empty Enter skips and ends the chat.
    chat.live_run().locator(".input-card").nth(1).wait_for()
    page.locator("#prompt").press("Enter")
    answer = chat.wait_for_answer()
    answer.locator(".steps-details summary").click()
    assert answer.locator(".step", has_text="my answer is 42").count() >= 1
    assert any("my answer is 42" in str(s.body["messages"]) for s in llm.served)


def test_delete_a_session(chat: ChatPage, server: RunningServer, llm: ScriptedLLM) -> None:
    keep = api_session_with_answer(server, chat.user_id, wf.autonomous(wf.assistant()), "keep me", "Keep me")
    gone = api_session_with_answer(
        server, chat.user_id, wf.autonomous(wf.assistant()), "delete me", "Delete me"
    )
    page = chat.open(f"#/chat/{gone}").page
    page.locator("article.msg-user", has_text="delete me").wait_for()
    page.locator(f".session-item[data-session-id='{gone}'] .session-delete").click()
    page.locator("#confirm-dialog").wait_for(state="visible")
    page.locator("#confirm-ok").click()
    page.locator(f".session-item[data-session-id='{gone}']").wait_for(state="detached")
    chat.wait_for_hash("#/")
    ids = [s["session_id"] for s in server.get("/api/sessions", user_id=chat.user_id).json()["data"]]
    assert ids == [keep]


# publishing and the gallery -----------------------------------------------------------------


def test_publish_with_tags_and_read_it_in_the_gallery(
    chat: ChatPage, server: RunningServer, llm: ScriptedLLM
) -> None:
    llm.responder = lambda _body: "The answer is **391**. TERMINATE"
    session_id = api_session_with_answer(
        server, chat.user_id, wf.autonomous(wf.assistant()), "What is 17*23?", "Multiplying"
    )
    tag = f"ui-{uuid.uuid4().hex[:8]}"
    page = chat.open(f"#/chat/{session_id}").page
    chat.wait_for_answer()
    page.locator("#publish").click()
    page.locator("#publish-tags").fill(f"{tag}, maths ,  ")
    page.locator("#publish-submit").click()
    toast = page.locator(".toast", has_text="Published")
    toast.wait_for()
    assert tag in toast.inner_text()

    page.locator("#nav-gallery").click()
    page.locator("#tag-filter").fill(tag)
    page.locator("#tag-filter").press("Enter")
    chat.wait_for_hash(f"#/gallery?tag={tag}")
    page.locator("#gallery-status", has_text=f"1 conversation tagged “{tag}”").wait_for()
    cards = page.locator(".gallery-card")
    assert cards.count() == 1
    assert "Multiplying" in cards.first.inner_text()
    assert page.locator(".tag.active", has_text=tag).count() >= 1

    cards.first.locator("a.stretched").click()
    chat.wait_for_hash("#/gallery/", prefix=True)
    thread = page.locator("#published-thread")
    thread.locator("article.msg-assistant .msg-body > .md strong", has_text="391").wait_for()
    assert thread.locator("article.msg-user", has_text="What is 17*23?").count() == 1
    assert page.locator("#published-banner .badge", has_text="Read-only").is_visible()
    assert {t.strip() for t in page.locator("#published-banner .tag").all_inner_texts()} == {tag, "maths"}
    # Read-only: no composer, no publish or delete, no file links.
    assert not page.locator("#composer").is_visible()
    assert not page.locator("#publish").is_visible()
    assert page.locator("#view-published a[download]").count() == 0

    item_id = page.evaluate("location.hash").removeprefix("#/gallery/")
    item = server.get("/api/gallery", gallery_id=item_id).json()["data"]
    assert sorted(item["tags"]) == sorted([tag, "maths"])


# what an LLM writes never runs ---------------------------------------------------------------


def test_html_and_script_in_replies_render_as_text(
    chat: ChatPage, llm: ScriptedLLM, server: RunningServer
) -> None:
    # Two turns: the first reply is on screen (live) while the second is being written.
    llm.queue(XSS_REPLY.removesuffix(" TERMINATE"), Reply(XSS_REPLY, delay=2.0))
    page = chat.open().page
    chat.paste_workflow(two_turn_workflow())
    chat.send('what does <img src=y onerror="window.__pwned=2"> do?')
    live_step = chat.live_run().locator(".step[data-sender=primary_assistant]")
    live_step.wait_for()
    assert "<script>window.__pwned=1</script>" in live_step.inner_text()
    assert chat.live_run().locator("script, img, [onerror]").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    answer = chat.wait_for_answer()

    def check() -> None:
        assert page.evaluate("typeof window.__pwned") == "undefined"
        thread = page.locator("#thread")
        assert thread.locator("script").count() == 0
        assert thread.locator("img").count() == 0
        assert page.locator("#thread [onerror], #thread [onclick]").count() == 0
        assert page.locator("#thread a[href^='javascript']").count() == 0
        body = chat.answers().first.locator(".msg-body > .md").inner_text()
        assert "<script>window.__pwned=1</script>" in body
        assert '<img src=x onerror="window.__pwned=1">' in body
        assert chat.answers().first.locator(".msg-body > .md strong", has_text="bold").count() == 1
        assert (
            'what does <img src=y onerror="window.__pwned=2"> do?'
            in page.locator("#thread article.msg-user .bubble").inner_text()
        )

    check()
    answer.locator(".steps-details summary").click()
    assert "<script>" in answer.locator(".steps").inner_text()
    page.reload()
    chat.wait_for_answer()
    page.wait_for_timeout(300)  # any onerror would have fired by now
    check()


def test_streamed_tokens_show_as_plain_text_while_written(chat: ChatPage, llm: ScriptedLLM) -> None:
    llm.responder = lambda _body: Reply(
        'alpha beta <img src=x onerror="window.__pwned=3"> gamma TERMINATE', delay=0.5
    )
    flow = wf.autonomous(wf.assistant(llm_config={"config_list": [{"model": "gpt-4o-mini"}], "stream": True}))
    page = chat.open().page
    chat.paste_workflow(flow)
    page.evaluate(
        """() => {
          window.__streamed = "";
          new MutationObserver(() => {
            const s = document.querySelector(".streaming");
            if (s && s.textContent.length > window.__streamed.length) window.__streamed = s.textContent;
          }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    chat.send("stream it")
    answer = chat.wait_for_answer()
    streamed = page.evaluate("window.__streamed")
    assert streamed.startswith("alpha beta <img src=x"), streamed
    assert page.locator(".streaming").count() == 0
    assert "gamma" in answer.inner_text()
    assert page.evaluate("typeof window.__pwned") == "undefined"


# workflow JSON ---------------------------------------------------------------------------------


def test_invalid_workflow_json_is_explained(
    browser: Any, server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    chat = new_chat_page(browser, server, user_id)
    page = chat.open().page
    try:
        chat.paste_workflow('{"type": "autonomous",\n  "agents": [}')
        error = page.locator("#workflow-json-error")
        error.wait_for()
        page.locator("#workflow-json-error", has_text="line 2").wait_for()
        assert error.inner_text().startswith("Not valid JSON at line 2, column")
        assert page.locator("#workflow-json").get_attribute("aria-invalid") == "true"
        chat.send("hello")
        assert page.locator("#prompt").input_value() == "hello"  # nothing was sent
        assert server.get("/api/sessions", user_id=user_id).json()["data"] == []

        chat.paste_workflow({"type": "relay", "agents": []})
        page.locator("#workflow-json-error", has_text="flow_config.type").wait_for()
        assert "autonomous, sequential, groupchat" in error.inner_text()

        # Well-formed, but the server refuses it: its message, naming the field, is shown.
        bad = wf.autonomous(wf.assistant(llm_config={"config_list": [{"model": "m"}], "temperature": 7}))
        chat.paste_workflow(bad)
        page.locator("#workflow-json-status", has_text="Valid workflow").wait_for()
        chat.send("hello")
        page.locator("#workflow-json-error", has_text="temperature").wait_for()
        assert "flow_config" in error.inner_text()
        assert page.evaluate("location.hash") in ("", "#/")
        assert server.get("/api/sessions", user_id=user_id).json()["data"] == []

        # Uploading a file fills the editor.
        good = wf.autonomous(wf.assistant("uploaded_helper"))
        page.locator("#workflow-file").set_input_files(
            files=[{"name": "team.json", "mimeType": "application/json", "buffer": json.dumps(good).encode()}]
        )
        page.locator("#workflow-json-status", has_text="Valid workflow").wait_for()
        assert "uploaded_helper" in page.locator("#workflow-json").input_value()
        assert page.locator("#workflow-json-status").inner_text().startswith("Valid workflow")
    finally:
        page.context.close()
    unexpected = [e for e in chat.errors if "status of 400" not in e]
    assert not unexpected, unexpected


# phone width -----------------------------------------------------------------------------------


def test_phone_width_has_no_horizontal_scroll(
    browser: Any, server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    wide = (
        "A long line: "
        + "x" * 400
        + "\n\n```python\n"
        + "print('"
        + "y" * 300
        + "')\n```\n\n| a | b | c | d |\n|---|---|---|---|\n"
        + "| "
        + " | ".join(["wide-cell-" * 8] * 4)
        + " |\n\nTERMINATE"
    )
    llm.responder = lambda _body: wide
    session_id = api_session_with_answer(
        server,
        user_id,
        wf.autonomous(wf.assistant()),
        "w" * 300,
        "A wide chat with a very long name that cannot fit on a phone",
    )
    chat = new_chat_page(browser, server, user_id, viewport=PHONE)
    page = chat.open().page
    try:
        page.locator(".picker-card").first.wait_for()
        assert all(v <= 0 for v in chat.horizontal_overflow().values()), chat.horizontal_overflow()
        assert not page.locator("#sidebar").is_visible()

        page.locator("#open-sidebar").click()
        page.locator(f".session-item[data-session-id='{session_id}'] .session-link").click()
        chat.wait_for_answer()
        assert not page.locator("#sidebar").is_visible()
        page.locator(".usage-details summary").click()
        page.locator(".steps-details summary").click()
        overflow = chat.horizontal_overflow()
        assert all(v <= 0 for v in overflow.values()), overflow
        box = page.locator("#composer").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        assert page.locator("#send").is_visible()

        page.goto(server.url + "/#/gallery")
        page.locator("#tag-filter").wait_for()
        assert all(v <= 0 for v in chat.horizontal_overflow().values()), chat.horizontal_overflow()
    finally:
        page.context.close()
    assert not chat.errors, chat.errors


def test_a_sidebar_opened_while_the_chats_load_stays_open(
    browser: Any, server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    """On a phone, someone who opens the sidebar before their chats have arrived (a slow
    connection) keeps it open when they arrive; the page's first view used to close it."""
    llm.responder = lambda _body: "Hi. TERMINATE"
    session_id = api_session_with_answer(server, user_id, wf.autonomous(wf.assistant()), "hi", "Slow list")
    chat = new_chat_page(browser, server, user_id, viewport=PHONE)
    page = chat.page
    arrived: list[bool] = []

    def slow_sessions(route: Any) -> None:
        response = route.fetch()  # the server's real answer, handed over 1.5 s late
        page.wait_for_timeout(1500)
        route.fulfill(response=response)
        arrived.append(True)

    page.route(re.compile(r".*/api/sessions(\?.*)?$"), slow_sessions)
    try:
        chat.open()
        page.locator("#open-sidebar").click()
        link = page.locator(f".session-item[data-session-id='{session_id}'] .session-link")
        link.wait_for(state="visible")
        page.wait_for_timeout(500)  # the first view, shown once the chats arrived
        assert arrived and page.locator("#sidebar").is_visible() and link.is_visible()
        link.click()
        chat.wait_for_answer()
        assert not page.locator("#sidebar").is_visible()  # navigating still closes it
    finally:
        page.context.close()
    assert not chat.errors, chat.errors


def test_laptop_and_phone_screenshots(
    browser: Any, server: RunningServer, llm: ScriptedLLM, user_id: str, tmp_path: Any
) -> None:
    """The page renders at both sizes (the PNGs are kept in the test's tmp dir for a person to look at)."""
    llm.responder = lambda _body: "Here:\n\n```js\nconsole.log(1)\n```\n\nTERMINATE"
    session_id = api_session_with_answer(
        server, user_id, wf.autonomous(wf.assistant()), "Show me code", "Code please"
    )
    for name, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        chat = new_chat_page(browser, server, user_id, viewport=viewport)
        page = chat.open(f"#/chat/{session_id}").page
        try:
            chat.wait_for_answer()
            path = tmp_path / f"chat-{name}.png"
            page.screenshot(path=str(path))
            assert path.stat().st_size > 10_000
        finally:
            page.context.close()
        assert not chat.errors, chat.errors
