// Text that goes back to a terminal: what a user or a server typed is echoed with its control
// characters escaped, so an error message can never move the cursor, retitle the window or hide itself.

const CONTROL = /[\x00-\x1f\x7f-\x9f]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** `text` with every C0/C1 control character (and DEL) as `\n`, `\r`, `\t` or `\xNN`. */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => NAMED[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
