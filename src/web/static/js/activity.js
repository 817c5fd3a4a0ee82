// Under a live run: who is speaking or thinking now, the step of a sequential workflow, and the
// wait: on the embedded model the server's estimate (waitnote.js: loading, requests ahead of
// yours, about N s), otherwise an honest note (elapsed time is in the run's head).

import { h } from "./dom.js";
import { flowUsesEmbedded, sequentialSteps } from "./transcript.js";
import { WaitNote } from "./waitnote.js";

const LOADING_AFTER_S = 3;

export class Activity {
  constructor(flow, runId) {
    this.steps = sequentialSteps(flow);
    this.embedded = flowUsesEmbedded(flow);
    this.estimate = this.embedded ? new WaitNote(runId, () => this.render()) : null;
    this.arrived = false;
    this.current = -1;
    this.handedOver = new Set();
    this.who = h("span", { class: "run-who" });
    this.step = h("span", { class: "run-step-label" });
    this.wait = h("span", { class: "run-wait" });
    this.el = h("p", { class: "run-activity", "aria-live": "polite" }, this.step, " ", this.who, " ", this.wait);
    this.render();
  }

  /** A message arrived: returns {handover} when it hands a sequential step its summary. */
  message(m) {
    // The first message is the question being handed over; a reply is anyone else's.
    if (this.asker === undefined) this.asker = m.sender;
    else if (m.sender !== this.asker) this.arrived = true;
    this.estimate?.active();
    this.who.textContent = m.recipient ? `${m.recipient} is thinking…` : "";
    let handover = false;
    const index = this.steps.findIndex((name) => name && (name === m.recipient || name === m.sender));
    if (index >= 0) {
      if (index > this.current && index > 0 && m.recipient === this.steps[index] && !this.handedOver.has(index)) {
        this.handedOver.add(index);
        handover = true;
      }
      this.current = Math.max(this.current, index);
    }
    this.render();
    return { handover };
  }

  token(agent) {
    this.arrived = true;
    this.estimate?.active();
    if (agent) this.who.textContent = `${agent} is writing…`;
    this.render();
  }

  codeRunning(language) {
    this.arrived = true;
    this.estimate?.hold();
    this.who.textContent = `Running ${language || "code"}…`;
    this.render();
  }

  llmCall() {
    this.arrived = true;
    this.render();
  }

  tick(seconds, status) {
    this.seconds = seconds;
    this.status = status;
    this.estimate?.tick(status);
    this.render();
  }

  /** Code finished running: the next wait is for the model again. */
  codeDone() {
    this.estimate?.active();
  }

  done() {
    this.estimate?.stop();
    this.el.hidden = true;
  }

  render() {
    const n = this.steps.length;
    this.step.textContent = n > 1 ? `Step ${Math.max(this.current, 0) + 1} of ${n}${this.steps[Math.max(this.current, 0)] ? ` (${this.steps[Math.max(this.current, 0)]})` : ""} ·` : "";
    const waiting = !this.arrived && (this.seconds ?? 0) >= LOADING_AFTER_S && ["queued", "running"].includes(this.status);
    this.wait.textContent = this.estimate?.text || (waiting ? this.waitingNote() : "");
    this.el.hidden = !this.step.textContent && !this.who.textContent && !this.wait.textContent;
  }

  /** Nothing has arrived yet and the server gave no estimate. */
  waitingNote() {
    if (this.status === "queued") return "Queued behind other runs: it starts when a worker is free.";
    return this.embedded
      ? "Nothing yet: the local model may be loading (a first answer can take ~30-60 s)."
      : "Nothing yet: waiting for the model's first reply.";
  }
}
