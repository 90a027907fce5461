// The chatbot page: start or restore a chat, send messages, show the answer as its tokens stream in.
// The backend keeps the conversation; this page keeps only the session id (sessionStorage, per tab).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "course-chatbot-session";
let session = sessionStorage.getItem(KEY);

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;  // textContent, never innerHTML: a model's output is not markup
  item.append(who, body);
  $("log").append(item);
  item.scrollIntoView({ block: "end" });
  return body;
}

function showError(message) { $("error").textContent = message; $("error").hidden = false; }
function clearError() { $("error").textContent = ""; $("error").hidden = true; }

// fetch, with the app's errors and a dead server turned into readable messages.
async function api(path, body) {
  const options = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new Error(`Cannot reach the chatbot server at ${location.origin}. Is it still running (make chat)?`);
  }
  if (!response.ok) {
    let message = `The chatbot server answered ${response.status}.`;
    try { message = (await response.json()).error.message; } catch { /* keep the status line */ }
    throw new Error(message);
  }
  return response;
}

function showInfo(data) {
  $("info").textContent = `Model ${data.model} · memory: ${data.policy} within ${data.budget} prompt tokens`;
  $("system").value = data.system;
}

async function startSession(system) {
  const data = await (await api("/api/sessions", { system })).json();
  session = data.session;
  sessionStorage.setItem(KEY, session);
  $("log").replaceChildren();
  $("status").textContent = "";
  showInfo(data);
}

async function restore() {  // after a reload: the server still has this tab's chat
  if (session) {
    try {
      const data = await (await api(`/api/sessions/${encodeURIComponent(session)}`)).json();
      showInfo(data);
      for (const turn of data.turns) addMessage(turn.role, turn.content);
      return;
    } catch { /* forgotten or restarted: start again */ }
  }
  await startSession(null);
}

// A server-sent event stream read from a fetch body: frames end with a blank line, lines start "data: ".
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();  // stream: true keeps a character split across two chunks whole
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split("\n")) {
        if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
      }
    }
  }
}

function describeMemory(event) {
  const summary = event.summary ? " + a summary of older ones" : "";
  return `Sent ${event.prompt_tokens} of ${event.budget} prompt tokens (${event.policy}): ` +
    `${event.sent_turns} of ${event.total_turns} earlier messages${summary}.`;
}

async function send(text) {
  clearError();
  $("send").disabled = true;
  addMessage("user", text);
  const body = addMessage("assistant", "");
  const item = body.parentElement;
  item.classList.add("streaming");
  $("log").setAttribute("aria-busy", "true");
  let finished = false, failure = null, memory = "";
  try {
    const response = await api("/api/chat", { session, message: text });
    try {
      await readEvents(response, (event) => {
        if (event.type === "token") body.textContent += event.text;
        else if (event.type === "memory") { memory = describeMemory(event); $("status").textContent = memory; }
        else if (event.type === "done") {
          finished = true;
          $("status").textContent = `${memory} Answer: ${event.completion_tokens} tokens.`;
        } else if (event.type === "error") failure = event.message;
      });
    } catch {
      failure = "The connection to the chatbot server broke off in the middle of the answer.";
    }
    if (!finished && !failure) failure = "The answer was cut off: the chatbot server closed the connection.";
  } catch (error) {
    failure = error.message;
  }
  item.classList.remove("streaming");
  $("log").removeAttribute("aria-busy");
  if (failure) {
    item.classList.add("failed");
    if (!body.textContent) body.textContent = "(no answer: this message was not kept, send it again)";
    showError(failure);
  }
  $("send").disabled = false;
  $("message").focus();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || $("send").disabled) return;
  $("message").value = "";
  send(text);
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
$("new-chat").addEventListener("click", () => {
  clearError();
  startSession($("system").value).catch((error) => showError(error.message));
});
restore().catch((error) => showError(error.message));
