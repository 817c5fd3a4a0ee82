// Saved workflows on the chat page: the user's own workflows (`/api/workflows`; the built-ins are
// the ready examples the picker shows), picking one to start a chat from (the session and its
// runs then record the workflow id and version), and saving the workflow chosen or edited in
// the picker under its name (a name you have already saves a new version of that workflow).

import { call } from "./api.js";
import { h } from "./dom.js";

const q = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== "")).toString();
const seg = (s) => encodeURIComponent(s);

export class SavedWorkflows {
  /** `picker`: the WorkflowPicker whose selection "Save" stores. */
  constructor(picker) {
    this.picker = picker;
    this.userId = null;
    this.items = [];
    this.chosen = null; // {id, name, version} of the saved workflow a new chat starts from
    this.note = "";
    this.error = "";
    this.el = h("section", { class: "saved-workflows", id: "saved-workflows", "aria-labelledby": "saved-workflows-title" });
    // Choosing an example or editing JSON in the picker means that one, not a saved workflow.
    picker.el.addEventListener("change", () => {
      if (this.chosen) this.choose(null);
    });
    this.render();
  }

  /** The user's own workflows (every page), newest save first. */
  async load(userId) {
    this.userId = userId;
    const items = [];
    let cursor = null;
    try {
      do {
        const page = await call("GET", `/api/workflows?${q({ user_id: userId, limit: 500, cursor })}`);
        items.push(...(page.data || []).filter((w) => !w.builtin));
        cursor = page.next_cursor || null;
      } while (cursor);
      this.items = items;
      this.error = "";
    } catch (err) {
      this.error = `Could not load your saved workflows: ${err.message}`;
    }
    if (this.chosen && !this.items.some((w) => w.id === this.chosen.id)) this.chosen = null;
    this.render();
  }

  /** {workflowId, flow, name} of the saved workflow chosen for a new chat, or null. */
  selection() {
    if (!this.chosen) return null;
    return { workflowId: this.chosen.id, flow: null, name: this.chosen.name };
  }

  choose(item) {
    this.chosen = item;
    this.note = "";
    this.render();
  }

  /** Save the picker's workflow: new under its name, or the next version of yours of that name. */
  async save() {
    const chosen = this.picker.selection();
    if (chosen.error) {
      this.error = chosen.error;
      return this.render();
    }
    const flow = chosen.flow;
    const same = this.items.find((w) => w.name === (flow.name || "").trim());
    try {
      const body = { user_id: this.userId, workflow: flow };
      const saved = same
        ? await call("PUT", `/api/workflows/${seg(same.id)}`, body)
        : await call("POST", "/api/workflows", body);
      this.error = "";
      this.note = saved.message;
      await this.load(this.userId);
      this.note = saved.message;
    } catch (err) {
      this.error = err.message;
    }
    this.render();
  }

  async remove(item) {
    try {
      await call("DELETE", `/api/workflows/${seg(item.id)}?${q({ user_id: this.userId })}`);
      this.note = `Deleted ${item.name}.`;
      await this.load(this.userId);
    } catch (err) {
      this.error = err.message;
      this.render();
    }
  }

  render() {
    const rows = this.items.map((item) => {
      const selected = this.chosen?.id === item.id;
      const use = h("button", { type: "button", class: `btn small ${selected ? "btn-primary" : "btn-ghost"}`, "aria-pressed": String(selected) }, selected ? "Chosen" : "Use");
      use.addEventListener("click", () => this.choose(selected ? null : item));
      const del = h("button", { type: "button", class: "btn btn-ghost small", "aria-label": `Delete ${item.name}` }, "Delete");
      del.addEventListener("click", () => this.remove(item));
      return h(
        "li",
        { class: `saved-workflow${selected ? " selected" : ""}`, "data-workflow-id": item.id },
        h("span", { class: "saved-workflow-name" }, item.name),
        h("span", { class: `badge badge-type type-${String(item.type || "").toLowerCase()}` }, item.type || "workflow"),
        h("span", { class: "saved-workflow-version" }, `v${item.version}`),
        use,
        del,
      );
    });
    const saveBtn = h("button", { type: "button", class: "btn btn-ghost small", id: "save-workflow" }, "Save the chosen workflow");
    saveBtn.addEventListener("click", () => this.save());
    this.el.replaceChildren(
      ...[
        h("h3", { id: "saved-workflows-title" }, "Your saved workflows"),
        rows.length
          ? h("ul", { class: "saved-workflow-list" }, rows)
          : h("p", { class: "field-help" }, "None yet: choose or edit a team above, then save it here."),
        this.chosen ? h("p", { class: "field-status", role: "status" }, `The new chat uses your saved workflow ${this.chosen.name} (v${this.chosen.version}).`) : null,
        saveBtn,
        this.note ? h("p", { class: "field-status", role: "status" }, this.note) : null,
        this.error ? h("p", { class: "field-error", role: "alert" }, this.error) : null,
      ].filter(Boolean),
    );
  }
}
