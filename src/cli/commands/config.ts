// `bgdl config get|set|list [KEY] [VALUE]`: user defaults kept with conf; a running worker re-reads
// them within a couple of seconds.

import { CONFIG_KEYS, checkKey, envOverride, readRawConfig, setConfig, unsetConfig } from '../../shared/config.js';
import { redactUrl } from '../../shared/redact.js';
import type { Ctx } from '../context.js';

export interface ConfigEntry {
  key: string;
  /** The value in effect: an environment variable's when one overrides the file (`from`). */
  value: string;
  isDefault: boolean;
  describe: string;
  /** The environment variable whose value is in effect instead of the file's (`store`: BGDL_STORE). */
  from?: string;
}

export function configList(ctx: Ctx): ConfigEntry[] {
  const raw = readRawConfig(ctx.env);
  return Object.entries(CONFIG_KEYS).map(([key, spec]) => {
    const over = envOverride(ctx.env, key);
    const value = over?.value ?? raw[key];
    return {
      key,
      // A store URL may carry a password: never print it.
      value: key === 'store' && value ? redactUrl(value)! : (value ?? spec.defaultText()),
      isDefault: value === undefined,
      describe: spec.describe,
      ...(over ? { from: over.variable } : {}),
    };
  });
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
