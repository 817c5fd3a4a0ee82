// One chat message as DOM: the user's question, the team's answer with what each agent said,
// its cost and timing, and the files its code wrote.

import { api } from "./api.js";
import { avatar, copyText, h, icon } from "./dom.js";
import { addDecimals, bytes, costString, dateTime, duration, plural, timeOfDay, tokens, usd } from "./format.js";
import { renderMarkdown, renderPlain } from "./markdown.js";
import { codeRunPanel, shownText, shownTurns } from "./transcript.js";

const TEAM = "ab";

function time(value) {
  const text = timeOfDay(value);
  return text ? h("time", { datetime: String(value), title: dateTime(value) }, text) : null;
}

export function userMessage(msg, { pending = false } = {}) {
  return h(
    "article",
    { class: `msg msg-user${pending ? " pending" : ""}`, "data-msg-id": msg.msg_id || null, "aria-label": "You said" },
    h("div", { class: "bubble" }, renderPlain(msg.content)),
    h("div", { class: "msg-meta" }, time(msg.timestamp)),
  );
}

/** A note under the user's message when the server refused it. */
export function userMessageError(article, message) {
  article.classList.remove("pending");
  article.classList.add("failed");
  article.append(h("p", { class: "msg-error", role: "alert" }, icon("close"), h("span", {}, `Not sent: ${message}`)));
}

/** One thing an agent said, as part of the agents' conversation. */
export function step(m) {
  const usage = m.usage && (m.usage.total_tokens || m.usage.llm_calls) ? m.usage : null;
  return h(
    "li",
    { class: "step", "data-sender": m.sender || "" },
    avatar(m.sender || "?", "small"),
    h(
      "div",
      { class: "step-main" },
      h(
        "div",
        { class: "step-head" },
        h("span", { class: "step-sender" }, m.sender || "agent"),
        m.recipient ? h("span", { class: "step-to" }, `to ${m.recipient}`) : null,
        usage ? h("span", { class: "step-usage", title: `${costString(usage)} USD` }, `${tokens(usage.total_tokens)} · ${usd(costString(usage))}`) : null,
        time(m.timestamp),
      ),
      shownText(m.content).trim() ? renderMarkdown(shownText(m.content), "step-body") : h("p", { class: "step-body step-empty" }, "(empty message)"),
    ),
  );
}

function usageTable(title, rows) {
  const entries = Object.entries(rows || {});
  if (!entries.length) return null;
  return h(
    "table",
    { class: "usage-table" },
    h("caption", {}, title),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, title === "By agent" ? "Agent" : "Model"), h("th", { scope: "col" }, "Calls"), h("th", { scope: "col" }, "Tokens in / out"), h("th", { scope: "col" }, "Cost"))),
    h(
      "tbody",
      {},
      entries.map(([name, u]) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, name),
          h("td", {}, String(u.calls ?? u.llm_calls ?? 0)),
          h("td", {}, `${(u.prompt_tokens ?? 0).toLocaleString("en-US")} / ${(u.completion_tokens ?? 0).toLocaleString("en-US")}`),
          h("td", { title: `${costString(u)} USD` }, usd(costString(u))),
        ),
      ),
    ),
  );
}

/** "$0.0012 · 1,234 tokens · 3 LLM calls · 4.2 s", with the breakdown in a disclosure. */
export function usageFooter(meta, content) {
  const usage = meta?.usage || {};
  const timing = meta?.timing || {};
  const cost = costString(usage);
  const parts = [
    h("span", { class: "usage-cost", title: `${cost} USD exactly` }, usd(cost)),
    h("span", {}, tokens(usage.total_tokens)),
    h("span", {}, plural(usage.llm_calls ?? 0, "LLM call")),
  ];
  if (timing.duration_s != null) parts.push(h("span", { class: "usage-time" }, duration(timing.duration_s)));
  const details = h(
    "details",
    { class: "usage-details" },
    h("summary", {}, "Details"),
    h(
      "div",
      { class: "usage-details-body" },
      h("p", {}, `${(usage.prompt_tokens ?? 0).toLocaleString("en-US")} prompt + ${(usage.completion_tokens ?? 0).toLocaleString("en-US")} completion tokens` + (usage.cached_calls ? ` · ${plural(usage.cached_calls, "cached call")}` : "") + (usage.failed_calls ? ` · ${plural(usage.failed_calls, "failed call")}` : "")),
      timing.start ? h("p", {}, `Started ${dateTime(timing.start)}${timing.duration_s != null ? `, took ${duration(timing.duration_s)}` : ""}`) : null,
      usageTable("By agent", usage.per_agent),
      usageTable("By model", usage.per_model),
      meta?.models?.answered?.length ? h("p", {}, `Models that answered: ${meta.models.answered.join(", ")}`) : null,
      (usage.cost_notes || []).map((note) => h("p", { class: "note" }, note)),
    ),
  );
  const copy = h("button", { type: "button", class: "icon-btn small", "aria-label": "Copy answer", title: "Copy answer" }, icon("copy", "when-idle"), icon("check", "when-copied"));
  copy.addEventListener("click", () => copyText(content ?? "", copy));
  return h("footer", { class: "msg-foot" }, h("p", { class: "usage-line" }, parts), copy, details);
}

