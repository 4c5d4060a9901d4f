// The console's entry point: sign-in, the sections (tabs), and the wiring between the live feed,
// the call tables, the transcripts, the forms and the test phone. What the signed-in role may
// not do is not offered (its controls are removed, not merely disabled).

import { Agents } from "./agents.js";
import { api, configure } from "./api.js";
import { CallBook } from "./calls.js";
import { setupDial } from "./dial.js";
import { $, $$, el } from "./dom.js";
import { LiveFeed } from "./live.js";
import { TestPhone } from "./phone.js";
import { Providers } from "./provider.js";
import { can, forget, keep, readToken, savedSession } from "./session.js";
import { TranscriptView } from "./transcript.js";

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  expired: "Token expired: sign in again",
  refused: "Token refused: sign in again",
  offline: "Not signed in",
};

let state = null; // the signed-in session: {session, feed, book, views, loaded, expiry}
let parts = null; // made once: {agents, providers, phone}

function setConnection(kind) {
  const node = $("#connection");
  node.dataset.state = kind;
  node.textContent = CONNECTION_TEXT[kind] || kind;
  if (kind === "expired" || kind === "refused") signOut(CONNECTION_TEXT[kind]);
}

function notice(text) {
  $("#notice").textContent = text;
}

function showSignIn(message = "") {
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#whoami").hidden = true;
  $("#sign-out").hidden = true;
  $("#token-error").textContent = message;
  $("#token").value = "";
  $("#token").focus();
}

function signOut(message = "") {
  if (!state) return;
  const { feed, book, expiry } = state;
  state = null;
  parts.phone.hangUp();
  feed.stop();
  book.dispose();
  clearTimeout(expiry);
  forget();
  configure({ token: null });
  setConnection("offline");
  showSignIn(message);
}

/** Remove what the role may not use (tabs, buttons, forms marked data-needs). */
function applyRole(session) {
  for (const node of $$("[data-needs]")) node.hidden = !can(session, node.dataset.needs);
}

function selectTab(tab, focus = false) {
  for (const other of $$("[role=tab]")) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(`#${other.getAttribute("aria-controls")}`).hidden = !selected;
  }
  if (focus) tab.focus();
  const loaders = { "tab-recent": loadCalls, "tab-agents": loadAgents, "tab-dial": loadAgents,
    "tab-phone": loadAgents, "tab-provider": () => parts.providers.load() };
  const load = loaders[tab.id];
  if (load && state && !state.loaded.has(tab.id)) {
    state.loaded.add(tab.id);
    load();
  }
}

function setupTabs() {
  const tabs = () => $$("[role=tab]").filter((t) => !t.hidden);
  for (const tab of $$("[role=tab]")) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      const list = tabs();
      const at = list.indexOf(tab);
      const moves = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: list.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      selectTab(list[(moves[event.key] + list.length) % list.length], true);
    });
  }
}

async function loadCalls() {
  if (!state) return;
  try {
    const data = await api("GET", "/voice/calls?limit=100");
    if (state) state.book.load(data.calls);
  } catch (error) {
    $("#recent-empty").textContent = `Calls unavailable: ${error.message}`;
  }
}

async function loadAgents() {
  if (state && !state.agentsLoading) state.agentsLoading = parts.agents.load();
  return state && state.agentsLoading;
}

function fillAgentPickers(agents) {
  for (const select of [$("#dial-agent"), $("#phone-agent")]) {
    const chosen = select.value;
    while (select.options.length > 1) select.remove(1);
    for (const agent of agents) {
      select.append(el("option", { value: agent.id }, `${agent.name} (${agent.id})`));
    }
    select.value = agents.some((a) => a.id === chosen) ? chosen : "";
  }
}

async function endCall(callId) {
  notice("");
  try {
    await api("POST", `/voice/calls/${encodeURIComponent(callId)}/end`);
    notice(`Call ${callId} ended.`);
  } catch (error) {
    notice(`Could not end call ${callId}: ${error.message}`);
  }
}

function start(session) {
  keep(session);
  configure({ token: session.token, onUnauthorized: () => signOut("The gateway refused this token: sign in again.") });
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#whoami").hidden = false;
  $("#whoami").textContent = `${session.sub || "signed in"} · ${session.role}`;
  $("#sign-out").hidden = false;
  applyRole(session);
  const operator = can(session, "operator");
  parts.agents.canEdit = operator;
  parts.agents.reset();
  const views = {
    live: new TranscriptView($("#live-detail"), { canEnd: operator, onEnd: endCall }),
    recent: new TranscriptView($("#recent-detail"), { canEnd: false, onEnd: endCall }),
  };
  const book = new CallBook({
    canEnd: operator,
    onEnd: endCall,
    onOpen: (callId, where) => views[where].show(callId, book.calls.get(callId)),
  });
  views.live.render();
  views.recent.render();
  const feed = new LiveFeed({
    token: session.token,
    onState: setConnection,
    onOpen: loadCalls,
    onEvent: (ev) => {
      book.event(ev);
      views.live.event(ev);
      views.recent.event(ev);
      if (ev.type === "call.started" && !views.live.callId) views.live.show(ev.call_id, book.calls.get(ev.call_id));
    },
    checkToken: async () => {
      try {
        await api("GET", "/voice/calls?limit=1");
        return true;
      } catch (error) {
        return error.status !== 401 && error.status !== 403;
      }
    },
  });
  const expiresIn = session.exp ? session.exp * 1000 - Date.now() : null;
  state = {
    session, feed, book, views, loaded: new Set(), agentsLoading: null,
    expiry: expiresIn !== null && expiresIn < 2 ** 31 ? setTimeout(() => signOut("Your token expired: sign in again."), expiresIn) : null,
  };
  selectTab($("#tab-live"));
  feed.start();
}

function setup() {
  setupTabs();
  setupDial($("#dial-form"));
  parts = { agents: new Agents({ onChange: fillAgentPickers }), providers: new Providers(), phone: new TestPhone() };
  $("#signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    try {
      start(readToken($("#token").value));
    } catch (error) {
      $("#token-error").textContent = error.message;
      $("#token").setAttribute("aria-invalid", "true");
      $("#token").focus();
    }
  });
  $("#sign-out").addEventListener("click", () => signOut());
  $("#dial-form").addEventListener("call-placed", (event) => {
    if (state) state.views.live.show(event.detail.call_id, state.book.calls.get(event.detail.call_id));
  });
  const session = savedSession();
  if (session) start(session);
  else showSignIn();
}

setup();
