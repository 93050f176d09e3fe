// `bgdl config get|set|list [KEY] [VALUE]`: user defaults kept with conf; a running worker re-reads
// them within a couple of seconds.

import { CONFIG_KEYS, checkKey, readRawConfig, setConfig, unsetConfig } from '../../shared/config.js';
import { redactUrl } from '../../shared/redact.js';
import type { Ctx } from '../context.js';

export interface ConfigEntry {
  key: string;
  value: string;
  isDefault: boolean;
  describe: string;
}

export function configList(ctx: Ctx): ConfigEntry[] {
  const raw = readRawConfig(ctx.env);
  return Object.entries(CONFIG_KEYS).map(([key, spec]) => ({
    key,
    // A store URL may carry a password: never print it.
    value: key === 'store' && raw[key] ? redactUrl(raw[key]!)! : (raw[key] ?? spec.defaultText()),
    isDefault: raw[key] === undefined,
    describe: spec.describe,
  }));
}

export function configGet(ctx: Ctx, key: string): ConfigEntry {
  const k = checkKey(key);
  return configList(ctx).find((e) => e.key === k)!;
}

export async function configSet(ctx: Ctx, key: string, value: string): Promise<ConfigEntry> {
  await setConfig(key, value, ctx.env);
  return configGet(ctx, key);
}

export async function configUnset(ctx: Ctx, key: string): Promise<ConfigEntry> {
  await unsetConfig(key, ctx.env);
  return configGet(ctx, key);
}
