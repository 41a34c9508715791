// The console's one way to the server: Sterna's public Coriolis v1 REST API, called as any script
// would call it. The session keeps a project id and, with Keystone, a token; never a password.

const KEY = "sterna.console.session";

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) ?? "null");
  } catch {
    return null;
  }
}

export function logIn(project, token) {
  sessionStorage.setItem(KEY, JSON.stringify({ project, token: token || null }));
}

export function logOut() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function call(method, path, body) {
  const s = session();
  if (!s) throw new ApiError(401, "Not logged in");
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (s.token) headers["X-Auth-Token"] = s.token;
  const response = await fetch(`/v1/${encodeURIComponent(s.project)}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON (a proxy's error page): the status line says what happened
  }
  if (!response.ok) {
    // Coriolis error bodies: {"error": {"code", "message", "fault"}}; show the API's own message.
    throw new ApiError(response.status, data?.error?.message ?? `${response.status} ${response.statusText}`);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body ?? {});
export const del = (path) => call("DELETE", path);

/** URL-safe base64 without padding, as the API wants instance ids in paths and ``env`` in queries. */
export function b64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}
