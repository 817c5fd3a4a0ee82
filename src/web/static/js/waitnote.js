// How long a run waits for the embedded model, asked of the server while nothing happens:
// "Model loading, about 20 s." or "2 requests ahead of yours, about 40 s." (GET /api/runs/<id>/wait;
// the server tells a run about its own calls only, and counts for the rest).

import { api } from "./api.js";
import { plural } from "./format.js";

// Ask after this long without a token, a message or code running; then every POLL_S.
const QUIET_S = 2;
const POLL_S = 2;

/** "about 20 s", "about 2 min": an estimate, not a countdown to the second. */
export function about(seconds) {
  const s = Math.max(1, Math.round(Number(seconds) || 0));
  if (s < 90) return `about ${s} s`;
  return `about ${Math.round(s / 60)} min`;
}

/** The sentence for the server's answer about the model, or "" when it has nothing to say. */
export function waitText(model) {
  if (!model) return "";
  const eta = model.estimate_s != null ? `, ${about(model.estimate_s)}` : "";
  switch (model.state) {
    case "loading":
      return model.ahead > 0
        ? `Model loading, then ${plural(model.ahead, "request")} ahead of yours${eta}.`
        : `Model loading${eta}.`;
    case "queued":
      return `${plural(model.ahead, "request")} ahead of yours${eta}.`;
    case "reading":
      return `The model is reading the conversation${eta}.`;
    default:
      return "";
  }
}

export class WaitNote {
  constructor(runId, onChange) {
    this.runId = runId;
    this.onChange = onChange;
    this.text = "";
    this.quietSince = Date.now();
    this.askedAt = 0;
    this.asking = false;
    this.stopped = false;
  }

  /** Something happened (a token, a message, code done): the run is not waiting on the model now. */
  active() {
    this.held = false;
    this.quietSince = Date.now();
    this.set("");
  }

  /** Code is running: the run waits on the sandbox, not on the model, until `active()`. */
  hold() {
    this.held = true;
    this.set("");
  }

  /** Called every second while the run is live. */
  tick(status) {
    if (this.stopped || this.held || !this.runId) return;
    if (status !== "running") {
      this.set("");
      return;
    }
    const now = Date.now();
    if (this.asking || now - this.quietSince < QUIET_S * 1000 || now - this.askedAt < POLL_S * 1000) return;
    this.ask(now);
  }

  async ask(now) {
    this.asking = true;
    this.askedAt = now;
    try {
      const wait = await api.runWait(this.runId);
      // An answer that arrives after a token did describes a wait that is over.
      if (!this.stopped && this.quietSince <= now) this.set(waitText(wait?.model));
    } catch {
      this.set(""); // the estimate is a courtesy: without it the page says what it said before
    } finally {
      this.asking = false;
    }
  }

  set(text) {
    if (text === this.text) return;
    this.text = text;
    this.onChange();
  }

  stop() {
    this.stopped = true;
  }
}
