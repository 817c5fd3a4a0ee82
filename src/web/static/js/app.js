// The chat page: routes (#/, #/chat/<id>, #/gallery[?tag=], #/gallery/<id>), the person's chats,
// the composer, live runs, publishing. No framework: state here, DOM built by the other modules.

import { api } from "./api.js";
import { Auth } from "./auth.js";
import { $, h, uuid4 } from "./dom.js";
import { duration, plural, tokens, truncate, usd } from "./format.js";
import { GalleryView, showPublished } from "./gallery.js";
import { assistantMessage, renderMessage, sessionTotals, userMessage, userMessageError } from "./messages.js";
import { RunView, TERMINAL } from "./run.js";
import { renderSessionList, sessionTitle } from "./sidebar.js";
import { flowRunsCode } from "./transcript.js";
import { WorkflowPicker, describeFlow, forgetGivenFlow, givenFlow, installWorkflowDialog, rememberGivenFlow } from "./workflows.js";
import { SavedWorkflows } from "./saved_workflows.js";

const runKey = (sessionId) => `autobots.run.${sessionId}`;

const state = {
  userId: "",
  sessions: [],
  sessionsError: null,
  sessionsLoaded: null,
  view: null,
  current: null,
  messages: [],
  runs: new Map(),
  sending: false,
  loadSeq: 0,
};

const el = {
  app: $("#app"),
  sidebar: $("#sidebar"),
  scrim: $("#scrim"),
  openSidebar: $("#open-sidebar"),
  title: $("#view-title"),
  subtitle: $("#view-subtitle"),
  totals: $("#session-totals"),
  showWorkflow: $("#show-workflow"),
  publish: $("#publish"),
  viewChat: $("#view-chat"),
  viewGallery: $("#view-gallery"),
  viewPublished: $("#view-published"),
  scroller: $("#scroller"),
  thread: $("#thread"),
  jump: $("#jump-latest"),
  composer: $("#composer"),
  prompt: $("#prompt"),
  promptLabel: $("#prompt-label"),
  send: $("#send"),
  stop: $("#stop"),
  toasts: $("#toasts"),
};

const picker = new WorkflowPicker();
const savedWorkflows = new SavedWorkflows(picker);
const gallery = new GalleryView();
const welcome = h(
  "div",
  { class: "welcome", id: "welcome" },
  h("div", { class: "welcome-mark", "aria-hidden": "true" }, "ab"),
  h("h2", { class: "welcome-title" }, "What should the agents do?"),
  h("p", { class: "welcome-text" }, "Pick a team, then send a message. You will see each agent's messages as they arrive, with the cost and time of every answer."),
  picker.el,
  savedWorkflows.el,
);
el.scroller.insertBefore(welcome, el.thread);

// toasts ------------------------------------------------------------------------------------

function toast(message, { error = false, link = null } = {}) {
  const item = h("div", { class: `toast${error ? " toast-error" : ""}`, role: error ? "alert" : null }, h("span", {}, message));
  if (link) item.append(h("a", { href: link.href, class: "toast-link" }, link.label));
  const close = h("button", { type: "button", class: "icon-btn small", "aria-label": "Dismiss" }, "×");
  close.addEventListener("click", () => item.remove());
  item.append(close);
  el.toasts.append(item);
  setTimeout(() => item.remove(), error ? 9000 : 6000);
}

// who uses the page (auth.js: the user-id dialog, or signing in and out) ----------------------

const auth = new Auth({ onUser: switchUser, toast });
let started = false;

async function switchUser(userId) {
  const previous = state.userId;
  state.userId = userId;
  if (userId && !examplesLoaded) loadExamples();
  else if (userId && userId !== previous) savedWorkflows.load(userId);
  if (started && userId === previous) return;
  if (started) forgetChats();
  started = true;
  await loadSessions();
  if (previous && location.hash.startsWith("#/chat/")) location.hash = "#/";
  else route();
}

