// actionq console: plain JavaScript, no build step. Everything shown comes
// from the HTTP API with the session cookie (POST /api/session); nothing is
// built with innerHTML, so no event text can become markup.
"use strict";

const STATUSES = ["idle", "running", "paused", "waiting_for_confirmation", "finished", "error", "stuck"];
const EVENT_KINDS = [
  "MessageEvent", "ActionEvent", "ObservationEvent", "AgentErrorEvent",
  "UserRejectObservation", "ConversationStateUpdateEvent", "ConversationErrorEvent",
];
const PAGE_SIZE = 50;
const SIGNALS = { 1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM" };
const CRASH_CAUSES = new Set([
  "worker_lost", "time_limit", "redelivered", "lease_expired", "worker_shutdown", "abandoned", "memory_limit",
]);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null; // not the API's JSON (a proxy's error page): the status says it
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || "http_error", error.message || `HTTP ${response.status}`);
  }
  return data;
}

function notify(message, ok) {
  const notice = document.getElementById("notice");
  notice.textContent = message;
  notice.className = ok ? "ok" : "";
  notice.hidden = !message;
}

// A control: run `action`, show the API's refusal (its own message) if any.
async function control(button, action) {
  button.disabled = true;
  try {
    await action();
    notify("");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return showLogin("Your session ended: log in again.");
    notify(error.message);
  } finally {
    button.disabled = false;
  }
}

function statusBadge(status) {
  return h("span", { class: `status ${status}`, dataset: { status } }, status.replaceAll("_", " "));
}

function ago(iso) {
  if (!iso) return "";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(seconds)) return iso;
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

function bytes(n) {
  if (n === null || n === undefined) return null;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function seconds(s) {
  if (s === null || s === undefined) return null;
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

function text(parts) {
  if (typeof parts === "string") return parts;
  return (parts || []).map((p) => p.text || "").join("");
}

// ---------------------------------------------------------------- login

async function boot() {
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/api/session", { method: "DELETE", credentials: "same-origin" });
    showLogin("Logged out.");
  });
  window.addEventListener("hashchange", route);
  try {
    await api("GET", "/api/session");
  } catch (error) {
    return showLogin(error instanceof ApiError && error.status === 401 ? "" : error.message);
  }
  route();
}

let current = null; // the view on screen: its close() ends its stream

function mount(view) {
  if (current && current.close) current.close();
  current = view;
}

function showLogin(message) {
  mount(null);
  document.getElementById("logout").hidden = true;
  const key = h("input", { type: "password", id: "api-key", autocomplete: "off", required: true });
  const error = h("p", { class: "cause", role: "status" }, message || "");
  const form = h("form", { class: "login", id: "login" },
    h("h1", {}, "Log in to the console"),
    h("label", { for: "api-key" }, "API key (", h("code", {}, "actionq up"), " prints where it is)"),
    key,
    h("button", { class: "primary", type: "submit" }, "Log in"),
    error,
    h("p", { class: "muted" }, "The key is exchanged for a session cookie (HttpOnly, this site only) and is not kept by the page."),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const response = await fetch("/api/session", {
        method: "POST", credentials: "same-origin", headers: { "X-Session-API-Key": key.value },
      });
      key.value = "";
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        error.textContent = (body.error && body.error.message) || `HTTP ${response.status}`;
        return;
      }
      notify("");
      route();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  document.getElementById("app").replaceChildren(form);
  key.focus();
}

