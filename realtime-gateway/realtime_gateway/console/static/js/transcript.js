// One call's transcript: what is stored (`GET /conversations/{id}` through the gateway), then
// each turn as `/ws` reports it. A turn shows what the caller said, what the agent answered,
// the actions it took (transfer, hang-up, digits, …) and its timings. A viewer reads the shape
// of the call only: the API withholds the words, and so does this view.

import { api } from "./api.js";
import { clear, el, formatDuration, formatMs, maskPhone } from "./dom.js";

const QUIET_ACTIONS = new Set(["say", "gather"]);
// The timings shown first (the rest are one click away): `round_trip` is the whole turn the
// gateway measured, then the stream's first token and the agent's main stages.
const MAIN_TIMINGS = ["round_trip", "first_token", "first_frame", "llm", "tools", "memory", "total"];

function actionLabel(action) {
  switch (action.type) {
    case "transfer": return `transfer to ${action.to || "?"}`;
    case "hangup": return `hang up${action.reason ? ` (${action.reason})` : ""}`;
    case "send_digits": return `send digits ${action.digits || ""}`.trim();
    case "play": return "play audio";
    case "stream": return "stream";
    default: return action.type;
  }
}

export class TranscriptView {
  constructor(container, { canEnd, onEnd }) {
    this.container = container;
    this.canEnd = canEnd;
    this.onEnd = onEnd;
    this.callId = null;
    this.turns = new Map();
    this.meta = {};
    this.note = "";
  }

  turn(id) {
    const key = String(id ?? "?");
    if (!this.turns.has(key)) this.turns.set(key, { id: key, actions: [], timings: {} });
    return this.turns.get(key);
  }

  async show(callId, call) {
    this.callId = callId;
    this.turns = new Map();
    this.meta = { ...(call || {}) };
    this.note = "Loading…";
    this.render();
    await this.refresh();
  }

  /** Read what is stored of the call; what `/ws` already said of a turn is kept. */
  async refresh() {
    const callId = this.callId;
    this.stored = "loading";
    try {
      const conversation = await api("GET", `/console/api/conversations/${encodeURIComponent(callId)}`);
      if (this.callId !== callId) return;
      this.merge(conversation);
      this.stored = "yes";
      this.note = "";
    } catch (error) {
      if (this.callId !== callId) return;
      this.stored = error.status === 404 ? "not yet" : "no";
      this.note = error.status === 404
        ? "Nothing stored for this call yet; its turns appear here as they happen."
        : `Transcript unavailable: ${error.message}`;
    }
    this.render();
  }

  merge(conversation) {
    this.meta = { ...this.meta, agent_id: conversation.agent_id, caller: conversation.caller,
      summary: conversation.summary, withheld: conversation.personal_data === "withheld" };
    for (const message of conversation.messages) {
      const turn = this.turn(message.turn_id);
      if (message.role === "user") {
        if (turn.caller === undefined) turn.caller = message.content;
      } else {
        if (turn.agent === undefined || message.interrupted) turn.agent = message.content;
        if (!turn.actions.length) turn.actions = message.actions || [];
        turn.timings = { ...message.timings_ms, ...turn.timings };
        turn.interrupted = message.interrupted;
      }
    }
  }

  event(ev) {
    if (ev.call_id !== this.callId) return;
    const data = ev.data || {};
    if (ev.type === "message.received") {
      const turn = this.turn(data.turn_id);
      turn.caller = data.text ?? (data.digits ? `(keyed ${data.digits})` : null);
      turn.withheld = data.personal_data === "withheld";
    } else if (ev.type === "message.sent") {
      const turn = this.turn(data.turn_id);
      turn.agent = "text" in data ? data.text : turn.agent; // null: withheld from this reader
      turn.actions = data.actions || turn.actions;
      turn.timings = { ...(data.latency_ms !== undefined ? { round_trip: data.latency_ms } : {}), ...(data.timings_ms || {}) };
      turn.withheld = data.personal_data === "withheld";
      // Opened before the call was stored (its greeting too): read it now that it is.
      if (this.stored === "not yet") this.refresh();
    } else if (ev.type === "call.ended") {
      this.meta.status = data.status || "completed";
      this.meta.ended = true;
      this.meta.end_reason = data.reason;
      this.meta.duration_s = data.duration_s;
    } else if (ev.type === "error.occurred") {
      const turn = this.turn(data.turn_id ?? "error");
      turn.error = data.message || data.code;
    } else {
      return;
    }
    if (this.stored === "not yet") this.note = "";
    this.render();
  }

