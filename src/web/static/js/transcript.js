// What the conversation view shows of the agents' raw messages (TERMINATE markers and empty
// turns hidden, the stored data untouched), the last code run next to an answer, and what a
// workflow is (runs code? the embedded model? how many sequential steps?).

import { h, icon } from "./dom.js";
import { codeBlock } from "./markdown.js";

const TERMINATE_ONLY = /^\s*TERMINATE[\s.!]*$/;
const TRAILING_TERMINATE = /\s*\bTERMINATE[\s.!]*$/;

/** The text shown for a turn: a trailing TERMINATE cut off. */
export function shownText(content) {
  return String(content ?? "").replace(TRAILING_TERMINATE, "").trimEnd();
}

/** Whether a turn is shown at all: not empty, not only "TERMINATE". */
export function isShownTurn(m) {
  const text = String(m?.content ?? "");
  return Boolean(text.trim()) && !TERMINATE_ONLY.test(text);
}

export const shownTurns = (messages) => (messages || []).filter(isShownTurn);

// the workflow ----------------------------------------------------------------------------

function walk(value, visit) {
  if (Array.isArray(value)) value.forEach((v) => walk(v, visit));
  else if (value && typeof value === "object") {
    visit(value);
    Object.values(value).forEach((v) => walk(v, visit));
  }
}

/** Any agent with code_execution_config set and not false. */
export function flowRunsCode(flow) {
  let found = false;
  walk(flow, (v) => {
    const code = v.config?.code_execution_config;
    if (v.config && code !== undefined && code !== null && code !== false) found = true;
  });
  return found;
}

/** Whether an agent of the workflow answers with the server's embedded model. */
export function flowUsesEmbedded(flow) {
  let found = false;
  walk(flow, (v) => {
    const llm = v.config?.llm_config;
    if (!v.config || llm === false || (v.type === "userproxy" && !llm)) return;
    const list = llm?.config_list;
    if (!Array.isArray(list) || !list.length) found = true;
    else if (list.some((c) => String(c?.model ?? "").startsWith("embedded:"))) found = true;
  });
  return found;
}

/** The receivers of a sequential workflow, in order (their names). */
export function sequentialSteps(flow) {
  if (flow?.type !== "sequential") return [];
  return (flow.agents || []).filter((a) => a?.link?.agent_type === "receiver").map((a) => a.agent?.config?.name || "");
}

// code runs ------------------------------------------------------------------------------

const EXIT = /^exitcode:\s*(-?\d+)/;

function codeOf(message) {
  const blocks = [...String(message?.content ?? "").matchAll(/```([\w+-]*)[^\n]*\n([\s\S]*?)```/g)];
  return blocks.map((b) => ({ language: b[1] || "", code: b[2].replace(/\n$/, "") }));
}

/** The last code run in an answer's inner messages: {exitCode, output, blocks} or null. */
export function lastCodeRun(messages) {
  const list = messages || [];
  for (let i = list.length - 1; i >= 0; i--) {
    const match = EXIT.exec(String(list[i]?.content ?? ""));
    if (!match) continue;
    const text = String(list[i].content);
    const output = text.replace(/^exitcode:[^\n]*\n?/, "").replace(/^Code output:\s?/, "");
    return { exitCode: Number(match[1]), output: output.trim(), blocks: i > 0 ? codeOf(list[i - 1]) : [] };
  }
  return null;
}

/** Next to an answer: the last execution's code and output, or "no code was run". */
export function codeRunPanel(messages, runsCode) {
  const run = lastCodeRun(messages);
  if (!run) return runsCode ? h("p", { class: "no-code-run badge badge-warn" }, "No code was run") : null;
  const ok = run.exitCode === 0;
  return h(
    "details",
    { class: "code-run", open: true },
    h(
      "summary",
      {},
      icon("code"),
      h("span", {}, "Last code run"),
      h("span", { class: `badge ${ok ? "badge-ok" : "badge-fail"}` }, `exit code ${run.exitCode}`),
    ),
    run.blocks.map((b) => codeBlock(b.code, b.language)),
    h("pre", { class: "exec-text code-run-output" }, run.output || "(no output)"),
  );
}