function route() {
  document.getElementById("logout").hidden = false;
  const match = location.hash.match(/^#\/c\/([^/?]+)/);
  if (match) return conversationView(decodeURIComponent(match[1]));
  return listView(new URLSearchParams(location.hash.split("?")[1] || ""));
}

// ---------------------------------------------------------------- the list

async function listView(query) {
  mount(null);
  const status = query.get("status") || "";
  const pages = (query.get("pages") || "").split(",").filter(Boolean); // cursors walked so far
  const pageId = pages.length ? pages[pages.length - 1] : null;
  const filter = h("select", { id: "status-filter" },
    h("option", { value: "" }, "every status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s.replaceAll("_", " "))));
  filter.addEventListener("change", () => { location.hash = filter.value ? `#/?status=${filter.value}` : "#/"; });
  const search = h("input", { id: "search-id", placeholder: "conversation id", size: 40 });
  const find = h("form", { class: "toolbar", id: "search" }, search, h("button", { type: "submit" }, "Open"));
  find.addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = search.value.trim();
    if (!id) return;
    try {
      await api("GET", `/api/console/conversations/${encodeURIComponent(id)}`);
      location.hash = `#/c/${encodeURIComponent(id)}`;
    } catch (error) {
      notify(error.status === 404 ? `No conversation ${id}.` : error.message);
    }
  });
  const body = h("tbody", {});
  const table = h("table", { class: "list", id: "conversations" },
    h("thead", {}, h("tr", {}, h("th", {}, "Conversation"), h("th", {}, "Status"), h("th", {}, "Last update"), h("th", {}, "Why it stopped"))),
    body);
  const summary = h("span", { class: "muted", id: "list-summary" }, "");
  const pager = h("div", { class: "pager" });
  document.getElementById("app").replaceChildren(
    h("div", { class: "toolbar" }, h("label", { for: "status-filter" }, "Status "), filter, find, summary),
    table, pager);

  const started = performance.now();
  const params = new URLSearchParams({ limit: PAGE_SIZE });
  if (status) params.set("status", status);
  if (pageId) params.set("page_id", pageId);
  let page;
  try {
    page = await api("GET", `/api/console/conversations?${params}`);
  } catch (error) {
    if (error.status === 401) return showLogin("");
    return notify(error.message);
  }
  for (const row of page.items) {
    body.append(h("tr", { dataset: { id: row.id } },
      h("td", {}, h("a", { href: `#/c/${encodeURIComponent(row.id)}`, class: "mono" }, row.id)),
      h("td", {}, statusBadge(row.execution_status)),
      h("td", { title: row.updated_at }, ago(row.updated_at)),
      h("td", {}, row.error ? h("span", { class: "cause" }, causeLine(row.error)) : "")));
  }
  if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No conversations.")));
  const first = pages.length * PAGE_SIZE + 1;
  summary.textContent = page.items.length
    ? `${first}-${first + page.items.length - 1} of ${page.total}`
    : `${page.total} in all`;
  const base = status ? `#/?status=${status}&` : "#/?";
  if (pages.length) pager.append(h("a", { href: pages.length > 1 ? `${base}pages=${pages.slice(0, -1).join(",")}` : base.slice(0, -1) }, "← Newer"));
  if (page.next_page_id) pager.append(h("a", { href: `${base}pages=${[...pages, page.next_page_id].join(",")}`, id: "next-page" }, "Older →"));
  table.dataset.loadedMs = String(Math.round(performance.now() - started));
}

function causeLine(error) {
  const parts = [error.cause];
  if (error.signal) parts.push(`signal ${error.signal}`);
  else if (error.exitcode !== null && error.exitcode !== undefined) parts.push(`exit ${error.exitcode}`);
  return parts.join(", ");
}

// ---------------------------------------------------------------- a conversation

function conversationView(id) {
  const view = new ConversationView(id);
  mount(view);
  view.start();
}

class ConversationView {
  constructor(id) {
    this.id = id;
    this.path = `/api/conversations/${encodeURIComponent(id)}`;
    this.calls = new Map(); // action id -> {card, result, event}
    this.status = null;
    this.source = null;
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
  }

  async start() {
    let info;
    try {
      info = await api("GET", this.path);
    } catch (error) {
      if (error.status === 401) return showLogin("");
      document.getElementById("app").replaceChildren(h("p", {}, error.message, " ", h("a", { href: "#/" }, "Back to the list")));
      return;
    }
    this.badge = h("span", { id: "conversation-status" });
    this.timeline = h("div", { class: "timeline", id: "timeline" });
    this.confirmBar = h("div", { class: "confirm-bar", id: "confirm-bar", hidden: true });
    if (info.archived) return this.showArchived(info);
    const message = h("textarea", { id: "message", placeholder: "Message to the agent" });
    const send = h("button", { class: "primary", id: "send", type: "button" }, "Send and run");
    send.addEventListener("click", () => control(send, async () => {
      if (!message.value.trim()) throw new Error("Write a message first.");
      await api("POST", `${this.path}/events`, { role: "user", content: [{ type: "text", text: message.value }], run: true });
      message.value = "";
    }));
    const button = (label, idName, path, body) => {
      const b = h("button", { id: idName, type: "button" }, label);
      b.addEventListener("click", () => control(b, async () => {
        const answer = await api("POST", `${this.path}/${path}`, body);
        if (answer && answer.execution_status) this.setStatus(answer.execution_status);
      }));
      return b;
    };
    // Resume goes on: a conversation with an agent also runs it (as
    // `actionq conversations resume ID` then `run ID`).
    const resume = h("button", { id: "resume", type: "button", title: info.agent ? "Resume, then run the agent" : "Resume" }, "Resume");
    resume.addEventListener("click", () => control(resume, async () => {
      const answer = await api("POST", `${this.path}/resume`);
      this.setStatus(answer.execution_status);
      if (info.agent) await api("POST", `${this.path}/run`);
    }));
    const controls = h("div", { class: "controls" }, message, send,
      button("Run", "run", "run"), button("Pause", "pause", "pause"), resume);
    document.getElementById("app").replaceChildren(
      h("div", { class: "conv-head" }, h("a", { href: "#/" }, "← Conversations"),
        h("h1", { class: "mono" }, this.id), this.badge),
      controls, this.confirmBar, this.timeline);
    this.setStatus(info.execution_status);
    this.follow();
  }

  async showArchived(info) {
    // Moved out of Redis by retention: read-only, and nothing is live, so
    // its events are read in pages instead of followed.
    document.getElementById("app").replaceChildren(
      h("div", { class: "conv-head" }, h("a", { href: "#/" }, "← Conversations"),
        h("h1", { class: "mono" }, this.id), this.badge,
        h("span", { class: "archived", id: "archived", title: "Served from the archive; it can be read, not changed" }, "archived; read-only")),
      this.timeline);
    this.setStatus(info.execution_status);
    let after = 0;
    for (;;) {
      const page = await api("GET", `${this.path}/events/page?after_seq=${after}&limit=1000`);
      for (const envelope of page.items) this.add(envelope);
      if (page.next_after_seq === null) return;
      after = page.next_after_seq;
    }
  }

  follow() {
    // EventSource reconnects by itself and sends Last-Event-ID (the last seq
    // it got), so a dropped connection resumes without gaps or repeats.
    this.source = new EventSource(`${this.path}/events/stream`, { withCredentials: true });
    for (const kind of EVENT_KINDS) {
      this.source.addEventListener(kind, (message) => this.add(JSON.parse(message.data)));
    }
    this.source.addEventListener("error", () => {
      if (this.source && this.source.readyState === EventSource.CLOSED) {
        notify("The live stream was refused; reload the page.");
      }
    });
  }

  setStatus(status) {
    if (status !== this.status) this.badge.dataset.since = String(Date.now()); // when it showed
    this.status = status;
    this.badge.replaceChildren(statusBadge(status));
    this.refreshPending();
  }

  add(envelope) {
    const event = envelope.event;
    const handler = {
      MessageEvent: () => this.addMessage(event),
      ActionEvent: () => this.addCall(envelope),
      ObservationEvent: () => this.addResult(event.action_id, this.observation(event)),
      UserRejectObservation: () => this.addRejection(event),
      AgentErrorEvent: () => this.addError(envelope),
      ConversationStateUpdateEvent: () => this.addState(event),
      ConversationErrorEvent: () => this.timeline.append(h("div", { class: "state-line cause" }, `conversation error: ${event.code}: ${event.detail}`)),
    }[event.kind];
    if (handler) handler();
  }

  addMessage(event) {
    const role = event.source === "user" ? "user" : "agent";
    this.timeline.append(h("div", { class: `msg ${role}` },
      h("div", { class: "who" }, role), text(event.llm_message.content)));
  }

  addCall(envelope) {
    const event = envelope.event;
    const result = h("div", { class: "result pending-result" }, "running or queued…");
    const args = h("div", { class: "args" },
      h("div", { class: "tool" }, event.tool_name),
      summarise(event), envelope.retry_of ? h("div", { class: "link-note" }, "retry of ",
        h("a", { href: `#call-${envelope.retry_of}`, class: "mono", onclick: (e) => this.jump(e, envelope.retry_of) }, envelope.retry_of.slice(0, 8))) : null);
    const card = h("div", { class: "call", id: `call-${event.id}`, dataset: { actionId: event.id, tool: event.tool_name } }, args, result);
    this.calls.set(event.id, { card, result, args, done: false });
    if (envelope.retry_of && this.calls.has(envelope.retry_of)) {
      this.calls.get(envelope.retry_of).args.append(h("div", { class: "link-note retried-as" }, "retried as ",
        h("a", { href: `#call-${event.id}`, class: "mono", onclick: (e) => this.jump(e, event.id) }, event.id.slice(0, 8))));
    }
    this.timeline.append(card);
    this.refreshPending();
  }

  jump(e, actionId) {
    e.preventDefault();
    const target = document.getElementById(`call-${actionId}`);
    if (target) target.scrollIntoView({ behavior: "smooth", block: "center" });
  }

  observation(event) {
    const obs = event.observation || {};
    const output = text(obs.content);
    const parts = [h("pre", { class: "output" }, output || "(no output)")];
    if (obs.exit_code !== undefined && obs.exit_code !== null) {
      parts.push(h("div", { class: `exit ${obs.exit_code === 0 ? "" : "bad"}` }, `exit code ${obs.exit_code}`));
    }
    return parts;
  }

  addResult(actionId, content, mark) {
    const call = this.calls.get(actionId);
    if (!call) return;
    call.done = true;
    call.result.className = "result";
    call.result.replaceChildren(...content);
    if (mark) call.card.classList.add(mark);
    call.card.classList.remove("pending");
    this.refreshPending();
  }

  addRejection(event) {
    this.addResult(event.action_id, [h("div", { class: "rejection" }, "Rejected: ", event.rejection_reason || "")], "rejected");
  }

  addError(envelope) {
    const detail = envelope.detail || {};
    const call = this.calls.get(envelope.action_id);
    if (!call) {
      this.timeline.append(h("div", { class: "state-line cause" }, envelope.event.error));
      return;
    }
    if (detail.cause === "not_run") {
      this.addResult(envelope.action_id, [h("div", { class: "muted" }, "Not run: an earlier call crashed and the conversation stopped.")], "not-run");
      return;
    }
    if (!CRASH_CAUSES.has(detail.cause)) {
      this.addResult(envelope.action_id, [h("div", { class: "cause" }, `${detail.cause}: `), h("pre", {}, envelope.event.error)], "failed");
      return;
    }
    this.addResult(envelope.action_id, [h("div", { class: "cause" }, `Crashed: ${causeLine(detail)}`)], "crashed");
    call.card.append(this.crashPanel(envelope, call));
  }

  crashPanel(envelope, call) {
    const d = envelope.detail;
    const field = (name, value) => (value === null || value === undefined ? [] : [h("dt", {}, name), h("dd", { dataset: { field: name } }, value)]);
    const refusal = h("span", { class: "refusal", role: "status" });
    const retry = h("button", { type: "button", class: "retry" }, "Retry this call");
    const force = h("button", { type: "button", class: "force danger", hidden: true }, "Force the retry");
    const send = (forced) => async () => {
      try {
        await api("POST", `/api/actions/${encodeURIComponent(envelope.action_id)}/retry`, { force: forced });
        refusal.textContent = "";
        force.hidden = true;
      } catch (error) {
        refusal.textContent = error.message;
        if (error.status === 409) force.hidden = false;
        throw error;
      }
    };
    retry.addEventListener("click", () => control(retry, send(false)));
    force.addEventListener("click", () => control(force, send(true)));
    const tail = d.output_tail;
    return h("div", { class: "crash-panel", dataset: { cause: d.cause } },
      h("h3", {}, "What happened"),
      h("p", { class: "plain" }, plainWords(d, call.card.dataset.tool)),
      h("dl", {},
        field("cause", d.cause), field("signal", d.signal ? `${d.signal} (${SIGNALS[d.signal] || "?"})` : null),
        field("exit code", d.exitcode), field("host", d.host), field("pid", d.pid),
        field("runtime", seconds(d.runtime_s)), field("max memory", bytes(d.max_rss_bytes)),
        field("memory cap", bytes(d.memory_limit_bytes)), field("killed by", d.killed_by), field("attempt", d.attempt)),
      h("div", { class: "muted" }, "Last output before it died:"),
      h("pre", { class: "tail" }, tail ? tail : "(none captured)"),
      h("div", { class: "actions" }, retry, force, refusal));
  }

  addState(event) {
    if (event.key !== "execution_status") return;
    this.setStatus(event.value);
    this.timeline.append(h("div", { class: "state-line" }, "status → ", statusBadge(event.value)));
  }

  // Calls with no result while the conversation waits for the user are the
  // ones held for confirmation.
  refreshPending() {
    if (!this.confirmBar) return;
    const waiting = this.status === "waiting_for_confirmation";
    const held = [...this.calls.values()].filter((c) => !c.done);
    for (const call of held) call.card.classList.toggle("pending", waiting);
    if (!waiting || !held.length) {
      this.confirmBar.hidden = true;
      return;
    }
    if (!this.confirmBar.hidden) {
      this.confirmBar.querySelector(".count").textContent = `${held.length} call(s) wait for your decision`;
      return;
    }
    const reason = h("input", { id: "reject-reason", placeholder: "Why not (given to the agent)" });
    const respond = (accept) => async () => {
      const body = { accept };
      if (!accept && reason.value.trim()) body.reason = reason.value.trim();
      await api("POST", `${this.path}/events/respond_to_confirmation`, body);
    };
    const approve = h("button", { class: "primary", id: "approve", type: "button" }, "Approve");
    const reject = h("button", { class: "danger", id: "reject", type: "button" }, "Reject");
    approve.addEventListener("click", () => control(approve, respond(true)));
    reject.addEventListener("click", () => control(reject, respond(false)));
    this.confirmBar.replaceChildren(h("strong", { class: "count" }, `${held.length} call(s) wait for your decision`), approve, reason, reject);
    this.confirmBar.hidden = false;
  }
}

function summarise(event) {
  let args = {};
  try {
    args = JSON.parse((event.tool_call && event.tool_call.arguments) || "{}");
  } catch {
    args = {};
  }
  if (typeof args.command === "string" && event.tool_name === "terminal") {
    return h("pre", { class: "command" }, `$ ${args.command}`);
  }
  const shown = Object.entries(args).map(([k, v]) => {
    const value = typeof v === "string" ? v : JSON.stringify(v);
    return `${k}=${value.length > 120 ? `${value.slice(0, 120)}…` : value}`;
  });
  return h("pre", { class: "arguments" }, shown.join("\n") || "(no arguments)");
}

// What the crash's fields mean, in a sentence a person reads once.
function plainWords(d, tool) {
  const what = tool === "terminal" ? "the process running this command" : "the process running this call";
  let sentence;
  switch (d.cause) {
    case "worker_lost":
      sentence = `${what} was killed`;
      if (d.signal) sentence += ` by signal ${d.signal}${SIGNALS[d.signal] ? ` (${SIGNALS[d.signal]})` : ""}`;
      else if (d.exitcode !== null && d.exitcode !== undefined) sentence += ` (it exited with code ${d.exitcode})`;
      break;
    case "memory_limit":
      sentence = `${what} was killed for using too much memory`;
      if (d.memory_limit_bytes) sentence += ` (its cap is ${bytes(d.memory_limit_bytes)})`;
      break;
    case "time_limit":
      sentence = `${what} ran past its hard time limit and was killed`;
      break;
    case "lease_expired":
      sentence = "the worker running this call stopped heartbeating (it died, or its node was cut off)";
      break;
    case "redelivered":
      sentence = "the worker running this call disappeared and its message came back";
      break;
    case "worker_shutdown":
      sentence = "the worker was shut down while this call ran";
      break;
    case "abandoned":
      sentence = "the worker stopped running this call without recording how it ended";
      break;
    default:
      sentence = `it ended with ${d.cause}`;
  }
  if (d.runtime_s !== null && d.runtime_s !== undefined) sentence += ` after ${seconds(d.runtime_s)}`;
  if (d.max_rss_bytes) sentence += ` at ${bytes(d.max_rss_bytes)}`;
  sentence += "; it may have had side effects; it was not run again.";
  if (d.host) sentence += ` It ran on ${d.host}${d.pid ? `, pid ${d.pid}` : ""}${d.attempt ? `, attempt ${d.attempt}` : ""}.`;
  return sentence.charAt(0).toUpperCase() + sentence.slice(1);
}

boot();
