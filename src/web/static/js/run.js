// A live run, watched through Server-Sent Events: what each agent says as it says it, the LLM
// calls and their cost, code being run, a question for the person, and the final answer.

import { api } from "./api.js";
import { avatar, h, icon } from "./dom.js";
import { addDecimals, costString, duration, plural, tokens, usd } from "./format.js";
import { codeBlock, renderPlain } from "./markdown.js";
import { Activity } from "./activity.js";
import { step } from "./messages.js";
import { isShownTurn } from "./transcript.js";

export const TERMINAL = new Set(["completed", "failed", "cancelled", "interrupted"]);

const STATUS_TEXT = {
  queued: "Queued",
  running: "Working",
  awaiting_input: "Waiting for you",
  completed: "Done",
  failed: "Failed",
  cancelled: "Stopped",
  interrupted: "Interrupted",
  stopping: "Stopping",
  reconnecting: "Reconnecting",
};

const STREAM_ANON = "\u0000anonymous";
const EVENTS = ["status", "message", "token", "llm_call", "code_execution_start", "code_execution_result", "input_request", "final", "error"];

export class RunView {
  /**
   * hooks: onFinal(message), onEnd(status), onChange(run) (status or input prompt changed),
   *        onInputRequest(run, {prompt, agent})
   */
  constructor({ runId, sessionId, userId, author, flow, startedAt, status = "queued" }, hooks) {
    this.runId = runId;
    this.sessionId = sessionId;
    this.userId = userId;
    this.hooks = hooks;
    this.status = status;
    this.lastSeq = 0;
    this.pendingInput = null;
    this.ended = false;
    this.streams = new Map();
    this.execs = [];
    this.calls = 0;
    this.tokens = 0;
    this.costs = [];
    this.startedAt = startedAt ? new Date(startedAt) : new Date();
    this.source = null;
    this.retryTimer = null;

    this.pill = h("span", { class: "run-pill", "data-status": status }, STATUS_TEXT[status] || status);
    this.elapsed = h("span", { class: "run-elapsed", "aria-hidden": "true" });
    this.usageLine = h("p", { class: "usage-line live-usage", hidden: true });
    this.steps = h("ol", { class: "steps live-steps", "aria-label": "What the agents are saying" });
    this.typingLabel = h("span", { class: "typing-label" }, "The agents are working…");
    this.typing = h("div", { class: "typing", role: "status" }, h("span", { class: "dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")), this.typingLabel);
    this.errorBox = h("div", { class: "run-error", role: "alert", hidden: true });
    this.activity = new Activity(flow, runId);
    this.el = h(
      "article",
      { class: "msg msg-assistant live", "aria-label": `${author || "Agents"} are answering`, "aria-busy": "true", "data-run-id": runId },
      h("div", { class: "msg-head" }, avatar("ab", "team"), h("span", { class: "msg-author" }, author || "Agents"), this.pill, this.elapsed),
      h("div", { class: "msg-body" }, this.steps, this.typing, this.activity.el, this.errorBox),
      h("footer", { class: "msg-foot" }, this.usageLine),
    );
    this.tick = setInterval(() => this.renderElapsed(), 1000);
    this.renderElapsed();
  }

  get active() {
    return !this.ended;
  }

  // connection ------------------------------------------------------------------------------

  connect() {
    if (this.ended) return;
    this.close();
    const source = new EventSource(api.runEventsUrl(this.runId, this.lastSeq));
    this.source = source;
    for (const type of EVENTS) source.addEventListener(type, (event) => this.receive(type, event));
    source.addEventListener("open", () => {
      if (this.status === "reconnecting") this.setStatus(this.lastStatus || "running");
    });
  }