/** Another user (or nobody, signed out): nothing of the last one's chats stays on the page. */
function forgetChats() {
  for (const run of state.runs.values()) run.cleanup();
  state.runs.clear();
  Object.keys(sessionStorage).filter((k) => k.startsWith(runKey(""))).forEach((k) => sessionStorage.removeItem(k));
  Object.assign(state, { sessions: [], sessionsError: null, sessionsLoaded: null, current: null, messages: [] });
}

// sessions ----------------------------------------------------------------------------------

async function loadSessions() {
  if (!state.userId) return;
  const userId = state.userId;
  const job = (async () => {
    try {
      const sessions = await api.sessions(userId);
      if (userId === state.userId) [state.sessions, state.sessionsError] = [sessions, null]; // not signed out meanwhile
    } catch (err) {
      if (userId === state.userId) state.sessionsError = err.message;
    }
    renderSidebar();
  })();
  state.sessionsLoaded = job;
  await job;
}

function findSession(id) {
  return state.sessions.find((s) => s.session_id === id) || null;
}

function renderSidebar() {
  const running = new Set([...state.runs].filter(([, run]) => run.active).map(([id]) => id));
  renderSessionList({ sessions: state.sessions, current: state.view === "chat" ? state.current : null, running, error: state.sessionsError, onDelete: deleteSession });
  $("#nav-new").setAttribute("aria-current", state.view === "chat" && !state.current ? "page" : "false");
  $("#nav-gallery").setAttribute("aria-current", state.view === "gallery" || state.view === "published" ? "page" : "false");
}

const confirmDialog = $("#confirm-dialog");
function confirmAction(title, text, okLabel) {
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  confirmDialog.returnValue = "";
  confirmDialog.showModal();
  return new Promise((resolve) => confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue === "ok"), { once: true }));
}

async function deleteSession(session) {
  const title = sessionTitle(session);
  if (!(await confirmAction("Delete this chat?", `“${title}” and its messages will be deleted. Copies published to the gallery stay.`, "Delete"))) return;
  const run = state.runs.get(session.session_id);
  if (run?.active) await run.cancel().catch(() => {});
  try {
    state.sessions = await api.deleteSession(state.userId, session.session_id);
  } catch (err) {
    toast(`Could not delete the chat: ${err.message}`, { error: true });
    return;
  }
  run?.cleanup();
  state.runs.delete(session.session_id);
  sessionStorage.removeItem(runKey(session.session_id));
  forgetGivenFlow(session.session_id);
  toast(`Deleted “${title}”.`);
  if (state.current === session.session_id) {
    state.current = null;
    location.hash = "#/";
  }
  renderSidebar();
}

// views -------------------------------------------------------------------------------------

function showView(name) {
  // Navigating closes the sidebar on a narrow screen; the first view does not: the person may
  // have opened the sidebar while the page was still loading their chats.
  const navigating = state.view !== null;
  state.view = name;
  el.viewChat.hidden = name !== "chat";
  el.viewGallery.hidden = name !== "gallery";
  el.viewPublished.hidden = name !== "published";
  if (navigating) closeSidebar();
  renderSidebar();
}

function setTitle(title, subtitle = "") {
  el.title.textContent = title;
  el.subtitle.textContent = subtitle;
  el.subtitle.hidden = !subtitle;
  document.title = title === "New chat" ? "autobots" : `${truncate(title, 50)} · autobots`;
}

function parseRoute() {
  const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts[0] === "chat" && parts[1]) return { view: "chat", sessionId: parts[1] };
  if (parts[0] === "gallery" && parts[1]) return { view: "published", id: parts[1] };
  if (parts[0] === "gallery") return { view: "gallery", tag: new URLSearchParams(query || "").get("tag") || "" };
  return { view: "chat", sessionId: null };
}

