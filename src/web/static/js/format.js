// Numbers, money, durations and dates as people read them.

const DECIMALS = 12;

/** A cost as an exact decimal string: the server's `cost_usd`/`total_cost_usd`, else its float. */
export function costString(usage) {
  if (!usage) return "0";
  const exact = usage.total_cost_usd ?? usage.cost_usd;
  if (typeof exact === "string" && /^-?\d+(\.\d+)?$/.test(exact)) return exact;
  const float = Number(usage.total_cost ?? usage.cost ?? 0);
  return Number.isFinite(float) ? trimZeros(float.toFixed(DECIMALS)) : "0";
}

function trimZeros(s) {
  return s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
}

function toScaled(s) {
  const [int, frac = ""] = String(s).replace("-", "").split(".");
  const value = BigInt(int || "0") * 10n ** BigInt(DECIMALS) + BigInt((frac + "0".repeat(DECIMALS)).slice(0, DECIMALS) || "0");
  return String(s).startsWith("-") ? -value : value;
}

/** Exact sum of decimal strings (costs add up to the cent, and far below it). */
export function addDecimals(values) {
  let total = 0n;
  for (const v of values) total += toScaled(v);
  const neg = total < 0n;
  const digits = (neg ? -total : total).toString().padStart(DECIMALS + 1, "0");
  const out = `${digits.slice(0, -DECIMALS)}.${digits.slice(-DECIMALS)}`;
  return (neg ? "-" : "") + trimZeros(out);
}

/** "$0.0123", "$0.0000072", "$0"; exact value in the title. */
export function usd(decimal) {
  const n = Number(decimal);
  if (!n) return "$0";
  if (Math.abs(n) >= 0.01) return `$${n.toFixed(4).replace(/0{1,2}$/, "")}`;
  // Two significant digits for tiny amounts: 0.0000072 stays 0.0000072, not 7.2e-6.
  const decimals = Math.min(20, 1 - Math.floor(Math.log10(Math.abs(n))));
  return `$${trimZeros(n.toFixed(decimals))}`;
}

export function tokens(n) {
  const v = Number(n) || 0;
  const text = v >= 10000 ? `${(v / 1000).toFixed(v >= 100000 ? 0 : 1)}k` : v.toLocaleString("en-US");
  return `${text} ${v === 1 ? "token" : "tokens"}`;
}

export function plural(n, word, many = `${word}s`) {
  return `${n} ${n === 1 ? word : many}`;
}

/** 0.85 -> "850 ms", 2.61 -> "2.6 s", 75 -> "1 min 15 s". */
export function duration(seconds) {
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return "";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const min = Math.floor(s / 60);
  const rest = Math.round(s - min * 60);
  return rest ? `${min} min ${rest} s` : `${min} min`;
}

export function bytes(n) {
  const v = Number(n) || 0;
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KB`;
  return `${(v / 1024 / 1024).toFixed(1)} MB`;
}

export function parseDate(value) {
  if (!value) return null;
  // Naive timestamps from the server are UTC.
  const text = typeof value === "string" && !/[zZ]|[+-]\d\d:?\d\d$/.test(value) ? `${value}Z` : value;
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function timeOfDay(value) {
  const d = parseDate(value);
  return d ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
}

export function dateTime(value) {
  const d = parseDate(value);
  return d ? d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "";
}

/** "Today", "Yesterday", "Previous 7 days", "Previous 30 days", or the month. */
export function dayGroup(value, now = new Date()) {
  const d = parseDate(value);
  if (!d) return "Older";
  const startOfToday = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  const days = Math.floor((startOfToday - new Date(d.getFullYear(), d.getMonth(), d.getDate())) / 86400000);
  if (days <= 0) return "Today";
  if (days === 1) return "Yesterday";
  if (days < 7) return "Previous 7 days";
  if (days < 30) return "Previous 30 days";
  return d.toLocaleDateString([], { month: "long", year: "numeric" });
}

export function truncate(text, max) {
  const s = String(text || "").replace(/\s+/g, " ").trim();
  return s.length > max ? `${s.slice(0, max - 1).trimEnd()}…` : s;
}
