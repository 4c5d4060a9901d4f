// The signed-in token: kept in this tab's sessionStorage only (gone when the tab closes), and
// read for its role and expiry so the console offers only what the role may do. The gateway
// checks the token on every request; nothing here is trusted for access.

const KEY = "vao.console.token";
export const ROLE_RANK = { viewer: 1, operator: 2, admin: 3 };

function base64UrlJson(part) {
  const padded = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** {token, sub, role, exp}; throws an Error whose message says what is wrong. */
export function readToken(raw) {
  const token = (raw || "").trim().replace(/^Bearer\s+/i, "");
  if (!token) throw new Error("Paste a token to sign in.");
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("That is not a JWT (three parts separated by dots).");
  let claims;
  try {
    claims = base64UrlJson(parts[1]);
  } catch {
    throw new Error("That token's payload cannot be read.");
  }
  if (!(claims.role in ROLE_RANK)) {
    throw new Error("That token has no viewer, operator or admin role.");
  }
  if (typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
    throw new Error("That token has expired; make a new one.");
  }
  return { token, sub: String(claims.sub || ""), role: claims.role, exp: claims.exp };
}

export function can(session, minimum) {
  return Boolean(session) && ROLE_RANK[session.role] >= ROLE_RANK[minimum];
}

export function savedSession() {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  try {
    return readToken(raw);
  } catch {
    sessionStorage.removeItem(KEY);
    return null;
  }
}

export function keep(session) {
  sessionStorage.setItem(KEY, session.token);
}

export function forget() {
  sessionStorage.removeItem(KEY);
}