async function route() {
  const r = parseRoute();
  const seq = ++state.loadSeq;
  if (r.view === "gallery") {
    showView("gallery");
    setTitle("Gallery", r.tag ? `Tagged “${r.tag}”` : "Published conversations");
    setChatActions(null);
    await gallery.show(r.tag);
    return;
  }
  if (r.view === "published") {
    showView("published");
    setTitle("Published conversation");
    setChatActions(null);
    const title = await showPublished(r.id, { banner: $("#published-banner"), thread: $("#published-thread") });
    if (seq === state.loadSeq) setTitle(title, "Read-only");
    return;
  }
  const already = state.view === "chat" && state.current === r.sessionId;
  showView("chat");
  if (already && r.sessionId) {
    updateHeader();
    return;
  }
  if (!r.sessionId) newChat();
  else await openSession(r.sessionId, seq);
}

// chat view ---------------------------------------------------------------------------------

function newChat() {
  state.current = null;
  state.messages = [];
  welcome.hidden = false;
  el.thread.replaceChildren();
  setTitle("New chat");
  setChatActions(null);
  updateComposer();
  renderSidebar();
  if (!matchMedia("(pointer: coarse)").matches) el.prompt.focus();
}

async function openSession(sessionId, seq) {
  state.current = sessionId;
  state.messages = [];
  renderSidebar();
  welcome.hidden = true;
  el.thread.replaceChildren(h("p", { class: "empty-note" }, "Loading…"));
  if (state.sessionsLoaded) await state.sessionsLoaded;
  if (!findSession(sessionId)) await loadSessions();
  if (seq !== state.loadSeq) return;
  const session = findSession(sessionId);
  if (!session) {
    setTitle("Chat not found");
    setChatActions(null);
    el.thread.replaceChildren(h("div", { class: "empty-note" }, h("p", {}, "This chat does not exist, or belongs to another user id."), h("a", { href: "#/", class: "btn" }, "Start a new chat")));
    updateComposer();
    return;
  }
  updateHeader();
  let messages;
  try {
    messages = await api.messages(state.userId, sessionId);
  } catch (err) {
    if (seq !== state.loadSeq) return;
    el.thread.replaceChildren(h("p", { class: "field-error", role: "alert" }, `Could not load the messages: ${err.message}`));
    return;
  }
  if (seq !== state.loadSeq) return;
  state.messages = messages;
  renderThread();
  await resumeRun(sessionId);
  updateComposer();
  scrollToBottom();
  if (!matchMedia("(pointer: coarse)").matches) el.prompt.focus();
}

const answerCtx = () => ({ userId: state.userId, sessionId: state.current, runsCode: flowRunsCode(findSession(state.current)?.flow_config) });

function renderThread() {
  const ctx = answerCtx();
  el.thread.setAttribute("aria-busy", "true");
  const nodes = state.messages.map((m) => renderMessage(m, ctx));
  const run = state.runs.get(state.current);
  if (run) nodes.push(run.el);
  if (!nodes.length) nodes.push(h("p", { class: "empty-note" }, "No messages yet. Say hello below."));
  el.thread.replaceChildren(...nodes);
  el.thread.setAttribute("aria-busy", "false");
  updateHeader();
}

function updateHeader() {
  const session = findSession(state.current);
  if (!session) return;
  const flow = session.flow_config || {};
  setTitle(sessionTitle(session), flow.name ? `${flow.name} · ${flow.type}` : describeFlow(flow));
  setChatActions(session);
}

function setChatActions(session) {
  el.showWorkflow.hidden = !session;
  el.publish.hidden = !session;
  el.publish.disabled = !state.messages.length;
  const totals = session ? sessionTotals(state.messages) : null;
  el.totals.hidden = !totals?.answers;
  if (totals?.answers) {
    el.totals.replaceChildren(
      h("span", { class: "usage-cost", title: `${totals.cost} USD exactly, for ${plural(totals.answers, "answer")}` }, usd(totals.cost)),
      h("span", { class: "hide-narrow" }, tokens(totals.tokens)),
      h("span", { class: "hide-narrow" }, duration(totals.seconds)),
    );
    el.totals.setAttribute("aria-label", `Chat total: ${usd(totals.cost)}, ${tokens(totals.tokens)}, ${plural(totals.calls, "LLM call")}, ${duration(totals.seconds)}`);
  }
}

