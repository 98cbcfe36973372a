// DACA chat page: a minimal chat front end over the gateway's GraphQL API.
// No build step and no third-party code: queries and mutations with fetch,
// subscriptions over the graphql-transport-ws protocol on a WebSocket.
// Replies stream with chatStream (resumed with `after` when the socket
// drops), with the agent's tool calls as they run; earlier history pages
// load on scroll (conversation with `before`), and Stop calls cancelChat.
// A tool call that waits for the user's decision shows Approve / Deny
// (decideToolCall), on whichever page of the user's is open.
// The user's sessions are listed beside the conversation (sessions, newest
// first, kept current by conversationUpdated); "New chat" starts a session.
"use strict";

const params = new URLSearchParams(location.search);
const PAGE = Math.max(1, Number(params.get("page")) || 20);
const endpoint = "/graphql";
const $ = (id) => document.getElementById(id);

let token = "";
let userId = "";
let sessionId = "";
let oldestCursor = null;
let hasPrevious = false;
let loadingOlder = false;
let current = null; // the turn being streamed: {instanceId, bubble, lastSeq, stop}

function status(text) { $("status").textContent = text; }

function randomId(prefix) {
  const b = new Uint8Array(8);
  crypto.getRandomValues(b);
  return prefix + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function gql(query, variables) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch(endpoint, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await res.json().catch(() => ({ errors: [{ message: "HTTP " + res.status }] }));
  if (body.errors && body.errors.length) {
    const e = body.errors[0];
    throw new Error((e.extensions && e.extensions.code ? e.extensions.code + ": " : "") + e.message);
  }
  return body.data;
}

// Socket is one graphql-transport-ws connection; it reconnects when it
// drops, and each subscription's onReconnect decides how it resumes.
class Socket {
  constructor() { this.subs = new Map(); this.next = 1; this.ready = null; }

  connect() {
    if (this.ready) return this.ready;
    this.ready = new Promise((resolve, reject) => {
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + endpoint;
      const ws = new WebSocket(url, "graphql-transport-ws");
      this.ws = ws;
      ws.onopen = () => ws.send(JSON.stringify({ type: "connection_init", payload: token ? { Authorization: "Bearer " + token } : {} }));
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (m.type === "connection_ack") { resolve(); return; }
        if (m.type === "ping") { ws.send(JSON.stringify({ type: "pong" })); return; }
        const s = this.subs.get(m.id);
        if (!s) return;
        if (m.type === "next") {
          if (m.payload.errors && !m.payload.data) { this.subs.delete(m.id); s.error(m.payload.errors[0]); } else s.next(m.payload.data);
        } else if (m.type === "error") { this.subs.delete(m.id); s.error(m.payload[0] || { message: "error" }); }
        else if (m.type === "complete") { this.subs.delete(m.id); s.complete(); }
      };
      ws.onclose = (ev) => {
        this.ready = null;
        reject(new Error("websocket closed (" + ev.code + ")"));
        const open = Array.from(this.subs.values());
        this.subs.clear();
        if (open.length) {
          status("connection lost; reconnecting…");
          setTimeout(() => open.forEach((s) => s.onReconnect()), 1000);
        }
      };
    });
    return this.ready;
  }

  async subscribe(query, variables, handlers) {
    await this.connect();
    const id = String(this.next++);
    this.subs.set(id, handlers);
    this.ws.send(JSON.stringify({ id, type: "subscribe", payload: { query, variables } }));
    return () => {
      if (this.subs.delete(id) && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ id, type: "complete" }));
    };
  }
}

const socket = new Socket();

function bubble(role, text, atTop, toolCalls) {
  const el = document.createElement("div");
  el.className = "msg " + (role === "USER" ? "user" : "assistant");
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  el.append(body);
  (toolCalls || []).forEach((c) => showTool(el, c));
  const box = $("messages");
  if (atTop) box.prepend(el); else box.append(el);
  return el;
}

