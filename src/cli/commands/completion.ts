// `bgdl completion bash|zsh|fish`: a completion script generated from the commander program itself
// (its commands, options and arguments), so it never drifts from the real flags. Session names are
// read from the store when completing (`bgdl completion --list sessions`); config keys come from the
// same table `bgdl config` checks against.

import fs from 'node:fs';
import type { Command, Option } from 'commander';
import { CONFIG_KEYS } from '../../shared/config.js';
import { UsageError } from '../../shared/errors.js';
import { storePath } from '../../shared/paths.js';
import { openStore, type Ctx } from '../context.js';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

/** What a value completes to: store sessions, files, directories, fixed words (choices, config keys), or nothing. */
export type ValueKind = { kind: 'sessions' } | { kind: 'files' } | { kind: 'dirs' } | { kind: 'words'; words: string[] } | null;

export interface OptionSpec {
  flags: string[];
  description: string;
  /** The option takes a value (the next word). */
  takesValue: boolean;
  value: ValueKind;
}

export interface CommandSpec {
  /** Subcommand names from the program down, e.g. ['session', 'show']; [] for the program. */
  path: string[];
  description: string;
  options: OptionSpec[];
  subcommands: CommandSpec[];
  /** What the positional arguments complete to (the same for each of them). */
  args: ValueKind;
}

const FILE_VALUES = new Set(['file', 'pem', 'files']);
const DIR_VALUES = new Set(['dir', 'directory']);

function valueOfOption(opt: Option): ValueKind {
  if (opt.argChoices?.length) return { kind: 'words', words: opt.argChoices };
  if (opt.attributeName() === 'session') return { kind: 'sessions' };
  const name = /[<[]([\w-]+)(?:\.\.\.)?[>\]]/.exec(opt.flags)?.[1]?.toLowerCase() ?? '';
  if (FILE_VALUES.has(name)) return { kind: 'files' };
  if (DIR_VALUES.has(name)) return { kind: 'dirs' };
  return null;
}

function valueOfArgs(cmd: Command, path: string[]): ValueKind {
  const arg = cmd.registeredArguments[0];
  if (!arg) return null;
  if (arg.argChoices?.length) return { kind: 'words', words: arg.argChoices };
  const name = arg.name().toLowerCase();
  if (name === 'name' && path[0] === 'session' && path[1] !== 'create') return { kind: 'sessions' };
  if (name === 'key' && path[0] === 'config') return { kind: 'words', words: Object.keys(CONFIG_KEYS) };
  if (FILE_VALUES.has(name)) return { kind: 'files' };
  return null;
}

/** The program as data: every visible command, its options (with -h/--help) and arguments. */
export function describeProgram(cmd: Command, path: string[] = []): CommandSpec {
  const options: OptionSpec[] = cmd.options
    .filter((o) => !o.hidden)
    .map((o) => ({
      flags: [o.short, o.long].filter((f): f is string => !!f),
      description: o.description,
      takesValue: o.required || o.optional,
      value: valueOfOption(o),
    }));
  options.push({ flags: ['-h', '--help'], description: 'show help', takesValue: false, value: null });
  return {
    path,
    description: cmd.description(),
    options,
    subcommands: cmd.commands.filter((c) => !(c as unknown as { _hidden: boolean })._hidden).map((c) => describeProgram(c, [...path, c.name()])),
    args: valueOfArgs(cmd, path),
  };
}

function flatten(spec: CommandSpec): CommandSpec[] {
  return [spec, ...spec.subcommands.flatMap(flatten)];
}