  close() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
    clearTimeout(this.retryTimer);
  }

  receive(type, event) {
    if (event.target !== this.source) return;
    if (type === "error" && !(event instanceof MessageEvent && event.data)) {
      this.connectionLost();
      return;
    }
    const seq = Number.parseInt(event.lastEventId, 10);
    if (Number.isFinite(seq)) {
      if (seq <= this.lastSeq) return; // already seen (a replay after reconnecting)
      this.lastSeq = seq;
    }
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    const handler = this[`on_${type}`];
    if (handler) handler.call(this, data);
  }

  /** EventSource retries by itself (sending Last-Event-ID); when it gives up, ask the server. */
  connectionLost() {
    if (this.ended) return;
    if (this.source?.readyState === EventSource.CONNECTING) {
      if (this.status !== "reconnecting") this.lastStatus = this.status;
      this.setStatus("reconnecting");
      return;
    }
    this.close();
    this.setStatus("reconnecting");
    this.retryTimer = setTimeout(() => this.recover(), 1500);
  }

  async recover() {
    try {
      const run = await api.run(this.runId);
      if (TERMINAL.has(run.status)) {
        this.lastStatus = run.status;
        if (run.error) this.showError(run.error);
        this.end(run.status, { reload: true });
      } else {
        this.connect();
      }
    } catch (err) {
      if (err.status === 404) {
        this.showError("This run is no longer known to the server.");
        this.end("interrupted", { reload: true });
      } else {
        this.retryTimer = setTimeout(() => this.recover(), 3000);
      }
    }
  }

  // events ----------------------------------------------------------------------------------

  on_status({ status }) {
    this.lastStatus = status;
    this.setStatus(status);
    if (status !== "awaiting_input" && this.pendingInput && !this.pendingInput.answering) this.settleInput(null);
    if (TERMINAL.has(status)) this.end(status);
  }

  on_message(m) {
    this.finishStream(m.sender);
    this.finishStream(STREAM_ANON);
    const { handover } = this.activity.message(m);
    if (!isShownTurn(m)) return; // an empty turn or a bare TERMINATE: kept in the data, not shown
    const el = step(m);
    if (handover) {
      el.classList.add("step-handover");
      el.querySelector(".step-head")?.append(h("span", { class: "badge handover-badge" }, "hand-over summary"));
    }
    this.steps.append(el);
    this.hooks.onChange?.(this);
  }

  on_token({ agent: speaker, delta }) {
    const agent = speaker || STREAM_ANON;
    this.activity.token(speaker);
    let stream = this.streams.get(agent);
    if (!stream) {
      const body = renderPlain("", "step-body streaming");
      const el = h(
        "li",
        { class: "step", "data-sender": agent, "aria-busy": "true" },
        avatar(speaker || "?", "small"),
        h("div", { class: "step-main" }, h("div", { class: "step-head" }, h("span", { class: "step-sender" }, speaker || "An agent"), h("span", { class: "step-to" }, "is writing…")), body),
      );
      stream = { el, body };
      this.streams.set(agent, stream);
      this.steps.append(el);
      this.typing.hidden = true;
    }
    stream.body.append(String(delta ?? ""));
  }

  finishStream(agent) {
    const stream = this.streams.get(agent);
    if (stream) {
      stream.el.remove();
      this.streams.delete(agent);
    }
    this.typing.hidden = this.ended || this.status === "awaiting_input" || this.streams.size > 0;
  }

  on_llm_call(call) {
    this.activity.llmCall();
    this.calls += 1;
    this.tokens += Number(call.total_tokens) || 0;
    this.costs.push(costString(call));
    const cost = addDecimals(this.costs);
    this.usageLine.hidden = false;
    this.usageLine.replaceChildren(
      h("span", { class: "usage-cost", title: `${cost} USD exactly` }, usd(cost)),
      h("span", {}, tokens(this.tokens)),
      h("span", {}, `${plural(this.calls, "LLM call")} so far`),
    );
  }

  on_code_execution_start({ language, code }) {
    this.activity.codeRunning(language);
    const output = h("div", { class: "exec-output pending" }, h("span", { class: "dots small", "aria-hidden": "true" }, h("i"), h("i"), h("i")), " Running…");
    const title = h("span", {}, `Running ${language || "code"}…`);
    const el = h(
      "li",
      { class: "exec" },
      h("div", { class: "exec-head" }, icon("code"), title),
      codeBlock(code ?? "", language || ""),
      output,
    );
    this.execs.push({ el, output, title, language });
    this.steps.append(el);
    this.hooks.onChange?.(this);
  }

  on_code_execution_result({ exit_code, output, truncated, duration_s }) {
    this.activity.codeDone();
    const exec = this.execs.find((e) => e.output.classList.contains("pending"));
    const ok = Number(exit_code) === 0;
    const result = h(
      "div",
      { class: `exec-output ${ok ? "ok" : "fail"}` },
      h(
        "div",
        { class: "exec-result-head" },
        h("span", { class: `badge ${ok ? "badge-ok" : "badge-fail"}` }, `exit code ${exit_code}`),
        duration_s != null ? h("span", {}, duration(duration_s)) : null,
        truncated ? h("span", { class: "note" }, "output truncated") : null,
      ),
      h("pre", { class: "exec-text" }, output ? String(output) : "(no output)"),
    );
    if (exec) {
      exec.title.textContent = `Ran ${exec.language || "code"}`;
      exec.output.replaceWith(result);
      exec.output = result;
    } else {
      this.steps.append(h("li", { class: "exec" }, result));
    }
    this.hooks.onChange?.(this);
  }

  on_input_request({ prompt, agent, prompt_id: promptId }) {
    // A new question may arrive before the answer to the last one has been acknowledged.
    if (this.pendingInput && !this.pendingInput.answering) return;
    const skip = h("button", { type: "button", class: "btn btn-ghost small" }, "Continue without replying");
    skip.addEventListener("click", () => this.hooks.onSkipInput?.(this));
    const answer = h("p", { class: "input-hint" }, "Type your reply in the message box below.");
    const card = h(
      "li",
      { class: "input-card", role: "group", "aria-label": "The agents are waiting for your reply" },
      h("div", { class: "input-head" }, avatar(agent || "agent", "small"), h("span", {}, "Your reply is needed"), agent ? h("span", { class: "input-agent" }, `replying as ${agent}`) : null),
      renderPlain(prompt || "Your input is needed.", "input-prompt"),
      h("div", { class: "input-actions" }, answer, skip),
    );
    this.pendingInput = { prompt, agent, promptId, card, answer, skip };
    this.steps.append(card);
    this.typing.hidden = true;
    this.hooks.onInputRequest?.(this, { prompt, agent });
    this.hooks.onChange?.(this);
  }

  on_final({ message }) {
    this.lastStatus = message?.metadata?.status || "completed";
    this.ended = true;
    this.cleanup();
    this.hooks.onFinal?.(this, message);
  }

  on_error({ message }) {
    this.showError(message || "The run failed.");
  }

  // actions ---------------------------------------------------------------------------------

  async cancel() {
    if (this.ended) return;
    this.setStatus("stopping");
    await api.cancelRun(this.runId);
  }

  async answer(text) {
    const pending = this.pendingInput;
    if (!pending || pending.answering) return;
    pending.answering = true;
    pending.skip.disabled = true;
    try {
      // The prompt's id: an answer that arrives after the prompt timed out is refused, never
      // taken as the answer to the agents' next question.
      await api.answerRun(this.runId, text, pending.promptId);
    } catch (err) {
      pending.answering = false;
      pending.skip.disabled = false;
      throw err;
    }
    this.settleInput(text, pending);
  }

  settleInput(text, pending = this.pendingInput) {
    if (!pending || pending.settled) return;
    pending.settled = true;
    if (this.pendingInput === pending) this.pendingInput = null;
    pending.skip.remove();
    if (text === null) pending.answer.textContent = "No reply was needed.";
    else if (text === "") pending.answer.textContent = "You continued without replying.";
    else pending.answer.replaceChildren(h("span", { class: "input-you" }, "You replied: "), h("span", { class: "plain" }, text));
    this.typing.hidden = this.ended;
    this.hooks.onChange?.(this);
  }

  // display ---------------------------------------------------------------------------------

  setStatus(status) {
    this.status = status;
    this.pill.dataset.status = status;
    this.pill.textContent = STATUS_TEXT[status] || status;
    const label = {
      queued: "Waiting for a free worker…",
      running: "The agents are working…",
      stopping: "Stopping…",
      reconnecting: "Connection lost, reconnecting…",
    }[status];
    if (label) this.typingLabel.textContent = label;
    this.typing.hidden = this.ended || status === "awaiting_input" || (this.streams.size > 0 && status === "running");
    this.hooks.onChange?.(this);
  }

  showError(message) {
    this.errorBox.hidden = false;
    this.errorBox.replaceChildren(icon("close"), h("span", {}, message));
  }

  renderElapsed() {
    const seconds = Math.max(0, (Date.now() - this.startedAt.getTime()) / 1000);
    this.elapsed.textContent = seconds >= 1 ? duration(Math.floor(seconds)) : "";
    this.activity?.tick(seconds, this.status);
  }

  cleanup() {
    this.close();
    clearInterval(this.tick);
    this.activity.done();
    this.typing.hidden = true;
    this.el.setAttribute("aria-busy", "false");
    for (const stream of this.streams.values()) stream.el.removeAttribute("aria-busy");
    if (this.pendingInput) this.settleInput(null);
  }

  /** The run ended without a final message (stopped early, failed, or the server restarted). */
  end(status, { reload = false } = {}) {
    if (this.ended) return;
    this.ended = true;
    this.setStatus(status);
    this.cleanup();
    this.el.classList.add(`ended-${status}`);
    this.hooks.onEnd?.(this, status, { reload });
  }
}