// runs --------------------------------------------------------------------------------------

function currentRun() {
  const run = state.runs.get(state.current);
  return run?.active ? run : null;
}

function makeRun(info) {
  const session = findSession(info.sessionId);
  const run = new RunView(
    { ...info, userId: state.userId, author: session?.flow_config?.name, flow: session ? givenFlow(session).flow : null },
    {
      onChange: (r) => {
        if (r.sessionId === state.current) updateComposer();
      },
      onInputRequest: (r, request) => {
        if (r.sessionId === state.current) {
          updateComposer();
          el.prompt.focus();
        } else {
          toast(`${request.agent || "An agent"} is waiting for your reply in another chat.`, { link: { href: `#/chat/${encodeURIComponent(r.sessionId)}`, label: "Open" } });
        }
      },
      onSkipInput: (r) => answerRun(r, ""),
      onFinal: (r, message) => finishRun(r, message),
      onEnd: (r, status) => endRun(r, status),
    },
  );
  state.runs.set(info.sessionId, run);
  sessionStorage.setItem(runKey(info.sessionId), info.runId);
  return run;
}

function finishRun(run, message) {
  sessionStorage.removeItem(runKey(run.sessionId));
  state.runs.delete(run.sessionId);
  if (run.sessionId === state.current && state.view === "chat" && message) {
    const hadFocus = run.el.contains(document.activeElement);
    state.messages.push(message);
    run.el.replaceWith(assistantMessage(message, answerCtx()));
    updateHeader();
    if (hadFocus) el.prompt.focus();
  }
  updateComposer();
  renderSidebar();
}

async function endRun(run, status) {
  sessionStorage.removeItem(runKey(run.sessionId));
  updateComposer();
  renderSidebar();
  if (run.sessionId !== state.current || state.view !== "chat") return;
  // A run that ended without a final event may still have saved an answer (e.g. when stopped).
  try {
    const messages = await api.messages(state.userId, run.sessionId);
    if (run.sessionId !== state.current) return;
    const saved = messages.some((m) => m.role === "assistant" && m.metadata?.run_id === run.runId);
    state.messages = messages;
    if (saved) state.runs.delete(run.sessionId);
    renderThread();
  } catch {
    // the run's own block already says how it ended
  }
  if (status === "failed" || status === "interrupted") offerRetry(run);
}

/** A failed run's question can be asked again with one click. */
function offerRetry(run) {
  if (!run.question || run.errorBox.querySelector(".retry")) return;
  const retry = h("button", { type: "button", class: "btn small retry" }, "Try again");
  retry.addEventListener("click", () => {
    if (currentRun() || state.sending) return;
    el.prompt.value = run.question;
    submit();
  });
  run.errorBox.hidden = false;
  if (!run.errorBox.textContent) run.errorBox.append(h("span", {}, `The run ${run.status === "failed" ? "failed" : "was interrupted"}.`));
  run.errorBox.append(retry);
}

async function resumeRun(sessionId) {
  if (state.runs.has(sessionId)) return;
  const runId = sessionStorage.getItem(runKey(sessionId));
  if (!runId) return;
  try {
    const info = await api.run(runId);
    if (TERMINAL.has(info.status) || info.session_id !== sessionId) {
      sessionStorage.removeItem(runKey(sessionId));
      return;
    }
    const run = makeRun({ runId, sessionId, startedAt: info.started_at, status: info.status });
    if (state.current === sessionId) el.thread.append(run.el);
    run.connect();
    renderSidebar();
  } catch {
    sessionStorage.removeItem(runKey(sessionId));
  }
}

async function answerRun(run, text) {
  try {
    await run.answer(text);
    if (run.sessionId === state.current) el.prompt.value = "";
  } catch (err) {
    toast(`Your reply was not sent: ${err.message}`, { error: true });
  }
  autosize();
  updateComposer();
}

// composer ----------------------------------------------------------------------------------

