// Choosing the team for a new chat: a ready example of each type, or your own JSON (pasted or
// uploaded), checked here first so a typo is caught before anything is sent. The server checks
// everything again, and its 400 message (which names the field) is shown in the same place.

import { $, h } from "./dom.js";
import { codeBlock } from "./markdown.js";

export const TYPES = ["autonomous", "sequential", "groupchat"];
const TYPE_HELP = {
  autonomous: "a user proxy chats with the assistant(s)",
  sequential: "chats in a fixed order, each handed what came before",
  groupchat: "agents take turns in a group chat",
};
const STORE_KEY = "autobots.workflow";
const CUSTOM = "__custom__";

function lineAndColumn(text, position) {
  const before = text.slice(0, position);
  const line = before.split("\n").length;
  const column = position - before.lastIndexOf("\n");
  return { line, column };
}

const show = (c) => (c === "\n" ? "a line break" : `“${c}”`);

/**
 * Where and why a text is not JSON: {pos, reason}, or null when it is. Browsers' JSON.parse
 * messages differ and often give no position, so the text is scanned here.
 */
export function locateJsonError(src) {
  let i = 0;
  const fail = (reason) => {
    throw { pos: i, reason };
  };
  const ws = () => {
    while (i < src.length && " \t\n\r".includes(src[i])) i++;
  };
  const ended = (what) => fail(`the text ended where ${what} was expected`);
  const string = () => {
    i++;
    while (i < src.length) {
      const c = src[i];
      if (c === '"') {
        i++;
        return;
      }
      if (c === "\\") i += 2;
      else if (c < " ") fail(`${c === "\n" ? "a line break" : "a control character"} inside a string (is a closing " missing?)`);
      else i++;
    }
    fail('a string is not closed with "');
  };
  const value = () => {
    ws();
    const c = src[i];
    if (c === undefined) ended("a value");
    if (c === "{") return object();
    if (c === "[") return array();
    if (c === '"') return string();
    if (c === "-" || (c >= "0" && c <= "9")) {
      const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(src.slice(i));
      if (!m) fail("a malformed number");
      i += m[0].length;
      return;
    }
    for (const word of ["true", "false", "null"]) {
      if (src.startsWith(word, i)) {
        i += word.length;
        return;
      }
    }
    fail(`expected a value but found ${show(c)}${c === "'" ? " (JSON uses double quotes)" : ""}`);
  };
  const object = () => {
    i++;
    ws();
    if (src[i] === "}") return void i++;
    for (;;) {
      ws();
      if (src[i] === undefined) ended('a "quoted" property name');
      if (src[i] !== '"') fail(`expected a "quoted" property name but found ${show(src[i])}${src[i] === "'" ? " (JSON uses double quotes)" : ""}`);
      string();
      ws();
      if (src[i] === undefined) ended("“:”");
      if (src[i] !== ":") fail(`expected “:” after the property name but found ${show(src[i])}`);
      i++;
      value();
      ws();
      if (src[i] === ",") i++;
      else if (src[i] === "}") return void i++;
      else if (src[i] === undefined) ended("“,” or “}”");
      else fail(`expected “,” or “}” but found ${show(src[i])}`);
    }
  };
  const array = () => {
    i++;
    ws();
    if (src[i] === "]") return void i++;
    for (;;) {
      value();
      ws();
      if (src[i] === ",") i++;
      else if (src[i] === "]") return void i++;
      else if (src[i] === undefined) ended("“,” or “]”");
      else fail(`expected “,” or “]” but found ${show(src[i])}`);
    }
  };
  try {
    value();
    ws();
    if (i < src.length) fail(`unexpected ${show(src[i])} after the end of the JSON`);
  } catch (err) {
    if (err && typeof err.pos === "number") return err;
    throw err;
  }
  return null;
}

/** Parse and check a workflow JSON. Returns {flow} or {error}. */
export function checkWorkflowText(text) {
  const source = String(text ?? "");
  if (!source.trim()) return { error: "Paste a workflow as JSON, or upload a .json file." };
  let value;
  try {
    value = JSON.parse(source);
  } catch (err) {
    const found = locateJsonError(source);
    if (!found) return { error: `Not valid JSON: ${err.message || err}` };
    const { line, column } = lineAndColumn(source, Math.min(found.pos, source.length));
    return { error: `Not valid JSON at line ${line}, column ${column}: ${found.reason}` };
  }
  return checkWorkflow(value);
}

