// The server's JSON API. Every answer is {status, message, data}; an error's message names the
// bad field and is meant to be shown as it is.

export class ApiError extends Error {
  constructor(message, status, data) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.data = data;
  }
}

// Called when a call answers 401 (the sign-in cookie expired or was ended), except the sign-in calls.
let unauthorized = null;
export function whenUnauthorized(handler) {
  unauthorized = handler;
}

export async function call(method, path, body, headers = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { ...(body === undefined ? { Accept: "application/json" } : { "Content-Type": "application/json", Accept: "application/json" }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError("Cannot reach the server. Check that it is running, then try again.", 0, null);
  }
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (response.status === 401 && !path.startsWith("/api/auth")) unauthorized?.();
  if (!response.ok || !payload || payload.status === false) {
    const message = payload?.message || `The server answered ${response.status} ${response.statusText}`.trim();
    throw new ApiError(message, response.status, payload?.data ?? null);
  }
  return payload;
}

const q = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== "")).toString();
const seg = (s) => encodeURIComponent(s);

// Lists come a page at a time ({data, next_cursor}). The sidebar and a chat show every session
// and every message, so these follow the cursors, 500 at a time; the gallery pages for real.
async function everyPage(path, params) {
  const pages = [];
  let cursor = null;
  do {
    const page = await call("GET", `${path}?${q({ ...params, limit: 500, cursor })}`);
    pages.push(page.data || []);
    cursor = page.next_cursor || null;
  } while (cursor);
  return pages;
}

export const api = {
  // sign-in: the key or token goes in the Authorization header of this one call, never in a URL
  authInfo: async () => (await call("GET", "/api/auth")).data,
  signIn: async (credential) => (await call("POST", "/api/auth/session", undefined, { Authorization: `Bearer ${credential}` })).data,
  signOut: async () => (await call("DELETE", "/api/auth/session")).data,
  me: async () => (await call("GET", "/api/me")).data,

  examples: async () => (await call("GET", "/api/examples")).data || [],

  // newest first: each page follows the one before
  sessions: async (userId) => (await everyPage("/api/sessions", { user_id: userId })).flat(),

  // Both answer with the first page of sessions only: the whole list is read again.
  createSession: async (userId, session) => {
    await call("POST", "/api/sessions", { user_id: userId, session: { ...session, user_id: userId } });
    return api.sessions(userId);
  },

  deleteSession: async (userId, sessionId) => {
    await call("POST", "/api/cleardb", { user_id: userId, session_id: sessionId });
    return api.sessions(userId);
  },

  // oldest first within a page, and the first page is the newest: each page goes before the last
  messages: async (userId, sessionId) => (await everyPage("/api/messages", { user_id: userId, session_id: sessionId })).reverse().flat(),

  startRun: async (userId, sessionId, content, flowConfig) =>
    (
      await call("POST", "/api/runs", {
        message: { user_id: userId, session_id: sessionId, role: "user", content },
        flow_config: flowConfig ?? null,
      })
    ).data,

  run: async (runId) => (await call("GET", `/api/runs/${seg(runId)}`)).data,
  runWait: async (runId) => (await call("GET", `/api/runs/${seg(runId)}/wait`)).data,
  cancelRun: async (runId) => (await call("POST", `/api/runs/${seg(runId)}/cancel`, {})).data,
  answerRun: async (runId, text, promptId) =>
    (await call("POST", `/api/runs/${seg(runId)}/input`, promptId ? { text, prompt_id: promptId } : { text })).data,
  runEventsUrl: (runId, after = 0) => `/api/runs/${seg(runId)}/events${after ? `?${q({ last_event_id: after })}` : ""}`,

  publish: async (userId, sessionId, tags) =>
    (await call("POST", "/api/sessions/publish", { user_id: userId, session: { user_id: userId, session_id: sessionId }, tags })).data,

  // one page of the gallery, newest first: {items, next} (next: the cursor of the page after)
  gallery: async (tag, cursor) => {
    const page = await call("GET", `/api/gallery?${q({ tag, cursor })}`);
    return { items: page.data || [], next: page.next_cursor || null };
  },
  galleryItem: async (id) => (await call("GET", `/api/gallery/${seg(id)}`)).data,

  fileUrl: (userId, sessionId, name) =>
    `/api/sessions/${seg(sessionId)}/files/${String(name).split("/").map(seg).join("/")}?${q({ user_id: userId })}`,
};
