// Agents: the list, one agent's settings, and a form to create or edit one (prompt, greeting,
// language, voice mode, tools, transfer number, the numbers it answers). The orchestrator
// validates; its message names the field (`configuration.language: …`) and is shown there.

import { api, clearErrors, showError } from "./api.js";
import { $, $$, clear, el } from "./dom.js";

export class Agents {
  constructor({ onChange }) {
    this.canEdit = false; // set at sign-in: operator or admin
    this.onChange = onChange; // (agents) -> e.g. refresh the agent pickers
    this.agents = [];
    this.editing = null; // the agent being edited, or null for a new one
    this.form = $("#agent-form");
    this.view = $("#agent-view");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    $("#agent-cancel").addEventListener("click", () => this.closeForm());
    $("#agent-new").addEventListener("click", () => this.edit(null));
  }

  reset() {
    this.agents = [];
    this.editing = null;
    this.form.hidden = true;
    this.view.hidden = true;
    clear($("#agent-list"));
  }

  async load() {
    const list = $("#agent-list");
    try {
      const data = await api("GET", "/console/api/agents?limit=200");
      this.agents = data.agents;
    } catch (error) {
      clear(list).append(el("li", { class: "field-error" }, `Agents unavailable: ${error.message}`));
      return this.agents;
    }
    clear(list).append(...this.agents.map((agent) => el("li", {},
      el("button", { type: "button", class: "agent-item", "data-agent": agent.id,
        onclick: () => this.show(agent.id) },
      el("strong", {}, agent.name), " ", el("code", {}, agent.id),
      agent.is_default ? el("span", { class: "tag" }, "default") : null))));
    this.onChange(this.agents);
    return this.agents;
  }

  find(id) {
    return this.agents.find((a) => a.id === id);
  }

  show(id) {
    const agent = this.find(id);
    if (!agent) return;
    const c = agent.configuration || {};
    this.form.hidden = true;
    const rows = [
      ["Id", agent.id],
      ["Language", c.language || "en-US"],
      ["Voice mode", c.voice_mode || "gateway default"],
      ["Greeting", c.greeting || "—"],
      ["System prompt", c.system_prompt || "—"],
      ["Transfer number", c.transfer_number || "—"],
      ["Numbers it answers", (c.phone_numbers || []).join(", ") || "—"],
      ["Tools", (c.tools || []).map((t) => (typeof t === "string" ? t : `${t.name} (HTTP)`)).join(", ") || "all built-ins"],
    ];
    clear(this.view).append(
      el("div", { class: "pane-head" }, el("h2", {}, agent.name),
        this.canEdit ? el("button", { type: "button", onclick: () => this.edit(agent.id) }, "Edit") : null),
      el("dl", { class: "settings" }, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    );
    this.view.hidden = false;
  }

  edit(id) {
    const agent = id ? this.find(id) : null;
    this.editing = agent;
    const c = (agent && agent.configuration) || {};
    clearErrors(this.form);
    $(".form-result", this.form).textContent = "";
    $("#agent-form-title").textContent = agent ? `Edit ${agent.name}` : "New agent";
    $("#agent-save").textContent = agent ? "Save changes" : "Create agent";
    $("#agent-name").value = agent ? agent.name : "";
    $("#agent-prompt").value = c.system_prompt || "";
    $("#agent-greeting").value = c.greeting || "";
    $("#agent-language").value = agent ? c.language || "" : "";
    $("#agent-voice-mode").value = c.voice_mode || "";
    $("#agent-transfer").value = c.transfer_number || "";
    $("#agent-numbers").value = (c.phone_numbers || []).join(", ");
    const tools = c.tools || [];
    for (const box of $$("input[name=tool]", this.form)) box.checked = tools.includes(box.value);
    const http = tools.filter((t) => typeof t !== "string");
    $("#agent-http-tools").value = http.length ? JSON.stringify(http, null, 2) : "";
    this.view.hidden = true;
    this.form.hidden = false;
    $("#agent-name").focus();
  }

  closeForm() {
    this.form.hidden = true;
    if (this.editing) this.show(this.editing.id);
  }

  /** The request body, or null after showing a problem found here. */
  body() {
    const text = (selector) => $(selector).value.trim();
    const editing = Boolean(this.editing);
    const orNull = (value) => (value ? value : editing ? null : undefined);
    let http = [];
    const raw = text("#agent-http-tools");
    if (raw) {
      try {
        http = JSON.parse(raw);
      } catch (error) {
        showError(this.form, `configuration.tools: not valid JSON (${error.message})`);
        return null;
      }
      if (!Array.isArray(http)) {
        showError(this.form, "configuration.tools: write the HTTP tools as a JSON list [ {…} ]");
        return null;
      }
    }
    const configuration = {
      system_prompt: orNull(text("#agent-prompt")),
      greeting: orNull(text("#agent-greeting")),
      language: text("#agent-language") || undefined,
      voice_mode: orNull($("#agent-voice-mode").value),
      transfer_number: orNull(text("#agent-transfer")),
      phone_numbers: text("#agent-numbers").split(",").map((n) => n.trim()).filter(Boolean),
      tools: [...$$("input[name=tool]:checked", this.form).map((b) => b.value), ...http],
    };
    for (const key of Object.keys(configuration)) {
      if (configuration[key] === undefined) delete configuration[key];
    }
    const body = { configuration };
    if (text("#agent-name")) body.name = text("#agent-name");
    return body;
  }

  async save() {
    clearErrors(this.form);
    const result = $(".form-result", this.form);
    result.textContent = "";
    const body = this.body();
    if (!body) return;
    const button = $("#agent-save");
    button.disabled = true;
    try {
      const agent = this.editing
        ? await api("PATCH", `/console/api/agents/${encodeURIComponent(this.editing.id)}`, body)
        : await api("POST", "/console/api/agents/create", body);
      result.textContent = this.editing ? `Saved ${agent.name}.` : `Created ${agent.name} (${agent.id}).`;
      await this.load();
      this.editing = agent;
      this.show(agent.id);
      $("#agent-view").prepend(el("p", { class: "form-result", role: "status" }, result.textContent));
    } catch (error) {
      showError(this.form, error.message);
    } finally {
      button.disabled = false;
    }
  }
}