// showTool shows a tool call above the reply it led to, one line per call
// (by id), updated as it runs: RUNNING, then COMPLETED or FAILED with its
// result; a call that waits for a decision has Approve / Deny (with an
// optional reason) until it is decided, here or elsewhere.
function showTool(el, c) {
  const key = c.id || c.name;
  let t = [...el.querySelectorAll(".tool")].find((x) => x.dataset.call === key);
  if (!t) {
    t = document.createElement("span");
    t.className = "tool";
    t.dataset.call = key;
    const body = el.querySelector(".body");
    el.insertBefore(t, body);
  }
  t.dataset.status = c.status || "COMPLETED";
  t.dataset.tool = c.name;
  const where = c.server ? " @" + c.server : "";
  const mark = { RUNNING: "⏳", COMPLETED: "🔧", FAILED: "⚠️" }[t.dataset.status] || "🔧";
  t.textContent = mark + " " + c.name + where + "(" + c.arguments + ") → " + (c.result || "…");
  const a = c.approval;
  if (!a) return;
  t.dataset.approval = a.status;
  if (a.status !== "PENDING") {
    const said = { APPROVED: "approved", DENIED: "denied", EXPIRED: "not decided in time" }[a.status] || a.status;
    t.append(" (" + said + (a.decidedBy ? " by " + a.decidedBy : "") + (a.reason ? ": " + a.reason : "") + ")");
    return;
  }
  const box = document.createElement("span");
  box.className = "decide";
  const reason = document.createElement("input");
  reason.placeholder = "reason (optional)";
  reason.className = "reason";
  const yes = document.createElement("button");
  yes.textContent = "Approve";
  yes.className = "approve";
  const no = document.createElement("button");
  no.textContent = "Deny";
  no.className = "deny";
  const send = async (approve) => {
    yes.disabled = no.disabled = true;
    try {
      const d = await gql(DECIDE, { id: a.id, ok: approve, why: reason.value || null });
      showTool(el, Object.assign({}, c, { approval: d.decideToolCall }));
    } catch (e) {
      status(e.message);
      yes.disabled = no.disabled = false;
    }
  };
  yes.onclick = () => send(true);
  no.onclick = () => send(false);
  box.append(" waits for your approval: ", yes, no, reason);
  t.append(box);
}

const DECIDE = `mutation($id: ID!, $ok: Boolean!, $why: String) {
  decideToolCall(approvalId: $id, approve: $ok, reason: $why) { id status reason decidedBy } }`;

function scrollToEnd() { const box = $("messages"); box.scrollTop = box.scrollHeight; }

const HISTORY = `query($s: ID!, $last: Int, $before: String) {
  conversation(sessionId: $s, last: $last, before: $before) { hasPrevious messages { role content cursor
    toolCalls { id name server arguments result status approval { id status reason decidedBy } } } } }`;

async function loadHistory(before) {
  const d = await gql(HISTORY, { s: sessionId, last: PAGE, before });
  const c = d.conversation;
  hasPrevious = c.hasPrevious;
  $("messages").dataset.hasPrevious = String(hasPrevious);
  if (c.messages.length) oldestCursor = c.messages[0].cursor;
  return c.messages;
}

async function loadOlder() {
  if (loadingOlder || !hasPrevious || !oldestCursor) return;
  loadingOlder = true;
  const box = $("messages");
  const fromBottom = box.scrollHeight - box.scrollTop;
  try {
    const msgs = await loadHistory(oldestCursor);
    for (let i = msgs.length - 1; i >= 0; i--) bubble(msgs[i].role, msgs[i].content, true, msgs[i].toolCalls);
    box.scrollTop = box.scrollHeight - fromBottom; // keep what the reader looked at in place
    status(hasPrevious ? "scroll up for earlier messages" : "the beginning of the conversation");
  } catch (e) {
    status("earlier messages: " + e.message);
  } finally {
    loadingOlder = false;
  }
}

