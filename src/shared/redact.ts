// Credentials never leave the store in clear: URL user info, credential headers and secret-looking
// query parameters are shown as *** in status, events, logs and hook files.

const SECRET_PARAM = /^(.*[_-])?(token|key|sig|signature|password|passwd|secret|auth|access_token|api_key|apikey|credential|session)$/i;
/** Headers that carry credentials by definition. */
export const CREDENTIAL_HEADERS = ['authorization', 'cookie', 'proxy-authorization'];
/** Any header whose name says it holds a secret (X-Api-Key, X-Auth-Token, Private-Token, X-Client-Secret…). */
const SECRET_HEADER_WORD = /token|secret|key|password|auth/i;

/**
 * The one rule for headers that are credentials: Authorization, Proxy-Authorization, Cookie, and any
 * name containing token, secret, key, password or auth (case-insensitive). Their values are shown as
 * *** everywhere and they are dropped when a redirect leaves the origin they were given for.
 */
export function isCredentialHeader(name: string): boolean {
  const n = name.trim().toLowerCase();
  return CREDENTIAL_HEADERS.includes(n) || SECRET_HEADER_WORD.test(n);
}

export function redactUrl(url: string | null): string | null {
  if (url == null) return null;
  // The same URL comes in twice in a row (an event's url and finalUrl, a task's log lines): parse it once.
  if (url === lastRedacted.url) return lastRedacted.out;
  const out = redactParsed(url);
  lastRedacted.url = url;
  lastRedacted.out = out;
  return out;
}

const lastRedacted = { url: '', out: '' };

function redactParsed(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // Not a URL we can parse: still hide what looks like user info.
    return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#\s]*@/i, '$1***@');
  }
  if (u.username) u.username = '***';
  if (u.password) u.password = '***';
  let changed = false;
  const params = [...u.searchParams].map(([k, v]) => {
    if (SECRET_PARAM.test(k)) {
      changed = true;
      return [k, '***'] as const;
    }
    return [k, v] as const;
  });
  if (changed) u.search = params.map(([k, v]) => `${encodeURIComponent(k)}=${v === '***' ? v : encodeURIComponent(v)}`).join('&');
  return u.href;
}

export function redactHeader(name: string, value: string): string {
  return isCredentialHeader(name) ? '***' : value;
}

/** Redact every URL-looking piece of free text (error messages, log lines). */
export function redactText(text: string): string {
  return text.replace(/https?:\/\/[^\s'"<>]+/g, (m) => redactUrl(m) ?? m);
}
