// The gateway's API, with the signed-in token. Errors keep the API's own message; a message
// naming fields (`configuration.language: …; phone_number: …`) is shown at those fields.

let token = null;
let onUnauthorized = () => {};

export function configure(options) {
  token = options.token;
  onUnauthorized = options.onUnauthorized || onUnauthorized;
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export async function api(method, path, body = undefined, headers = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, cache: "no-store" };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "unreachable", "The gateway cannot be reached; is it running?");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    const message = error.message || `${method} ${path} answered ${response.status}`;
    const failure = new ApiError(response.status, error.code || "http_error", message,
      response.headers.get("Retry-After"));
    if (response.status === 401) onUnauthorized(failure);
    throw failure;
  }
  return data;
}

/** `a.b: msg; c: msg` -> [["a.b", "msg"], ["c", "msg"]]; other messages -> [["", message]]. */
export function fieldMessages(message) {
  const parts = String(message || "").split(/;\s+(?=[A-Za-z_][\w.]*:\s)/);
  return parts.map((part) => {
    const match = /^([A-Za-z_][\w.]*):\s+(.*)$/s.exec(part);
    return match ? [match[1], match[2].replace(/^Value error,\s*/, "")] : ["", part];
  });
}

export function clearErrors(form) {
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

/** Show `message` at the field it names (the closest `data-field` prefix), else on the form. */
export function showError(form, message) {
  const fields = [...form.querySelectorAll("[data-field]")];
  let focused = false;
  for (const [loc, text] of fieldMessages(message)) {
    const field = fields
      .filter((f) => loc && (loc === f.dataset.field || loc.startsWith(`${f.dataset.field}.`)))
      .sort((a, b) => b.dataset.field.length - a.dataset.field.length)[0];
    const slot = field ? field.querySelector(".field-error") : form.querySelector(".form-error");
    const shown = field ? text : loc ? `${loc}: ${text}` : text;
    slot.textContent = slot.textContent ? `${slot.textContent} ${shown}` : shown;
    const input = field && field.querySelector("input, select, textarea");
    if (input) {
      input.setAttribute("aria-invalid", "true");
      if (!focused) {
        input.focus();
        focused = true;
      }
    }
  }
}
