// Placing an outbound call: the number is checked here first (E.164, with a message saying
// what to fix), then by the API, whose message is shown at the field it names. Each submit
// carries an Idempotency-Key, so a double click never dials twice.

import { api, clearErrors, showError } from "./api.js";
import { $ } from "./dom.js";

/** null when `value` looks like E.164, else what to fix. */
export function e164Problem(value) {
  const text = value.trim();
  if (!text) return "Enter the number to call, e.g. +14155550142.";
  if (!text.startsWith("+")) return "Start with + and the country code, e.g. +14155550142.";
  if (/\s/.test(text)) return "Remove the spaces: E.164 is written without them, e.g. +14155550142.";
  if (!/^\+\d+$/.test(text)) return "Use digits only after the +, with no dashes, dots or brackets.";
  if (text[1] === "0") return "A country code never starts with 0.";
  const digits = text.length - 1;
  if (digits < 8) return `Too short: ${digits} digits after the +; a full number has 8 to 15.`;
  if (digits > 15) return `Too long: ${digits} digits after the +; E.164 allows at most 15.`;
  return null;
}

export function setupDial(form) {
  const number = $("#dial-number", form);
  const result = $(".form-result", form);
  const button = $("button[type=submit]", form);
  number.addEventListener("input", () => {
    if (number.getAttribute("aria-invalid")) clearErrors(form);
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    result.textContent = "";
    const problem = e164Problem(number.value);
    if (problem) {
      showError(form, `phone_number: ${problem}`);
      return;
    }
    const body = { phone_number: number.value.trim() };
    const agent = $("#dial-agent", form).value;
    if (agent) body.agent_id = agent;
    button.disabled = true;
    result.textContent = "Dialling…";
    try {
      const call = await api("POST", "/voice/calls/initiate", body,
        { "Idempotency-Key": crypto.randomUUID() });
      result.textContent = `Call ${call.call_id} placed through ${call.provider} (${call.status}).`;
      form.dispatchEvent(new CustomEvent("call-placed", { detail: call, bubbles: true }));
    } catch (error) {
      result.textContent = "";
      showError(form, error.message);
    } finally {
      button.disabled = false;
    }
  });
}
