// The `/ws` feed: every call's events, reconnected by itself. A gateway restart (or a network
// blip) closes the socket; it is opened again with a growing pause (0.5 s up to 5 s), and each
// new connection is announced (`onOpen`) so the console reloads the calls it may have missed.
// A close for an expired token ends the feed (sign in again); a handshake that fails while the
// gateway is up is checked once over HTTP, so a refused token stops the retries.

const PAUSES_MS = [500, 1000, 2000, 4000, 5000];

export class LiveFeed {
  constructor({ token, onEvent, onState, onOpen, checkToken }) {
    this.token = token;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onOpen = onOpen;
    this.checkToken = checkToken; // async () => true if the token is still accepted
    this.failures = 0;
    this.stopped = false;
    this.socket = null;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "signed out");
    this.socket = null;
  }

  connect() {
    if (this.stopped) return;
    this.onState(this.failures ? "reconnecting" : "connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/ws?batch=1&token=${encodeURIComponent(this.token)}`;
    let opened = false;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      opened = true;
      this.failures = 0;
      this.onState("live");
      this.onOpen();
    });
    socket.addEventListener("message", (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      for (const item of Array.isArray(data) ? data : [data]) {
        if (item && typeof item.type === "string" && item.call_id) this.onEvent(item);
      }
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      if (event.code === 1008 && /expired/.test(event.reason)) {
        this.onState("expired");
        return;
      }
      this.retry(opened);
    });
  }

  async retry(wasOpen) {
    this.failures += 1;
    this.onState("reconnecting");
    if (!wasOpen && this.failures >= 2 && (await gatewayUp()) && !(await this.checkToken())) {
      this.onState("refused");
      return;
    }
    const pause = PAUSES_MS[Math.min(this.failures - 1, PAUSES_MS.length - 1)];
    this.timer = setTimeout(() => this.connect(), pause * (0.8 + Math.random() * 0.4));
  }
}

async function gatewayUp() {
  try {
    const response = await fetch("/health", { cache: "no-store" });
    return response.status === 200 || response.status === 503;
  } catch {
    return false;
  }
}