/** Structural checks the server would also make, with the field named the same way. */
export function checkWorkflow(value) {
  let flow = value;
  if (flow && typeof flow === "object" && !Array.isArray(flow) && !("agents" in flow) && flow.flow_config && typeof flow.flow_config === "object") {
    flow = flow.flow_config; // a request body holding a flow_config
  }
  if (!flow || typeof flow !== "object" || Array.isArray(flow)) {
    return { error: `flow_config: expected a JSON object ({...}), got ${Array.isArray(flow) ? "a list" : typeof flow === "string" ? "a string" : String(flow)}` };
  }
  if (flow.type === undefined) return { error: `flow_config.type is required: one of ${TYPES.join(", ")}` };
  if (!TYPES.includes(flow.type)) return { error: `flow_config.type: "${String(flow.type)}" is not a workflow type; use one of ${TYPES.join(", ")}` };
  if (!Array.isArray(flow.agents)) return { error: "flow_config.agents: expected a list of agents" };
  if (!flow.agents.length) return { error: "flow_config.agents: the list is empty; add at least one agent" };
  const names = new Set();
  for (const [i, entry] of flow.agents.entries()) {
    const where = `flow_config.agents.${i}`;
    if (!entry || typeof entry !== "object" || Array.isArray(entry)) return { error: `${where}: expected an object with "agent" and "link"` };
    const agent = entry.agent;
    if (!agent || typeof agent !== "object") return { error: `${where}.agent is required` };
    if (!["assistant", "userproxy", "groupchat"].includes(agent.type)) {
      return { error: `${where}.agent.type: "${String(agent.type ?? "")}" is not an agent type; use assistant, userproxy or groupchat` };
    }
    const name = agent.config?.name;
    if (typeof name !== "string" || !name) return { error: `${where}.agent.config.name is required` };
    if (!/^[A-Za-z0-9_-]+$/.test(name)) return { error: `${where}.agent.config.name: "${name}" may only hold letters, digits, _ and -` };
    if (names.has(name)) return { error: `${where}.agent.config.name: two agents are named "${name}"` };
    names.add(name);
  }
  return { flow };
}

export function describeFlow(flow) {
  const n = Array.isArray(flow?.agents) ? flow.agents.length : 0;
  return `${flow?.type || "workflow"} · ${n} ${n === 1 ? "agent" : "agents"}`;
}

export class WorkflowPicker {
  constructor() {
    this.examples = [];
    this.loadError = null;
    const saved = safeParse(localStorage.getItem(STORE_KEY)) || {};
    this.choice = saved.choice || null;
    this.customText = typeof saved.customText === "string" ? saved.customText : "";
    this.serverError = null;
    this.el = h("fieldset", { class: "picker" });
  }

  setExamples(examples, loadError = null) {
    this.examples = examples;
    this.loadError = loadError;
    if (!this.choice || (this.choice !== CUSTOM && !examples.some((e) => e.name === this.choice))) {
      this.choice = examples[0]?.name ?? CUSTOM;
    }
    this.render();
  }

  save() {
    localStorage.setItem(STORE_KEY, JSON.stringify({ choice: this.choice, customText: this.customText }));
  }

  /** {flow, name} of the chosen workflow, or {error}. */
  selection() {
    if (this.choice === CUSTOM) {
      const checked = checkWorkflowText(this.customText);
      if (checked.error) return checked;
      return { flow: checked.flow, name: checked.flow.name || "Custom workflow" };
    }
    const example = this.examples.find((e) => e.name === this.choice);
    return example ? { flow: example.flow_config, name: example.name } : { error: "Choose a workflow first." };
  }

  /** Show why the server refused the workflow, and take the person there. */
  showServerError(message) {
    this.serverError = message;
    this.render();
    (this.el.querySelector("#workflow-json") || this.el.querySelector("input:checked"))?.focus();
  }

  render() {
    const cards = this.examples.map((ex) => this.card(ex.name, ex.name, ex.type, ex.description, sandboxNote(ex)));
    cards.push(this.card(CUSTOM, "Your own workflow", "JSON", "Paste or upload a workflow config (flow_config)."));
    const children = [
      h("legend", {}, "Choose a team of agents"),
      this.loadError ? h("p", { class: "field-error", role: "alert" }, `Could not load the examples: ${this.loadError}`) : null,
      h("div", { class: "picker-cards" }, cards),
    ];
    if (this.choice === CUSTOM) children.push(this.customEditor());
    else if (this.serverError) children.push(h("p", { class: "field-error", role: "alert" }, this.serverError));
    this.el.replaceChildren(...children.filter(Boolean));
  }

  card(value, title, type, description, note = null) {
    const id = `wf-${value === CUSTOM ? "custom" : slug(value)}`;
    const input = h("input", { type: "radio", name: "workflow", id, value, class: "visually-hidden" });
    input.checked = this.choice === value;
    input.addEventListener("change", () => {
      if (!input.checked) return;
      if (value === CUSTOM && !this.customText.trim()) {
        const base = this.examples.find((e) => e.name === this.choice);
        if (base) this.customText = JSON.stringify(base.flow_config, null, 2);
      }
      this.choice = value;
      this.serverError = null;
      this.save();
      this.render();
      this.el.querySelector(`#${id}`)?.focus();
    });
    return h(
      "label",
      { class: "picker-card", for: id },
      input,
      h("span", { class: "picker-card-top" }, h("span", { class: "picker-name" }, title), h("span", { class: `badge badge-type type-${type.toLowerCase()}` }, type)),
      h("span", { class: "picker-desc" }, description || TYPE_HELP[type] || ""),
      note ? h("span", { class: `picker-note picker-note-${note.kind}` }, note.text) : null,
    );
  }

