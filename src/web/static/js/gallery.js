// The gallery: published conversations, found by tag, each readable (not writable) by anyone.

import { api } from "./api.js";
import { $, h, icon } from "./dom.js";
import { dateTime, duration, plural, tokens, truncate, usd } from "./format.js";
import { renderMarkdown } from "./markdown.js";
import { renderMessage, sessionTotals } from "./messages.js";

export function galleryTitle(item) {
  const firstQuestion = item.messages?.find((m) => m.role === "user")?.content;
  return truncate(item.session?.name || firstQuestion || item.session?.flow_config?.name || "Conversation", 90);
}

/** What an answer says, as plain text: code blocks shortened, markdown rendered (safely) and read back. */
function plainExcerpt(markdown) {
  const withoutCode = String(markdown).replace(/```[\s\S]*?(```|$)/g, " [code] ");
  return renderMarkdown(withoutCode.slice(0, 2000)).textContent;
}

export const galleryHash = (tag) => (tag ? `#/gallery?tag=${encodeURIComponent(tag)}` : "#/gallery");

function tagChip(tag, { active = false, link = true } = {}) {
  if (!link) return h("span", { class: "tag" }, icon("tag"), tag);
  return h("a", { class: `tag${active ? " active" : ""}`, href: galleryHash(active ? "" : tag), "aria-current": active ? "true" : null }, icon("tag"), tag);
}

function card(item, activeTag) {
  const answer = item.messages?.find((m) => m.role === "assistant")?.content;
  const totals = sessionTotals(item.messages || []);
  const flow = item.session?.flow_config || {};
  return h(
    "li",
    { class: "gallery-item" },
    h(
      "article",
      { class: "gallery-card" },
      h("h2", { class: "gallery-card-title" }, h("a", { href: `#/gallery/${encodeURIComponent(item.id)}`, class: "stretched" }, galleryTitle(item))),
      answer ? h("p", { class: "gallery-excerpt" }, truncate(plainExcerpt(answer), 180)) : null,
      h(
        "p",
        { class: "gallery-meta" },
        flow.type ? h("span", { class: `badge badge-type type-${flow.type}` }, flow.type) : null,
        h("span", {}, plural(item.message_count ?? item.messages?.length ?? 0, "message")),
        totals.answers ? h("span", {}, usd(totals.cost)) : null,
        h("time", { datetime: item.timestamp }, dateTime(item.timestamp)),
      ),
      item.tags?.length ? h("p", { class: "tags" }, item.tags.map((t) => tagChip(t, { active: t === activeTag }))) : null,
    ),
  );
}

export class GalleryView {
  constructor() {
    this.list = $("#gallery-list");
    this.status = $("#gallery-status");
    this.chips = $("#tag-chips");
    this.input = $("#tag-filter");
    this.options = $("#tag-options");
    this.allTags = [];
    $("#gallery-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = galleryHash(this.input.value.trim());
    });
  }

  async show(tag) {
    // Only the newest request may render: a slower answer to an earlier filter must not
    // overwrite the list the person asked for last.
    const request = (this.request = Symbol("gallery"));
    this.input.value = tag || "";
    this.status.textContent = "Loading…";
    this.list.replaceChildren();
    this.showMore(tag, null, request);
    try {
      // The tag chips come from the newest page of the whole gallery (not from every item).
      const [page, all] = await Promise.all([api.gallery(tag), tag ? api.gallery() : null]);
      if (this.request !== request) return;
      const items = page.items;
      this.allTags = [...new Set((all || page).items.flatMap((i) => i.tags || []))].sort((a, b) => a.localeCompare(b));
      this.renderTags(tag);
      this.list.replaceChildren(...items.map((i) => card(i, tag)));
      this.showMore(tag, page.next, request);
      const more = page.next ? " (the newest; more below)" : "";
      if (items.length) this.status.textContent = (tag ? `${plural(items.length, "conversation")} tagged “${tag}”` : `${plural(items.length, "published conversation")}`) + more;
      else this.status.textContent = tag ? `Nothing is tagged “${tag}” yet.` : "Nothing has been published yet. Open a chat and choose Publish to share it here.";
    } catch (err) {
      if (this.request !== request) return;
      this.status.textContent = `Could not load the gallery: ${err.message}`;
    }
  }

  /** A "Show more" button after the list while the gallery has another page. */
  showMore(tag, cursor, request) {
    this.more?.remove();
    this.more = null;
    if (!cursor) return;
    const button = h("button", { type: "button", class: "btn gallery-more" }, "Show more");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const page = await api.gallery(tag, cursor);
        if (this.request !== request) return;
        this.list.append(...page.items.map((i) => card(i, tag)));
        this.showMore(tag, page.next, request);
      } catch (err) {
        button.disabled = false;
        this.status.textContent = `Could not load more: ${err.message}`;
      }
    });
    this.more = button;
    this.list.after(button);
  }

  renderTags(active) {
    this.options.replaceChildren(...this.allTags.map((t) => h("option", { value: t })));
    const chips = this.allTags.map((t) => tagChip(t, { active: t === active }));
    if (active) chips.unshift(h("a", { class: "tag tag-all", href: galleryHash("") }, "All"));
    this.chips.replaceChildren(...chips);
    this.chips.hidden = !chips.length;
  }
}

/** A published conversation, read-only. Returns its title. */
export async function showPublished(id, { banner, thread }) {
  banner.replaceChildren(h("p", {}, "Loading…"));
  thread.replaceChildren();
  let item;
  try {
    item = await api.galleryItem(id);
  } catch (err) {
    banner.replaceChildren(h("p", { class: "field-error", role: "alert" }, err.status === 404 ? "This published conversation does not exist." : `Could not load it: ${err.message}`), h("a", { href: "#/gallery", class: "btn" }, "Back to the gallery"));
    return "Not found";
  }
  const totals = sessionTotals(item.messages || []);
  const flow = item.session?.flow_config || {};
  banner.replaceChildren(
    h("a", { href: "#/gallery", class: "back-link" }, "← Gallery"),
    h(
      "p",
      { class: "readonly-note" },
      h("span", { class: "badge" }, "Read-only"),
      ` Published${item.publisher ? ` by ${item.publisher}` : ""} ${dateTime(item.timestamp)}`,
      flow.name ? ` · ${flow.name}` : "",
      flow.type ? ` (${flow.type})` : "",
    ),
    totals.answers ? h("p", { class: "readonly-note" }, `${usd(totals.cost)} · ${tokens(totals.tokens)} · ${plural(totals.calls, "LLM call")} · ${duration(totals.seconds)}`) : null,
    item.tags?.length ? h("p", { class: "tags" }, item.tags.map((t) => tagChip(t))) : null,
  );
  const ctx = { readOnly: true };
  thread.replaceChildren(...(item.messages || []).map((m) => renderMessage(m, ctx)));
  if (!item.messages?.length) thread.append(h("p", { class: "empty-note" }, "This conversation has no messages."));
  return galleryTitle(item);
}
