// The voice provider: which one is current, each one's state, and (admin) switching new calls
// to another. The API refuses a provider whose configuration does not validate, and says why.

import { api, clearErrors, showError } from "./api.js";
import { $, clear, el } from "./dom.js";

export class Providers {
  constructor() {
    this.form = $("#provider-form"); // shown to admins only (data-needs)
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.switchTo($("#provider-select").value);
    });
  }

  async load() {
    let data;
    try {
      data = await api("GET", "/voice/providers");
    } catch (error) {
      $("#provider-current").textContent = `Providers unavailable: ${error.message}`;
      return;
    }
    $("#provider-current").textContent = `New calls go through ${data.current_provider}.`;
    clear($("#provider-list")).append(...data.available_providers.map((name) => {
      const p = data.providers[name] || {};
      const missing = p.missing && p.missing.length ? ` — missing ${p.missing.join(", ")}` : "";
      return el("li", { "data-provider": name }, el("strong", {}, name), ` ${p.status || ""}${missing}`);
    }));
    clear($("#provider-select")).append(...data.available_providers.map((name) =>
      el("option", { value: name, selected: name === data.current_provider }, name)));
  }

  async switchTo(provider) {
    clearErrors(this.form);
    $("#provider-result").textContent = "";
    try {
      const answer = await api("POST", "/voice/providers/switch", { provider });
      $("#provider-result").textContent = `Switched: new calls go through ${answer.provider}.`;
      await this.load();
    } catch (error) {
      showError(this.form, error.message.startsWith("provider") ? error.message : `provider: ${error.message}`);
    }
  }
}