function updateComposer() {
  if (state.view !== "chat") return;
  const run = currentRun();
  const awaiting = run?.pendingInput;
  const focused = document.activeElement;
  el.send.hidden = Boolean(run) && !awaiting;
  el.stop.hidden = !run;
  if ((focused === el.send || focused === el.stop) && focused.hidden) el.prompt.focus();
  el.send.disabled = state.sending;
  el.send.setAttribute("aria-label", awaiting ? "Send reply" : "Send message");
  el.promptLabel.textContent = awaiting ? "Your reply to the agents" : "Message";
  el.composer.classList.toggle("awaiting", Boolean(awaiting));
  el.prompt.placeholder = awaiting
    ? "Your reply (Enter on an empty box skips)…"
    : run
      ? "The agents are answering… press Stop to interrupt"
      : state.current
        ? "Message the agents…"
        : "Ask the team anything…";
}

function autosize() {
  if (CSS.supports?.("field-sizing", "content")) return;
  el.prompt.style.height = "auto";
  el.prompt.style.height = `${Math.min(el.prompt.scrollHeight, 220)}px`;
}

async function submit() {
  const text = el.prompt.value;
  const run = currentRun();
  if (run?.pendingInput) {
    await answerRun(run, text.trim());
    return;
  }
  if (run || state.sending || !text.trim()) return;
  if (!state.userId) {
    auth.ask();
    return;
  }
  state.sending = true;
  updateComposer();
  try {
    if (state.current) await send(state.current, text, false);
    else await startChat(text);
  } finally {
    state.sending = false;
    updateComposer();
  }
}

async function startChat(text) {
  const chosen = savedWorkflows.selection() || picker.selection();
  if (chosen.error) {
    picker.showServerError(chosen.error);
    return;
  }
  const sessionId = uuid4();
  try {
    const team = chosen.workflowId ? { workflow_id: chosen.workflowId } : { flow_config: chosen.flow };
    state.sessions = await api.createSession(state.userId, { session_id: sessionId, name: truncate(text, 60), ...team });
  } catch (err) {
    picker.showServerError(err.message);
    return;
  }
  if (chosen.flow) rememberGivenFlow(sessionId, chosen.flow);
  state.current = sessionId;
  state.messages = [];
  welcome.hidden = true;
  el.thread.replaceChildren();
  location.hash = `#/chat/${encodeURIComponent(sessionId)}`;
  updateHeader();
  renderSidebar();
  await send(sessionId, text, true);
}

async function send(sessionId, text, isNew) {
  const session = findSession(sessionId);
  const pending = { role: "user", content: text, timestamp: new Date().toISOString() };
  const bubble = userMessage(pending, { pending: true });
  el.thread.querySelector(".empty-note")?.remove();
  el.thread.append(bubble);
  el.prompt.value = "";
  autosize();
  scrollToBottom(true);
  let started;
  try {
    // A session of a saved workflow runs its recorded version (and the run records it).
    started = await api.startRun(state.userId, sessionId, text, session?.workflow_id ? null : session?.flow_config);
  } catch (err) {
    if (isNew) {
      // The team could not run: take the new chat back, and say why where the workflow is chosen.
      state.sessions = await api.deleteSession(state.userId, sessionId).catch(() => state.sessions);
      location.hash = "#/";
      newChat();
      picker.showServerError(err.message);
    } else {
      userMessageError(bubble, err.message);
    }
    if (!el.prompt.value) el.prompt.value = text;
    autosize();
    return;
  }
  bubble.classList.remove("pending");
  bubble.dataset.msgId = started.user_msg_id;
  if (state.current === sessionId) state.messages.push({ ...pending, msg_id: started.user_msg_id, session_id: sessionId });
  const run = makeRun({ runId: started.run_id, sessionId, status: started.status });
  run.question = text;
  if (state.current === sessionId) el.thread.append(run.el);
  run.connect();
  updateHeader();
  renderSidebar();
  scrollToBottom(true);
}

el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
el.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    submit();
  }
});
el.prompt.addEventListener("input", autosize);
el.stop.addEventListener("click", async () => {
  const run = currentRun();
  if (!run || run.status === "stopping") return;
  try {
    await run.cancel();
  } catch (err) {
    toast(`Could not stop the run: ${err.message}`, { error: true });
  }
});

