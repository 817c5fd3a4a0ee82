// The list of the person's chats, newest first, grouped by day, with a delete button on each.

import { $, h, icon } from "./dom.js";
import { dayGroup, timeOfDay, truncate } from "./format.js";

export function sessionTitle(session) {
  if (!session) return "New chat";
  if (session.name) return truncate(session.name, 80);
  const flow = session.flow_config?.name || "Chat";
  const at = timeOfDay(session.timestamp);
  return at ? `${flow} · ${at}` : flow;
}

/** Titles that tell chats apart: a repeated first question gets its time, then a number. */
export function distinctTitles(sessions) {
  const count = (titles) => titles.reduce((m, t) => m.set(t, (m.get(t) || 0) + 1), new Map());
  let titles = sessions.map(sessionTitle);
  const base = count(titles);
  titles = titles.map((t, i) => {
    const at = timeOfDay(sessions[i].timestamp);
    return base.get(t) > 1 && at ? `${t} · ${at}` : t;
  });
  const timed = count(titles);
  const seen = new Map();
  return titles.map((t) => {
    if (timed.get(t) < 2) return t;
    const n = (seen.get(t) || 0) + 1;
    seen.set(t, n);
    return n === 1 ? t : `${t} (${n})`;
  });
}

/**
 * sessions: newest first. running: Set of session ids with a live run.
 * onDelete(session) is called when a delete button is pressed.
 */
export function renderSessionList({ sessions, current, running, error, onDelete }) {
  const root = $("#session-list");
  if (error) {
    root.replaceChildren(h("p", { class: "sidebar-note", role: "alert" }, `Could not load your chats: ${error}`));
    return;
  }
  if (!sessions.length) {
    root.replaceChildren(h("p", { class: "sidebar-note" }, "No chats yet. Start one with New chat."));
    return;
  }
  const titles = new Map(distinctTitles(sessions).map((t, i) => [sessions[i].session_id, t]));
  const groups = new Map();
  for (const s of sessions) {
    const label = dayGroup(s.timestamp);
    if (!groups.has(label)) groups.set(label, []);
    groups.get(label).push(s);
  }
  const children = [];
  for (const [label, items] of groups) {
    const id = `group-${children.length}`;
    children.push(
      h("h3", { class: "session-group", id }, label),
      h(
        "ul",
        { class: "session-items", "aria-labelledby": id },
        items.map((s) => {
          const title = titles.get(s.session_id);
          const isCurrent = s.session_id === current;
          const isRunning = running.has(s.session_id);
          const del = h("button", { type: "button", class: "icon-btn small session-delete", "aria-label": `Delete chat “${title}”`, title: "Delete chat" }, icon("trash"));
          del.addEventListener("click", () => onDelete(s));
          return h(
            "li",
            { class: `session-item${isCurrent ? " current" : ""}`, "data-session-id": s.session_id },
            h(
              "a",
              { class: "session-link", href: `#/chat/${encodeURIComponent(s.session_id)}`, "aria-current": isCurrent ? "page" : null, title },
              h("span", { class: "session-title" }, title),
              isRunning ? h("span", { class: "running-dot", title: "Agents are answering" }, h("span", { class: "visually-hidden" }, "(answering)")) : null,
            ),
            del,
          );
        }),
      ),
    );
  }
  root.replaceChildren(...children);
}