/** A word list for the shell: only characters that need no quoting inside '…'. */
const words = (list: string[]) => list.join(' ').replace(/'/g, '');
const key = (spec: CommandSpec) => spec.path.join(' ');

/** `case` arms shared by bash and zsh: the data the driver functions look up by command path. */
function posixData(specs: CommandSpec[]): string {
  const arms = (fn: string, rows: [string, string][]) =>
    `${fn}() {\n  case "$1" in\n${rows.map(([k, v]) => `    '${k}') echo '${v}' ;;\n`).join('')}  esac\n}\n`;
  const value = (v: ValueKind) => (v === null ? '' : v.kind === 'words' ? `words:${words(v.words)}` : v.kind);
  const optionValues: [string, string][] = [];
  for (const s of specs) for (const o of s.options) if (o.takesValue) for (const f of o.flags) optionValues.push([`${key(s)}|${f}`, value(o.value)]);
  return [
    arms('__bgdl_subcommands', specs.filter((s) => s.subcommands.length).map((s) => [key(s), words(s.subcommands.map((c) => c.path.at(-1)!))])),
    arms('__bgdl_options', specs.map((s) => [key(s), words(s.options.flatMap((o) => o.flags))])),
    arms('__bgdl_value_options', specs.map((s) => [key(s), words(s.options.filter((o) => o.takesValue).flatMap((o) => o.flags))])),
    arms('__bgdl_option_value', optionValues),
    arms('__bgdl_arg_value', specs.filter((s) => s.args).map((s) => [key(s), value(s.args)])),
  ].join('\n');
}

/** Walks the words before the cursor: sets cmdpath (the subcommands) and skip (the last word wants a value). */
const POSIX_WALK = `
__bgdl_walk() {
  cmdpath='' skip=0
  local w
  for w in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$w" in
      --*=*) ;;
      -*) case " $(__bgdl_value_options "$cmdpath") " in *" $w "*) skip=1 ;; esac ;;
      *) case " $(__bgdl_subcommands "$cmdpath") " in *" $w "*) cmdpath="\${cmdpath:+$cmdpath }$w" ;; esac ;;
    esac
  done
}
`;

function bashScript(specs: CommandSpec[]): string {
  return `# bash completion for bgdl, generated by \`bgdl completion bash\` from its own command table.
# Install: echo 'source <(bgdl completion bash)' >> ~/.bashrc
${posixData(specs)}${POSIX_WALK}
__bgdl_complete_value() {
  case "$1" in
    sessions) COMPREPLY=($(compgen -W "$(command bgdl completion --list sessions 2>/dev/null)" -- "$cur")) ;;
    files) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
    dirs) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")) ;;
    words:*) COMPREPLY=($(compgen -W "\${1#words:}" -- "$cur")) ;;
    *) COMPREPLY=() ;;
  esac
}

_bgdl() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}" cmdpath skip
  __bgdl_walk "\${COMP_WORDS[@]:1:COMP_CWORD-1}"
  if [ "$skip" = 1 ]; then __bgdl_complete_value "$(__bgdl_option_value "$cmdpath|$prev")"; return; fi
  case "$cur" in
    -*) COMPREPLY=($(compgen -W "$(__bgdl_options "$cmdpath")" -- "$cur")); return ;;
  esac
  local subs; subs="$(__bgdl_subcommands "$cmdpath")"
  if [ -n "$subs" ]; then COMPREPLY=($(compgen -W "$subs" -- "$cur")); return; fi
  __bgdl_complete_value "$(__bgdl_arg_value "$cmdpath")"
}
complete -F _bgdl bgdl
`;
}

function zshScript(specs: CommandSpec[]): string {
  return `#compdef bgdl
# zsh completion for bgdl, generated by \`bgdl completion zsh\` from its own command table.
# Install: echo 'source <(bgdl completion zsh)' >> ~/.zshrc   (after compinit)
${posixData(specs)}${POSIX_WALK}
__bgdl_complete_value() {
  case "$1" in
    sessions) compadd -- \${(f)"$(command bgdl completion --list sessions 2>/dev/null)"} ;;
    files) _files ;;
    dirs) _files -/ ;;
    words:*) compadd -- \${=\${1#words:}} ;;
  esac
}

_bgdl() {
  local cur="\${words[CURRENT]}" prev="\${words[CURRENT-1]}" cmdpath skip
  __bgdl_walk "\${(@)words[2,CURRENT-1]}"
  if [ "$skip" = 1 ]; then __bgdl_complete_value "$(__bgdl_option_value "$cmdpath|$prev")"; return; fi
  case "$cur" in
    -*) compadd -- \${=$(__bgdl_options "$cmdpath")}; return ;;
  esac
  local subs; subs="$(__bgdl_subcommands "$cmdpath")"
  if [ -n "$subs" ]; then compadd -- \${=subs}; return; fi
  __bgdl_complete_value "$(__bgdl_arg_value "$cmdpath")"
}
compdef _bgdl bgdl
`;
}

