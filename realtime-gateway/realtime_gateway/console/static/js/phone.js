// The browser test phone: a call to an agent over the gateway's generic streaming socket
// (`/voice/stream/generic-http`), opened with a 5-minute call token minted for the signed-in
// operator (`POST /voice/calls/stream-tokens`). Typed input always; the microphone and spoken
// replies where the browser has the Web Speech API. The reply shows token by token; typing or
// speaking while the agent talks interrupts it (barge-in), keeping what was heard so far.

import { api } from "./api.js";
import { $, el, formatMs } from "./dom.js";

const Recognition = window.SpeechRecognition || window.webkitSpeechRecognition;

export class TestPhone {
  constructor() {
    this.socket = null;
    this.reply = null; // {node, text, streaming, sentAt, firstAt}
    this.callId = null;
    this.spokenUpTo = 0;
    this.recognition = null;
    $("#phone-call").addEventListener("click", () => this.call());
    $("#phone-hangup").addEventListener("click", () => this.hangUp());
    $("#phone-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send($("#phone-input").value);
    });
    $("#phone-input").addEventListener("input", () => {
      if ($("#phone-input").value) this.bargeIn();
    });
    const mic = $("#phone-mic");
    if (Recognition) {
      mic.hidden = false;
      mic.addEventListener("click", () => this.toggleMic());
    }
  }

  status(text) {
    $("#phone-status").textContent = text;
  }

  error(text) {
    $("#phone-error").textContent = text;
  }

  log(kind, text) {
    const node = el("li", { class: `said ${kind}` }, el("span", { class: "who" }, kind === "caller" ? "You" : "Agent"),
      el("span", { class: "text" }, text));
    $("#phone-log").append(node);
    node.scrollIntoView({ block: "nearest" });
    return node;
  }

  inCall(active) {
    $("#phone-call").disabled = active;
    $("#phone-agent").disabled = active;
    $("#phone-hangup").disabled = !active;
    $("#phone-input").disabled = !active;
    $("#phone-send").disabled = !active;
    $("#phone-mic").disabled = !active;
    if (!active) this.stopMic();
  }

  async call() {
    this.error("");
    const agent = $("#phone-agent").value;
    let minted;
    try {
      minted = await api("POST", "/voice/calls/stream-tokens", agent ? { agent_id: agent } : {});
    } catch (error) {
      this.error(error.message);
      return;
    }
    this.callId = minted.call_id;
    this.status(`Calling… (${minted.call_id})`);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(
      `${scheme}://${location.host}/voice/stream/generic-http?token=${encodeURIComponent(minted.token)}`);
    this.socket = socket;
    this.inCall(true);
    socket.addEventListener("open", () => {
      this.startReply(performance.now());
      socket.send(JSON.stringify({ type: "start", call_id: minted.call_id }));
    });
    socket.addEventListener("message", (message) => {
      try {
        this.frame(JSON.parse(message.data));
      } catch {
        /* not ours: ignore */
      }
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.finishReply();
      this.inCall(false);
      if (!/ended/.test($("#phone-status").textContent)) this.status("Call ended");
    });
  }

  frame(frame) {
    switch (frame.type) {
      case "started":
        this.status(`In call ${frame.call_id}`);
        $("#phone-input").focus();
        break;
      case "text":
        this.token(frame.token, frame.last);
        break;
      case "action":
        this.action(frame.action || {});
        break;
      case "error":
        this.error(frame.error ? frame.error.message : "error");
        break;
      case "end": {
        // After the agent's transfer or hang-up the caller's side hangs up too (a test call has
        // no one to transfer to): the gateway ends the call.
        const socket = this.socket;
        this.status(`Call ended (${frame.reason})`);
        if (socket) {
          socket.send(JSON.stringify({ type: "end" }));
          socket.close();
        }
        break;
      }
      default:
        break;
    }
  }

  startReply(sentAt) {
    this.reply = { node: null, text: "", streaming: true, sentAt, firstAt: null, heard: 0, cut: false };
    this.spokenUpTo = 0;
  }

  token(token, last) {
    const reply = this.reply;
    if (!reply || !reply.streaming) return; // what was left of an interrupted reply
    if (!reply.node) {
      reply.node = this.log("agent", "");
      reply.node.setAttribute("aria-busy", "true");
      reply.firstAt = performance.now();
    }
    reply.text += token;
    reply.node.querySelector(".text").textContent = reply.text;
    this.speak(false);
    if (last) this.finishReply();
  }

  finishReply() {
    const reply = this.reply;
    if (!reply || !reply.streaming) return;
    reply.streaming = false;
    if (!reply.node) return;
    reply.node.removeAttribute("aria-busy");
    this.speak(true);
    const first = reply.firstAt - reply.sentAt;
    const total = performance.now() - reply.sentAt;
    reply.node.append(el("span", { class: "timings" }, `first word ${formatMs(first)} · reply ${formatMs(total)}`));
  }

  action(action) {
    const label = action.type === "transfer" ? `transfer to ${action.to}` : action.type === "hangup"
      ? "hang up" : action.type === "send_digits" ? `send digits ${action.digits}` : action.type;
    const target = (this.reply && this.reply.node) || this.log("agent", "");
    target.append(el("span", { class: `chip a-${action.type}` }, label));
  }

  /** The caller talks over the reply: stop it, keeping what was shown (heard) so far. */
  bargeIn() {
    const reply = this.reply;
    if (!reply || !reply.node || !this.socket || reply.cut) return;
    // Still arriving, or (with "Speak replies") still being spoken: heard is what was shown, or
    // what was spoken so far.
    const speaking = Boolean(window.speechSynthesis?.speaking) && reply.heard < reply.text.length;
    if (!reply.streaming && !speaking) return;
    const heard = reply.streaming && !speaking ? reply.text : reply.text.slice(0, reply.heard);
    reply.streaming = false;
    reply.cut = true;
    reply.node.removeAttribute("aria-busy");
    reply.node.append(el("span", { class: "tag" }, "interrupted"));
    window.speechSynthesis?.cancel();
    this.socket.send(JSON.stringify({ type: "interrupt", heard }));
  }

  send(raw) {
    const text = raw.trim();
    if (!text || !this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    this.bargeIn();
    $("#phone-input").value = "";
    this.error("");
    const dtmf = /^\/dtmf\s+([0-9*#]+)$/.exec(text);
    if (text === "/hangup") {
      this.hangUp();
      return;
    }
    this.log("caller", dtmf ? `(keys ${dtmf[1]})` : text);
    this.startReply(performance.now());
    this.socket.send(JSON.stringify(dtmf ? { type: "dtmf", digits: dtmf[1] } : { type: "prompt", text }));
  }

  hangUp() {
    const socket = this.socket;
    if (!socket) return;
    this.bargeIn();
    socket.send(JSON.stringify({ type: "end" }));
    this.socket = null;
    this.finishReply();
    this.inCall(false);
    this.status("Call ended (you hung up)");
    socket.close();
  }

  /** Speak what is complete of the reply (whole sentences; everything once it is done). */
  speak(done) {
    if (!$("#phone-speak").checked || !window.speechSynthesis || !this.reply) return;
    const text = this.reply.text.slice(this.spokenUpTo);
    const cut = done ? text.length : Math.max(text.lastIndexOf(". "), text.lastIndexOf("? "), text.lastIndexOf("! ")) + 1;
    if (cut <= 0 || !text.slice(0, cut).trim()) return;
    const reply = this.reply;
    const offset = this.spokenUpTo;
    this.spokenUpTo += cut;
    const utterance = new SpeechSynthesisUtterance(text.slice(0, cut));
    utterance.addEventListener("boundary", (event) => {
      reply.heard = Math.max(reply.heard, offset + event.charIndex);
    });
    utterance.addEventListener("end", () => {
      reply.heard = Math.max(reply.heard, offset + cut);
    });
    window.speechSynthesis.speak(utterance);
  }

  toggleMic() {
    if (this.recognition) {
      this.stopMic();
      return;
    }
    const recognition = new Recognition();
    recognition.continuous = true;
    recognition.interimResults = true;
    recognition.lang = document.documentElement.lang || "en-US";
    recognition.addEventListener("speechstart", () => this.bargeIn());
    recognition.addEventListener("result", (event) => {
      for (let i = event.resultIndex; i < event.results.length; i += 1) {
        const result = event.results[i];
        if (!result.isFinal) this.bargeIn();
        else this.send(result[0].transcript);
      }
    });
    recognition.addEventListener("error", (event) => {
      this.error(`Microphone: ${event.error}. Type instead.`);
      this.stopMic();
    });
    recognition.addEventListener("end", () => {
      if (this.recognition === recognition) recognition.start(); // keep listening during the call
    });
    this.recognition = recognition;
    $("#phone-mic").setAttribute("aria-pressed", "true");
    recognition.start();
  }

  stopMic() {
    const recognition = this.recognition;
    this.recognition = null;
    $("#phone-mic").setAttribute("aria-pressed", "false");
    if (recognition) recognition.stop();
  }
}