async function open() {
  userId = $("user").value.trim();
  sessionId = $("session").value.trim() || randomId("s-");
  token = $("token").value.trim();
  watchSessions();
  $("session").value = sessionId;
  const url = new URL(location.href);
  url.searchParams.set("user", userId);
  url.searchParams.set("session", sessionId);
  history.replaceState(null, "", url);
  $("messages").replaceChildren();
  oldestCursor = null;
  try {
    const msgs = await loadHistory(null);
    msgs.forEach((m) => bubble(m.role, m.content, false, m.toolCalls));
    markCurrentSession();
    scrollToEnd();
    status(msgs.length ? "session " + sessionId : "new session " + sessionId);
    watchApprovals(); // after the history: a waiting call shows below it
    // A short page may not fill the box: load more until it scrolls.
    while (hasPrevious && $("messages").scrollHeight <= $("messages").clientHeight) await loadOlder();
  } catch (e) {
    status(e.message);
  }
}

const STREAM = `subscription($id: ID!, $after: Int) {
  chatStream(instanceId: $id, after: $after) { seq delta text status done restarted toolCall { id name server arguments result status approval { id status reason decidedBy } } } }`;

function follow(turn) {
  const body = turn.bubble.querySelector(".body");
  const onChunk = (d) => {
    const c = d.chatStream;
    if (c.seq <= turn.lastSeq) return;
    turn.lastSeq = c.seq;
    turn.chunks++;
    turn.bubble.dataset.chunks = String(turn.chunks);
    if (c.toolCall) showTool(turn.bubble, c.toolCall);
    body.textContent = c.text; // the reply so far (a restarted reply replaces it)
    scrollToEnd();
    if (c.done) finish(turn, c.status);
  };
  const subscribeFrom = () => socket.subscribe(STREAM, { id: turn.instanceId, after: turn.lastSeq || null }, {
    next: onChunk,
    error: (e) => {
      // A backend that is briefly unavailable: subscribe again (resuming
      // after the last chunk shown), a few times.
      const code = e.extensions && e.extensions.code;
      if (code === "UNAVAILABLE" && (turn.retries = (turn.retries || 0) + 1) <= 3) {
        setTimeout(() => subscribeFrom().then((u) => { turn.unsubscribe = u; }), 500 * turn.retries);
        return;
      }
      finish(turn, "FAILED", e.message);
    },
    complete: () => {},
    onReconnect: () => { if (current === turn) subscribeFrom().then((u) => { turn.unsubscribe = u; status("reconnected; resuming the reply"); }); },
  });
  return subscribeFrom();
}

function finish(turn, st, message) {
  if (turn.ended) return;
  turn.ended = true;
  turn.bubble.classList.remove("streaming");
  turn.bubble.dataset.status = st;
  if (st !== "COMPLETED") {
    const e = document.createElement("span");
    e.className = "end";
    e.textContent = st === "TERMINATED" ? "Stopped." : "The reply failed" + (message ? ": " + message : ".");
    turn.bubble.append(e);
  }
  if (turn.unsubscribe) turn.unsubscribe();
  if (current === turn) current = null;
  $("send").disabled = false;
  $("stop").hidden = true;
  status(st === "COMPLETED" ? "" : st.toLowerCase());
}

async function send(ev) {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text || current) return;
  if (!sessionId || !userId) await open();
  $("text").value = "";
  bubble("USER", text);
  const reply = bubble("ASSISTANT", "");
  reply.classList.add("streaming");
  scrollToEnd();
  $("send").disabled = true;
  status("the agent is writing…");
  try {
    const d = await gql(`mutation($in: SendMessageInput!) { startChat(input: $in) { instanceId } }`,
      { in: { userId, text, sessionId, idempotencyKey: randomId("k-") } });
    current = { instanceId: d.startChat.instanceId, bubble: reply, lastSeq: 0, chunks: 0 };
    reply.dataset.instanceId = current.instanceId;
    $("stop").hidden = false;
    current.unsubscribe = await follow(current);
  } catch (e) {
    finish({ bubble: reply }, "FAILED", e.message);
  }
}

// The user's sessions, newest first, with their last message; clicking one
// opens it. Kept current by conversationUpdated for the user.
const SESSIONS = `query($u: ID!) { sessions(userId: $u) { sessionId updatedAt messageCount lastMessage { role content } } }`;
let sessionsUser = "";
let sessionsUnsubscribe = null;