  customEditor() {
    const status = h("p", { class: "field-status", id: "workflow-json-status", role: "status" });
    const error = h("p", { class: "field-error", id: "workflow-json-error", role: "alert" });
    const area = h("textarea", {
      id: "workflow-json",
      class: "json-input",
      rows: 12,
      spellcheck: "false",
      autocomplete: "off",
      "aria-describedby": "workflow-json-help workflow-json-status workflow-json-error",
      placeholder: '{"name": "My team", "type": "autonomous", "agents": [...]}',
    });
    area.value = this.customText;
    const file = h("input", { type: "file", id: "workflow-file", accept: ".json,application/json", class: "visually-hidden" });
    const format = h("button", { type: "button", class: "btn btn-ghost small" }, "Format");

    const update = () => {
      const checked = checkWorkflowText(area.value);
      error.textContent = this.serverError || (area.value.trim() ? checked.error || "" : "");
      area.setAttribute("aria-invalid", error.textContent ? "true" : "false");
      status.textContent = !checked.error && !this.serverError ? `Valid workflow: ${checked.flow.name ? `${checked.flow.name} · ` : ""}${describeFlow(checked.flow)}` : "";
    };
    let timer;
    area.addEventListener("input", () => {
      this.customText = area.value;
      this.serverError = null;
      this.save();
      clearTimeout(timer);
      timer = setTimeout(update, 250);
    });
    area.addEventListener("dragover", (event) => event.preventDefault());
    area.addEventListener("drop", (event) => {
      const dropped = event.dataTransfer?.files?.[0];
      if (!dropped) return;
      event.preventDefault();
      readFile(dropped);
    });
    const readFile = async (f) => {
      if (f.size > 1024 * 1024) {
        error.textContent = `${f.name} is larger than 1 MB; a workflow is much smaller.`;
        return;
      }
      area.value = await f.text();
      this.customText = area.value;
      this.serverError = null;
      this.save();
      update();
      area.focus();
    };
    file.addEventListener("change", () => {
      if (file.files?.[0]) readFile(file.files[0]);
      file.value = "";
    });
    format.addEventListener("click", () => {
      const checked = checkWorkflowText(area.value);
      if (checked.flow) {
        area.value = JSON.stringify(checked.flow, null, 2);
        this.customText = area.value;
        this.save();
      }
      update();
    });
    update();
    return h(
      "div",
      { class: "custom-editor" },
      h("label", { for: "workflow-json" }, "Workflow JSON"),
      h("p", { class: "field-help", id: "workflow-json-help" }, "A flow_config like the examples; drop a file here or upload one."),
      area,
      h(
        "div",
        { class: "custom-actions" },
        h("label", { class: "btn btn-ghost small upload" }, "Upload .json", file),
        format,
      ),
      status,
      error,
    );
  }
}

function slug(s) {
  return String(s).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "x";
}

function safeParse(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** A short note on an example that runs code in a sandbox this server lacks (or whose code runs
 * in the local sandbox because this server has no Docker engine). */
function sandboxNote(example) {
  if (!example.needs_sandbox) return null;
  if (example.sandbox_available === false) return { kind: "missing", text: "Needs a code sandbox this server does not have: its code would not run." };
  if (example.sandbox_fallback) return { kind: "fallback", text: "No Docker on this server: its code runs in the local sandbox instead." };
  return null;
}

// The workflow as the person gave it (the server returns it with every default filled in) ---

const GIVEN_KEY = (sessionId) => `autobots.flow.${sessionId}`;

export function rememberGivenFlow(sessionId, flow) {
  try {
    localStorage.setItem(GIVEN_KEY(sessionId), JSON.stringify(flow));
  } catch {
    // storage full or off: the dialog shows the server's copy
  }
}

export function forgetGivenFlow(sessionId) {
  localStorage.removeItem(GIVEN_KEY(sessionId));
}

/** {flow, given}: the JSON as pasted or chosen, or the server's copy (with defaults) if unknown. */
export function givenFlow(session) {
  try {
    const text = localStorage.getItem(GIVEN_KEY(session.session_id));
    if (text) return { flow: JSON.parse(text), given: true };
  } catch {
    // fall through to the server's copy
  }
  return { flow: session.flow_config, given: false };
}

/** The "Workflow" dialog of a chat and its "Copy JSON": the workflow as given. */
export function installWorkflowDialog(currentSession) {
  const dialog = $("#workflow-dialog");
  const copy = $("#workflow-copy");
  $("#show-workflow").addEventListener("click", () => {
    const session = currentSession();
    if (!session) return;
    const { flow, given } = givenFlow(session);
    $("#workflow-dialog-title").textContent = `${flow?.name ? `Workflow: ${flow.name}` : "Workflow"}${given ? "" : " (as stored, defaults filled in)"}`;
    $("#workflow-view").replaceChildren(codeBlock(JSON.stringify(flow, null, 2), "json", { copy: false }));
    dialog.showModal();
  });
  copy.addEventListener("click", async () => {
    const session = currentSession();
    if (!session) return;
    await navigator.clipboard?.writeText(JSON.stringify(givenFlow(session).flow, null, 2)).catch(() => {});
    copy.textContent = "Copied";
    setTimeout(() => (copy.textContent = "Copy JSON"), 1500);
  });
}