  render() {
    const meta = this.meta;
    const root = clear(this.container);
    if (!this.callId) {
      root.append(el("p", { class: "empty" }, "Choose a call to see its transcript."));
      return;
    }
    const header = el("div", { class: "pane-head" },
      el("h2", { id: `${root.id}-title` }, "Call ", el("code", {}, this.callId)));
    if (this.canEnd && !meta.ended) {
      header.append(el("button", { type: "button", class: "danger",
        onclick: () => this.onEnd(this.callId) }, "End call"));
    }
    root.append(header, el("p", { class: "meta" },
      [`status ${meta.ended ? meta.status || "ended" : meta.status || "in progress"}`,
        `caller ${maskPhone(meta.from || meta.caller)}`,
        `agent ${meta.agent_id || "default"}`,
        meta.provider ? `via ${meta.provider}` : null,
        meta.ended && meta.duration_s != null ? `lasted ${formatDuration(meta.duration_s)}` : null,
        meta.end_reason ? `ended: ${meta.end_reason}` : null].filter(Boolean).join(" · ")));
    if (meta.summary) root.append(el("p", { class: "summary" }, meta.summary));
    if (this.note) root.append(el("p", { class: "empty" }, this.note));
    const list = el("ol", { class: "turns", "aria-label": "Turns" });
    const ordered = [...this.turns.values()].sort((a, b) => (Number(a.id) || 0) - (Number(b.id) || 0));
    for (const turn of ordered) {
      const withheld = turn.withheld || meta.withheld;
      const item = el("li", { class: "turn", "data-turn": turn.id });
      if (turn.caller !== undefined) {
        item.append(el("p", { class: "said caller" }, el("span", { class: "who" }, "Caller"),
          turn.caller ?? (withheld ? "(words withheld)" : "")));
      }
      if (turn.agent !== undefined) {
        item.append(el("p", { class: "said agent" }, el("span", { class: "who" }, "Agent"),
          turn.agent ?? (withheld ? "(words withheld)" : ""),
          turn.interrupted ? el("span", { class: "tag" }, "interrupted") : null));
      }
      const actions = (turn.actions || []).filter((a) => !QUIET_ACTIONS.has(a.type));
      if (actions.length) {
        item.append(el("ul", { class: "chips", "aria-label": "Actions" },
          actions.map((a) => el("li", { class: `chip a-${a.type}` }, actionLabel(a)))));
      }
      const timings = Object.entries(turn.timings || {}).filter(([, v]) => typeof v === "number");
      if (timings.length) item.append(timingsOf(turn.id, timings));
      if (turn.error) item.append(el("p", { class: "field-error" }, turn.error));
      list.append(item);
    }
    root.append(list);
  }
}

function timingsOf(turnId, timings) {
  const all = Object.fromEntries(timings);
  const main = MAIN_TIMINGS.filter((k) => k in all).map((k) => `${k.replaceAll("_", " ")} ${formatMs(all[k])}`);
  const label = /^\d+$/.test(turnId) ? `turn ${turnId}` : turnId;
  return el("div", { class: "timings" },
    el("span", {}, `${label} timings${main.length ? `: ${main.join(" · ")}` : ""}`),
    el("details", {}, el("summary", {}, "every stage"),
      el("dl", { class: "settings" }, timings.map(([k, v]) => [el("dt", {}, k), el("dd", {}, formatMs(v))]))));
}
