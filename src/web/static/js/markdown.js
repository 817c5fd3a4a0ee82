// What agents say, as safe DOM. Nothing an LLM writes may run in this page:
//  1. marked turns markdown into HTML, with raw HTML in the text treated as text (escaped);
//  2. DOMPurify sanitizes that HTML into a DOM fragment (a second line of defence);
//  3. the page's CSP forbids inline script and images from other sites.
// When DOMPurify is missing the text is shown as plain text: this module fails closed.

import { Marked } from "../vendor/marked-18.2.1/marked.esm.js";
import hljs from "../vendor/highlight-11.12.0/highlight.min.js";
import { copyText, h, icon } from "./dom.js";

const HIGHLIGHT_MAX_CHARS = 60000;
const AUTODETECT_MAX_CHARS = 4000;

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

function localImage(href) {
  return /^data:image\/(png|gif|jpe?g|webp);/i.test(href) || (/^\/(?!\/)/.test(href) && !href.includes(".."));
}

const marked = new Marked({ gfm: true, breaks: true, async: false });
marked.use({
  // Raw HTML is not HTML here: without these tokenizers, `<script>` is plain text (escaped), and
  // the markdown around it still renders.
  tokenizer: {
    html() {
      return undefined;
    },
    tag() {
      return undefined;
    },
  },
  renderer: {
    // Should an HTML token still be made, it is shown as the text it is.
    html({ text, block }) {
      const shown = escapeHtml(String(text).replace(/\n+$/, ""));
      return block ? `<p class="raw-html">${shown}</p>\n` : shown;
    },
    // Images from other sites are not fetched (privacy, and the CSP blocks them): link instead.
    image({ href, title, text }) {
      const alt = escapeHtml(text || "image");
      if (href && localImage(href)) {
        return `<img src="${escapeHtml(href)}" alt="${alt}"${title ? ` title="${escapeHtml(title)}"` : ""}>`;
      }
      return href ? `<a href="${escapeHtml(href)}">[image: ${alt}]</a>` : `[image: ${alt}]`;
    },
  },
});

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "button", "textarea", "select", "option", "iframe", "object", "embed", "svg", "math"],
  FORBID_ATTR: ["style", "id", "name", "srcset"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

let hooked = false;
function purifier() {
  const purify = globalThis.DOMPurify;
  if (!purify || !purify.isSupported) return null;
  if (!hooked) {
    purify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A" && node.hasAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer nofollow");
      }
    });
    hooked = true;
  }
  return purify;
}

/** Plain text, newlines kept. */
export function renderPlain(text, extraClass = "") {
  return h("div", { class: `plain ${extraClass}`.trim() }, String(text ?? ""));
}

/** Markdown, sanitized and with highlighted code blocks, inside a `div.md`. */
export function renderMarkdown(text, extraClass = "") {
  const purify = purifier();
  const source = String(text ?? "");
  if (!purify) return renderPlain(source, extraClass);
  let fragment;
  try {
    fragment = purify.sanitize(marked.parse(source), PURIFY_CONFIG);
  } catch {
    return renderPlain(source, extraClass);
  }
  const root = h("div", { class: `md ${extraClass}`.trim() });
  root.append(fragment);
  enhance(root);
  return root;
}

function enhance(root) {
  for (const code of root.querySelectorAll("pre > code")) {
    const lang = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className)?.[1] || "";
    code.closest("pre").replaceWith(codeBlock(code.textContent, lang));
  }
  for (const table of root.querySelectorAll("table")) {
    const wrap = h("div", { class: "table-wrap" });
    table.replaceWith(wrap);
    wrap.append(table);
  }
}

function highlight(code, lang) {
  const text = code.textContent;
  if (text.length > HIGHLIGHT_MAX_CHARS) return;
  try {
    if (lang && hljs.getLanguage(lang)) {
      code.className = `hljs language-${lang}`;
      hljs.highlightElement(code);
    } else if (!lang && text.length <= AUTODETECT_MAX_CHARS) {
      hljs.highlightElement(code);
    }
  } catch {
    code.textContent = text;
  }
}

/** A code block with its language and a copy button. */
export function codeBlock(text, lang = "", { label, copy = true } = {}) {
  const code = h("code", {}, String(text ?? ""));
  highlight(code, lang);
  const detected = /language-([\w+#.-]+)/.exec(code.className)?.[1];
  const head = h("div", { class: "codeblock-head" }, h("span", { class: "codeblock-lang" }, label ?? (lang || detected || "text")));
  if (copy) {
    const button = h(
      "button",
      { type: "button", class: "icon-btn small", "aria-label": "Copy code", title: "Copy code" },
      icon("copy", "when-idle"),
      icon("check", "when-copied"),
    );
    button.addEventListener("click", () => copyText(String(text ?? ""), button));
    head.append(button);
  }
  return h("div", { class: "codeblock" }, head, h("pre", {}, code));
}