// scrolling ---------------------------------------------------------------------------------

let stickToBottom = true;
function scrollToBottom(force = false) {
  if (force) stickToBottom = true;
  if (stickToBottom) el.scroller.scrollTop = el.scroller.scrollHeight;
}
el.scroller.addEventListener("scroll", () => {
  const gap = el.scroller.scrollHeight - el.scroller.scrollTop - el.scroller.clientHeight;
  stickToBottom = gap < 80;
  el.jump.hidden = stickToBottom || !state.current;
});
new ResizeObserver(() => scrollToBottom()).observe(el.thread);
el.jump.addEventListener("click", () => {
  el.scroller.scrollTo({ top: el.scroller.scrollHeight, behavior: "smooth" });
  stickToBottom = true;
  el.jump.hidden = true;
});

// publish and workflow dialogs ---------------------------------------------------------------

const publishDialog = $("#publish-dialog");
const publishTags = $("#publish-tags");
const publishError = $("#publish-error");

function parseTags(text) {
  const tags = [...new Set(text.split(",").map((t) => t.trim()).filter(Boolean))];
  if (tags.length > 20) return { error: "At most 20 tags." };
  const long = tags.find((t) => t.length > 100);
  if (long) return { error: `“${truncate(long, 30)}” is longer than 100 characters.` };
  return { tags };
}

el.publish.addEventListener("click", () => {
  publishError.textContent = "";
  publishDialog.showModal();
  publishTags.focus();
});
$("#publish-cancel").addEventListener("click", () => publishDialog.close());
$("#publish-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const parsed = parseTags(publishTags.value);
  if (parsed.error) {
    publishError.textContent = parsed.error;
    return;
  }
  const submitButton = $("#publish-submit");
  submitButton.disabled = true;
  try {
    const item = await api.publish(state.userId, state.current, parsed.tags);
    publishDialog.close();
    publishTags.value = "";
    toast(parsed.tags.length ? `Published with tags ${parsed.tags.join(", ")}.` : "Published.", { link: { href: `#/gallery/${encodeURIComponent(item.id)}`, label: "View in gallery" } });
  } catch (err) {
    publishError.textContent = err.message;
  } finally {
    submitButton.disabled = false;
  }
});

installWorkflowDialog(() => findSession(state.current));
for (const dialog of document.querySelectorAll("dialog")) {
  dialog.addEventListener("click", (event) => {
    // a click on the backdrop closes the dialog (except those asking who you are)
    if (event.target === dialog && !auth.holds(dialog)) dialog.close();
  });
}

// sidebar on narrow screens -----------------------------------------------------------------

function openSidebar() {
  el.app.classList.add("sidebar-open");
  el.scrim.hidden = false;
  el.openSidebar.setAttribute("aria-expanded", "true");
  el.sidebar.querySelector("a, button")?.focus();
}
function closeSidebar() {
  if (!el.app.classList.contains("sidebar-open")) return;
  el.app.classList.remove("sidebar-open");
  el.scrim.hidden = true;
  el.openSidebar.setAttribute("aria-expanded", "false");
}
el.openSidebar.addEventListener("click", openSidebar);
$("#close-sidebar").addEventListener("click", () => {
  closeSidebar();
  el.openSidebar.focus();
});
el.scrim.addEventListener("click", closeSidebar);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && el.app.classList.contains("sidebar-open")) {
    closeSidebar();
    el.openSidebar.focus();
  }
});
el.sidebar.addEventListener("click", (event) => {
  if (event.target.closest("a")) closeSidebar();
});

// start -------------------------------------------------------------------------------------

let examplesLoaded = false;
async function loadExamples() {
  try {
    picker.setExamples(await api.examples());
    examplesLoaded = true;
    savedWorkflows.load(state.userId);
  } catch (err) {
    picker.setExamples([], err.message);
  }
}

window.addEventListener("hashchange", route);
updateComposer();
auth.start();