/** fish quoting: single quotes, with \\ and ' escaped. */
const fishQuote = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

function fishScript(specs: CommandSpec[]): string {
  const lines: string[] = [
    '# fish completion for bgdl, generated by `bgdl completion fish` from its own command table.',
    '# Install: bgdl completion fish > ~/.config/fish/completions/bgdl.fish',
    '',
    'function __bgdl_subcommands',
    '    switch $argv[1]',
    ...specs.filter((s) => s.subcommands.length).flatMap((s) => [`        case ${fishQuote(key(s))}`, `            printf '%s\\n' ${s.subcommands.map((c) => c.path.at(-1)!).join(' ')}`]),
    '    end',
    'end',
    '',
    'function __bgdl_value_options',
    '    switch $argv[1]',
    ...specs.flatMap((s) => [`        case ${fishQuote(key(s))}`, `            printf '%s\\n' ${s.options.filter((o) => o.takesValue).flatMap((o) => o.flags).join(' ')}`]),
    '    end',
    'end',
    '',
    '# The subcommands given so far, e.g. "session show" (one word a line from the tables above).',
    'function __bgdl_path',
    '    set -l tokens (commandline -opc)',
    '    set -e tokens[1]',
    '    set -l p ""',
    '    set -l skip 0',
    '    for w in $tokens',
    '        if test $skip = 1',
    '            set skip 0',
    '            continue',
    '        end',
    '        switch $w',
    "            case '--*=*'",
    "            case '-*'",
    '                if contains -- $w (__bgdl_value_options "$p")',
    '                    set skip 1',
    '                end',
    "            case '*'",
    '                if contains -- $w (__bgdl_subcommands "$p")',
    '                    set p (string trim "$p $w")',
    '                end',
    '        end',
    '    end',
    '    echo $p',
    'end',
    '',
    'function __bgdl_at',
    '    test (__bgdl_path) = "$argv[1]"',
    'end',
    '',
    'complete -c bgdl -f',
  ];
  const values = (v: ValueKind): string =>
    v === null ? '' : v.kind === 'sessions' ? " -a '(command bgdl completion --list sessions 2>/dev/null)'" : v.kind === 'files' || v.kind === 'dirs' ? ' -F' : ` -a ${fishQuote(v.words.join(' '))}`;
  for (const s of specs) {
    const at = `-n ${fishQuote(`__bgdl_at ${fishQuote(key(s))}`)}`;
    for (const c of s.subcommands) lines.push(`complete -c bgdl ${at} -a ${fishQuote(c.path.at(-1)!)} -d ${fishQuote(c.description)}`);
    for (const o of s.options) {
      const flags = o.flags.map((f) => (f.startsWith('--') ? `-l ${f.slice(2)}` : `-s ${f.slice(1)}`)).join(' ');
      // -r: takes a value; -x also keeps files out of a value that is not a file.
      const takes = !o.takesValue ? '' : o.value?.kind === 'files' || o.value?.kind === 'dirs' ? ' -r' : ' -x';
      lines.push(`complete -c bgdl ${at} ${flags}${takes}${o.takesValue ? values(o.value) : ''} -d ${fishQuote(o.description)}`);
    }
    if (s.args && s.subcommands.length === 0) lines.push(`complete -c bgdl ${at}${values(s.args)}`);
  }
  return lines.join('\n') + '\n';
}

export function completionScript(program: Command, shell: string): string {
  const specs = flatten(describeProgram(program));
  switch (shell) {
    case 'bash':
      return bashScript(specs);
    case 'zsh':
      return zshScript(specs);
    case 'fish':
      return fishScript(specs);
    default:
      throw new UsageError(`no completion for shell '${shell}': use bash, zsh or fish`);
  }
}

/** `bgdl completion --list sessions`: the names, one a line; nothing (and no store created) before first use. */
export async function completionWords(ctx: Ctx, what: string): Promise<string[]> {
  if (what !== 'sessions') throw new UsageError(`--list takes 'sessions', not '${what}'`);
  if (!fs.existsSync(storePath(ctx.home))) return [];
  const store = await openStore(ctx);
  return (await store.listSessions()).map((s) => s.name);
}
