// The calls the console knows: loaded from `GET /voice/calls`, kept current by `/ws` events.
// Live calls (not ended) fill the live table, with a duration that ticks and the last turn's
// latency; every call is in the recent table. Numbers are shown masked to every role.

import { $, clear, el, formatDuration, formatMs, formatTime, maskPhone, shortId } from "./dom.js";

const ENDED = new Set(["completed", "failed", "busy", "no-answer", "canceled", "cancelled", "ended"]);

export class CallBook {
  constructor({ canEnd, onOpen, onEnd }) {
    this.calls = new Map();
    this.canEnd = canEnd;
    this.onOpen = onOpen; // (call_id, where) -> show its transcript
    this.onEnd = onEnd; // (call_id) -> end it
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  dispose() {
    clearInterval(this.ticker);
  }

  load(list) {
    for (const call of list) {
      const known = this.calls.get(call.call_id) || {};
      this.calls.set(call.call_id, {
        ...known,
        ...call,
        ended: Boolean(call.ended_at) || ENDED.has(call.status),
        startedMs: Date.parse(call.started_at) || known.startedMs || Date.now(),
      });
    }
    this.render();
  }

  event(ev) {
    const data = ev.data || {};
    let call = this.calls.get(ev.call_id);
    if (ev.type === "call.started") {
      call = {
        call_id: ev.call_id,
        startedMs: Date.parse(ev.timestamp) || Date.now(),
        started_at: ev.timestamp,
        turns: 0,
        ...call,
        status: data.status || "in-progress",
        provider: data.provider,
        direction: data.direction,
        from: data.from,
        to: data.to,
        agent_id: data.agent_id,
        ended: false,
      };
    } else if (!call) {
      call = { call_id: ev.call_id, startedMs: Date.parse(ev.timestamp) || Date.now(),
        started_at: ev.timestamp, status: "in-progress", turns: 0, ended: false };
    }
    if (ev.type === "message.sent") {
      call.lastLatency = data.latency_ms;
      call.turns = Math.max(call.turns || 0, Number(data.turn_id) || (call.turns || 0) + 1);
    } else if (ev.type === "call.ended") {
      call.ended = true;
      call.status = data.status || "completed";
      call.end_reason = data.reason;
      call.duration_s = data.duration_s ?? (Date.now() - call.startedMs) / 1000;
      call.ended_at = ev.timestamp;
    }
    this.calls.set(ev.call_id, call);
    this.render();
  }

  get live() {
    return [...this.calls.values()].filter((c) => !c.ended).sort((a, b) => b.startedMs - a.startedMs);
  }

  get recent() {
    return [...this.calls.values()].sort((a, b) => b.startedMs - a.startedMs).slice(0, 100);
  }

  tick() {
    for (const cell of document.querySelectorAll("[data-ticks]")) {
      cell.textContent = formatDuration((Date.now() - Number(cell.dataset.ticks)) / 1000);
    }
  }

  actions(call, where) {
    const buttons = [
      el("button", { type: "button", class: "quiet", "aria-label": `Transcript of call ${call.call_id}`,
        onclick: () => this.onOpen(call.call_id, where) }, "View"),
    ];
    if (this.canEnd && !call.ended && where === "live") {
      buttons.push(el("button", { type: "button", class: "danger", "data-action": "end",
        "aria-label": `End call ${call.call_id}`, onclick: () => this.onEnd(call.call_id) }, "End"));
    }
    return el("td", { class: "actions" }, buttons);
  }

  render() {
    const focused = focusKey();
    const live = this.live;
    $("#live-count").textContent = String(live.length);
    $("#live-empty").hidden = live.length > 0;
    $("#live-table").parentElement.hidden = live.length === 0;
    clear($("#live-calls")).append(...live.map((call) => el("tr", { "data-call": call.call_id },
      firstCells(call),
      el("td", { "data-label": "Provider" }, call.provider || "—"),
      el("td", { "data-label": "Agent" }, call.agent_id || "default"),
      el("td", { "data-label": "Duration", "data-ticks": String(call.startedMs) },
        formatDuration((Date.now() - call.startedMs) / 1000)),
      el("td", { "data-label": "Last turn", class: "latency" }, formatMs(call.lastLatency)),
      this.actions(call, "live"),
    )));
    const recent = this.recent;
    $("#recent-empty").hidden = recent.length > 0;
    $("#recent-table").parentElement.hidden = recent.length === 0;
    clear($("#recent-calls")).append(...recent.map((call) => el("tr", { "data-call": call.call_id },
      firstCells(call),
      el("td", { "data-label": "Started" }, formatTime(call.started_at)),
      call.ended
        ? el("td", { "data-label": "Duration" }, formatDuration(call.duration_s))
        : el("td", { "data-label": "Duration", "data-ticks": String(call.startedMs) },
          formatDuration((Date.now() - call.startedMs) / 1000)),
      el("td", { "data-label": "Turns" }, String(call.turns ?? "—")),
      el("td", { "data-label": "Agent" }, call.agent_id || "default"),
      this.actions(call, "recent"),
    )));
    restoreFocus(focused);
  }
}

/** The cells every call table starts with: the call, its status, the caller (masked). */
function firstCells(call) {
  return [
    el("th", { scope: "row", title: call.call_id }, shortId(call.call_id)),
    el("td", { "data-label": "Status" }, el("span", { class: `status s-${call.status}` }, call.status)),
    el("td", { "data-label": "Caller" }, maskPhone(call.from)),
  ];
}

// Rows are redrawn on every event: keep the keyboard's place (the same button of the same call).
function focusKey() {
  const active = document.activeElement;
  const row = active && active.closest ? active.closest("tr[data-call]") : null;
  return row ? { table: row.closest("tbody").id, call: row.dataset.call, label: active.textContent } : null;
}

function restoreFocus(key) {
  if (!key) return;
  const row = document.querySelector(`#${key.table} tr[data-call="${CSS.escape(key.call)}"]`);
  const button = row && [...row.querySelectorAll("button")].find((b) => b.textContent === key.label);
  if (button) button.focus();
}
