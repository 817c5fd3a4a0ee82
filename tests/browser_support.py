"""Driving the chat page in a real headless Chromium (Debian's), through Playwright.

No browser is ever downloaded: Playwright launches /usr/bin/chromium. Without it (or without the
playwright package) the browser tests skip with the reason, unless AUTOBOTS_REQUIRE_BROWSER=1,
when they fail instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import RunningServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 30_000


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -r requirements-dev.txt"
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("AUTOBOTS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"AUTOBOTS_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def launch_browser() -> Iterator[Any]:
    reason = browser_missing()
    if reason:
        skip_or_fail(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class ChatPage:
    """One browser tab on the chat page, with what the page logged."""

    page: Any
    server: RunningServer
    user_id: str | None
    errors: list[str] = field(default_factory=list)

    def open(self, route: str = "") -> ChatPage:
        self.page.goto(self.server.url + "/" + route)
        self.page.wait_for_selector("#app")
        return self

    # composer -----------------------------------------------------------------------------

    def type_message(self, text: str) -> None:
        self.page.locator("#prompt").fill(text)

    def send(self, text: str) -> None:
        self.type_message(text)
        self.page.locator("#prompt").press("Enter")

    def choose_example(self, name: str) -> None:
        self.page.locator("label.picker-card", has_text=name).click()

    def paste_workflow(self, flow: dict[str, Any] | str) -> None:
        self.page.locator("label.picker-card", has_text="Your own workflow").click()
        text = flow if isinstance(flow, str) else json.dumps(flow, indent=2)
        self.page.locator("#workflow-json").fill(text)

    # reading --------------------------------------------------------------------------------

    def live_run(self) -> Any:
        return self.page.locator("article.msg-assistant.live")

    def answers(self) -> Any:
        return self.page.locator("#thread article.msg-assistant:not(.live)")

    def wait_for_answer(self, count: int = 1) -> Any:
        answers = self.answers()
        answers.nth(count - 1).wait_for(timeout=TIMEOUT_MS)
        return answers.nth(count - 1)

    def wait_for_hash(self, expected: str, prefix: bool = False) -> None:
        # A Python predicate: the page's CSP forbids the eval that a JS predicate would need.
        def matches(url: str) -> bool:
            hash_ = "#" + url.partition("#")[2] if "#" in url else ""
            return hash_.startswith(expected) if prefix else hash_ == expected

        self.page.wait_for_url(matches)

    def current_session_id(self) -> str:
        hash_ = self.page.evaluate("location.hash")
        assert hash_.startswith("#/chat/"), hash_
        return hash_.removeprefix("#/chat/")

    def horizontal_overflow(self) -> dict[str, int]:
        """Width beyond the viewport of the page and of every scrolling pane (0 = none)."""
        return self.page.evaluate(
            """() => {
              const out = {page: document.documentElement.scrollWidth - document.documentElement.clientWidth};
              for (const el of document.querySelectorAll('.scroller, .thread, .composer-wrap, .topbar')) {
                if (el.offsetParent === null) continue;
                out[(el.id || el.className).slice(0, 40)] = el.scrollWidth - el.clientWidth;
              }
              return out;
            }"""
        )


def new_chat_page(
    browser: Any, server: RunningServer, user_id: str | None, viewport: dict[str, int] = LAPTOP
) -> ChatPage:
    context = browser.new_context(viewport=viewport, color_scheme="light", service_workers="block")
    context.set_default_timeout(TIMEOUT_MS)
    if user_id is not None:
        context.add_init_script(f"localStorage.setItem('autobots.user_id', {json.dumps(user_id)})")
    page = context.new_page()
    chat = ChatPage(page, server, user_id)
    page.on("pageerror", lambda exc: chat.errors.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: chat.errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
    )
    return chat


def api_session_with_answer(
    server: RunningServer, user_id: str, flow: dict[str, Any], content: str, name: str | None = None
) -> str:
    """A session with one question and its answer, made through the blocking API."""
    import uuid

    session_id = str(uuid.uuid4())
    created = server.post(
        "/api/sessions",
        {
            "user_id": user_id,
            "session": {"user_id": user_id, "session_id": session_id, "flow_config": flow, "name": name},
        },
    )
    assert created.status_code == 200, created.text
    answered = server.post(
        "/api/messages",
        {
            "message": {"user_id": user_id, "session_id": session_id, "role": "user", "content": content},
            "flow_config": flow,
        },
    )
    assert answered.status_code == 200, answered.text
    return session_id


def two_turn_workflow() -> dict[str, Any]:
    """The "General assistant" example whose user proxy answers a reply without TERMINATE with
    "Go on.": a run that goes on for a second turn, so a test can watch it while it is live (the
    example's own proxy, which has nothing to add, ends the chat after one reply)."""
    path = Path(__file__).resolve().parents[1] / "src" / "web" / "examples" / "autonomous.json"
    flow: dict[str, Any] = json.loads(path.read_text())
    flow["name"] = "Two turns"
    for spec in [flow["sender"], *(a["agent"] for a in flow["agents"])]:
        if spec["type"] == "userproxy":
            spec["config"]["default_auto_reply"] = "Go on."
    return flow