async function loadSessions() {
  if (!userId) return;
  try {
    const d = await gql(SESSIONS, { u: userId });
    const list = $("session-list");
    list.replaceChildren();
    for (const s of d.sessions) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.session = s.sessionId;
      const last = s.lastMessage ? s.lastMessage.content : "";
      b.textContent = (last.length > 60 ? last.slice(0, 60) + "…" : last) || s.sessionId;
      b.title = s.sessionId + " · " + s.messageCount + " messages · " + new Date(s.updatedAt).toLocaleString();
      b.addEventListener("click", () => { if (!current) { $("session").value = s.sessionId; open(); } });
      li.append(b);
      list.append(li);
    }
    markCurrentSession();
  } catch (e) {
    status("sessions: " + e.message);
  }
}

function markCurrentSession() {
  for (const b of document.querySelectorAll("#session-list button")) b.classList.toggle("current", b.dataset.session === sessionId);
}

function watchSessions() {
  if (!userId || sessionsUser === userId) return;
  sessionsUser = userId;
  if (sessionsUnsubscribe) sessionsUnsubscribe();
  loadSessions();
  const resubscribe = () => socket.subscribe(`subscription($u: ID) { conversationUpdated(userId: $u) { eventId sessionId } }`, { u: userId }, {
    next: () => loadSessions(),
    error: () => {},
    complete: () => {},
    onReconnect: () => { loadSessions(); resubscribe().then((u) => { sessionsUnsubscribe = u; }); },
  });
  resubscribe().then((u) => { sessionsUnsubscribe = u; }).catch(() => {});
}

// Requests for a decision of the user's: a call of the turn being
// streamed shows in its reply already; one of another turn of the open
// session (the page was reloaded while it waited, or another tab started
// it) gets a bubble of its own with Approve / Deny. A new subscriber gets
// the pending ones first.
const APPROVALS = `subscription($u: ID!) { approvalRequested(userId: $u) { id instanceId sessionId server tool arguments status reason decidedBy } }`;
let approvalsUnsubscribe = null;

function watchApprovals() {
  if (approvalsUnsubscribe) approvalsUnsubscribe();
  const onRequest = (d) => {
    const a = d.approvalRequested;
    if (a.sessionId !== sessionId || (current && current.instanceId === a.instanceId)) return;
    let el = document.querySelector('.msg[data-waiting="' + a.instanceId + '"]');
    if (!el) {
      el = bubble("ASSISTANT", "");
      el.dataset.waiting = a.instanceId;
      scrollToEnd();
    }
    showTool(el, { id: a.id, name: a.server + "_" + a.tool, server: a.server, arguments: a.arguments, status: "RUNNING", approval: a });
  };
  const resubscribe = () => socket.subscribe(APPROVALS, { u: userId }, {
    next: onRequest,
    error: () => {},
    complete: () => {},
    onReconnect: () => resubscribe().then((u) => { approvalsUnsubscribe = u; }),
  });
  resubscribe().then((u) => { approvalsUnsubscribe = u; }).catch(() => {});
}

function newChat() {
  if (current) return;
  $("session").value = randomId("s-");
  open();
}

async function stop() {
  const turn = current;
  if (!turn) return;
  $("stop").disabled = true;
  try {
    await gql(`mutation($id: ID!) { cancelChat(instanceId: $id) { status } }`, { id: turn.instanceId });
    status("stopping…"); // the stream's last chunk says TERMINATED
  } catch (e) {
    status("stop: " + e.message);
  } finally {
    $("stop").disabled = false;
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("user").value = params.get("user") || randomId("user-");
  $("session").value = params.get("session") || "";
  $("open").addEventListener("click", open);
  $("new-chat").addEventListener("click", newChat);
  $("composer").addEventListener("submit", send);
  $("stop").addEventListener("click", stop);
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("messages").addEventListener("scroll", () => { if ($("messages").scrollTop < 40) loadOlder(); });
  if (params.get("session")) open();
  else if (params.get("user")) { userId = $("user").value.trim(); watchSessions(); status("pick a session, or write to start a new one"); }
});
