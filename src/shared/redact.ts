// Credentials never leave the store in clear: URL user info, credential headers and secret-looking
// query parameters are shown as *** in status, events, logs and hook files.

const SECRET_PARAM = /^(.*[_-])?(token|key|sig|signature|password|passwd|secret|auth|access_token|api_key|apikey|credential|session)$/i;
export const CREDENTIAL_HEADERS = ['authorization', 'cookie', 'proxy-authorization'];

export function redactUrl(url: string | null): string | null {
  if (url == null) return null;
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
  return CREDENTIAL_HEADERS.includes(name.toLowerCase()) ? '***' : value;
}

/** Redact every URL-looking piece of free text (error messages, log lines). */
export function redactText(text: string): string {
  return text.replace(/https?:\/\/[^\s'"<>]+/g, (m) => redactUrl(m) ?? m);
}