function filesList(files, ctx) {
  if (!files?.length) return null;
  return h(
    "div",
    { class: "files" },
    h("p", { class: "files-title" }, plural(files.length, "file"), " written by the code"),
    h(
      "ul",
      {},
      files.map((f) => {
        const label = [icon("file"), h("span", { class: "file-name" }, f.name), h("span", { class: "file-size" }, bytes(f.size))];
        const canLink = !ctx.readOnly && ctx.userId && ctx.sessionId;
        return h("li", {}, canLink ? h("a", { href: api.fileUrl(ctx.userId, ctx.sessionId, f.name), download: f.name.split("/").pop() }, label) : h("span", { class: "file-link" }, label));
      }),
    ),
  );
}

export function statusBadges(meta) {
  const badges = [];
  if (meta?.status === "cancelled") badges.push(h("span", { class: "badge badge-warn" }, "Stopped"));
  if (meta?.limit_reached) {
    badges.push(h("span", { class: "badge badge-warn", title: meta.limit_reached.detail || "" }, `Limit reached: ${String(meta.limit_reached.kind || "").replaceAll("_", " ")}`));
  }
  return badges;
}

/** The conversation the agents had, folded under the answer. */
export function stepsDisclosure(messages, { open = false } = {}) {
  const steps = shownTurns(messages);
  if (!steps.length) return null;
  const details = h(
    "details",
    { class: "steps-details" },
    h("summary", {}, icon("chat"), h("span", {}, `Agent conversation · ${plural(steps.length, "message")}`)),
    h("ol", { class: "steps" }, steps.map(step)),
  );
  details.open = open;
  return details;
}

/** What the server says about how the answer was made (a stand-in model, the local sandbox
 * running code that asked for Docker), in plain sight under the answer. */
function answerNotes(meta) {
  const notes = meta?.models?.notes || [];
  if (!notes.length) return null;
  return h("ul", { class: "answer-notes" }, notes.map((note) => h("li", {}, note)));
}

/** The team's answer. ctx: {userId, sessionId, readOnly, runsCode}. */
export function assistantMessage(msg, ctx = {}) {
  const meta = msg.metadata || {};
  const author = meta.workflow?.name || "Agents";
  return h(
    "article",
    { class: "msg msg-assistant", "data-msg-id": msg.msg_id || null, "aria-label": `${author} answered` },
    h("div", { class: "msg-head" }, avatar(TEAM, "team"), h("span", { class: "msg-author" }, author), statusBadges(meta), time(msg.timestamp)),
    h("div", { class: "msg-body" }, renderMarkdown(msg.content), codeRunPanel(meta.messages, ctx.runsCode), answerNotes(meta), filesList(meta.files, ctx), stepsDisclosure(meta.messages)),
    usageFooter(meta, msg.content),
  );
}

export function renderMessage(msg, ctx) {
  return msg.role === "assistant" ? assistantMessage(msg, ctx) : userMessage(msg);
}

/** Cost, tokens, calls and time of a session: the sum of its answers. */
export function sessionTotals(messages) {
  const answers = messages.filter((m) => m.role === "assistant" && m.metadata);
  return {
    answers: answers.length,
    cost: addDecimals(answers.map((m) => costString(m.metadata.usage))),
    tokens: answers.reduce((n, m) => n + (m.metadata.usage?.total_tokens || 0), 0),
    calls: answers.reduce((n, m) => n + (m.metadata.usage?.llm_calls || 0), 0),
    seconds: answers.reduce((n, m) => n + (Number(m.metadata.timing?.duration_s) || 0), 0),
  };
}
