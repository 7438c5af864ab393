// `sluice completion bash|zsh|fish`: shell completion scripts generated from the command table, so a command or
// option added to the table is completed with nothing else to edit. Commands, subcommands, options, fixed values.
import { allOptions, GLOBAL_OPTIONS, ROOT_OPTIONS, UsageError, type CommandSpec, type CommandTable, type OptionSpec, type ParsedArgs } from './args.js';

interface Node {
  /** `allow add`, or `` for the top level. */
  key: string;
  options: OptionSpec[];
  /** The words that may come next: subcommands (or commands at the top), with their summaries. */
  next: Array<[string, string]>;
}

function nodes(table: CommandTable): Node[] {
  const shown = (t: CommandTable): Array<[string, CommandSpec]> => Object.entries(t).filter(([, s]) => !s.hidden);
  const out: Node[] = [{ key: '', options: [...ROOT_OPTIONS, ...GLOBAL_OPTIONS], next: shown(table).map(([n, s]) => [n, s.summary]) }];
  for (const [name, spec] of shown(table)) {
    const subs = shown(spec.subcommands ?? {});
    out.push({ key: name, options: [...GLOBAL_OPTIONS, ...(spec.options ?? [])], next: subs.flatMap(([n, s]) => [n, ...(s.aliases ?? [])].map((w): [string, string] => [w, s.summary])) });
    for (const [sub, s] of subs) {
      for (const word of [sub, ...(s.aliases ?? [])]) out.push({ key: `${name} ${word}`, options: [...GLOBAL_OPTIONS, ...(s.options ?? [])], next: [] });
    }
  }
  return out;
}

const valued = (table: CommandTable): string[] =>
  [...new Set([...GLOBAL_OPTIONS, ...Object.values(table).flatMap(allOptions)].filter((o) => o.value).map((o) => `--${o.name}`))].sort();

const choices = (table: CommandTable): Map<string, string[]> => {
  const m = new Map<string, string[]>();
  for (const o of Object.values(table).flatMap(allOptions)) if (o.choices) m.set(`--${o.name}`, [...new Set([...(m.get(`--${o.name}`) ?? []), ...o.choices])]);
  return m;
};

const sq = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`;

/** The words before the one being completed, reduced to the command path: options and their values skipped. */
const SCAN = (shell: 'bash' | 'zsh', valuedList: string): string => `  local path="" w skip=0
  for w in ${shell === 'bash' ? '"${COMP_WORDS[@]:1:COMP_CWORD-1}"' : '"${(@)words[2,CURRENT-1]}"'}; do
    if (( skip )); then skip=0; continue; fi
    case "$w" in
      ${valuedList}) skip=1 ;;
      -*) ;;
      *) if [[ -z "$path" ]]; then path="$w"; elif [[ "$path" != *" "* ]]; then path="$path $w"; fi ;;
    esac
  done`;

export function bashCompletion(table: CommandTable): string {
  const ns = nodes(table);
  const vs = valued(table);
  const choiceCases = [...choices(table)].map(([o, c]) => `    ${o}) COMPREPLY=($(compgen -W ${sq(c.join(' '))} -- "$cur")); return ;;`);
  const cases = ns.map((n) => `    ${sq(n.key)}) words=${sq(n.next.map(([w]) => w).join(' '))}; opts=${sq(n.options.map((o) => `--${o.name}`).join(' '))} ;;`);
  return `# bash completion for sluice, generated from its command table by \`sluice completion bash\`.
_sluice() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}" words="" opts=""
  case "$prev" in
${choiceCases.join('\n')}
    ${vs.join('|')}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
${SCAN('bash', vs.join('|'))}
  # A subcommand of a command without subcommands is an argument: complete the command's options and files.
  case "$path" in
${cases.join('\n')}
    *" "*) opts=${sq(GLOBAL_OPTIONS.map((o) => `--${o.name}`).join(' '))}; path="\${path%% *}"
       case "$path" in
${ns.filter((n) => n.key !== '' && !n.key.includes(' ') && n.next.length === 0).map((n) => `         ${sq(n.key)}) opts=${sq(n.options.map((o) => `--${o.name}`).join(' '))} ;;`).join('\n')}
       esac ;;
  esac
  if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ -n "$words" ]]; then COMPREPLY=($(compgen -W "$words" -- "$cur"))
  else COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -o filenames -F _sluice sluice
`;
}

export function zshCompletion(table: CommandTable): string {
  const ns = nodes(table);
  const vs = valued(table);
  const esc = (s: string): string => s.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  const cases = ns.map((n) => {
    const next = n.next.map(([w, d]) => sq(`${w}:${esc(d)}`)).join(' ');
    const opts = n.options.map((o) => sq(`--${o.name}:${esc(o.description)}`)).join(' ');
    return `    ${sq(n.key)}) next=(${next}); opts=(${opts}) ;;`;
  });
  const choiceCases = [...choices(table)].map(([o, c]) => `    ${o}) compadd -- ${c.map(sq).join(' ')}; return ;;`);
  return `#compdef sluice
# zsh completion for sluice, generated from its command table by \`sluice completion zsh\`.
_sluice() {
  local -a next opts
  local cur="\${words[CURRENT]}" prev="\${words[CURRENT-1]}"
  case "$prev" in
${choiceCases.join('\n')}
    ${vs.join('|')}) _files; return ;;
  esac
${SCAN('zsh', vs.join('|'))}
  case "$path" in
${cases.join('\n')}
    *) opts=(); next=() ;;
  esac
  if [[ "$cur" == -* ]]; then _describe -t options option opts
  elif (( \${#next} )); then _describe -t commands command next
  else _files
  fi
}
if [[ "$funcstack[1]" == _sluice ]]; then _sluice "$@"; else compdef _sluice sluice; fi
`;
}

export function fishCompletion(table: CommandTable): string {
  const lines = ['# fish completion for sluice, generated from its command table by `sluice completion fish`.', 'complete -c sluice -f'];
  const top = Object.entries(table).filter(([, s]) => !s.hidden);
  const flagLine = (cond: string, o: OptionSpec): string => {
    const value = o.value ? (o.choices ? ` -x -a ${sq(o.choices.join(' '))}` : ' -r -F') : '';
    return `complete -c sluice -n ${sq(cond)} -l ${o.name}${o.name === 'help' ? ' -s h' : ''}${value} -d ${sq(o.description)}`;
  };
  for (const o of GLOBAL_OPTIONS) lines.push(flagLine('true', o));
  for (const o of ROOT_OPTIONS) lines.push(flagLine('__fish_use_subcommand', o));
  for (const [name, spec] of top) {
    lines.push(`complete -c sluice -n ${sq('__fish_use_subcommand')} -a ${name} -d ${sq(spec.summary)}`);
    const subs = Object.entries(spec.subcommands ?? {}).filter(([, s]) => !s.hidden);
    const subWords = subs.flatMap(([n, s]) => [n, ...(s.aliases ?? [])]).join(' ');
    for (const o of spec.options ?? []) lines.push(flagLine(`__fish_seen_subcommand_from ${name}`, o));
    if (subs.length === 0 && spec.args) lines.push(`complete -c sluice -n ${sq(`__fish_seen_subcommand_from ${name}`)} -F`);
    for (const [sub, s] of subs) {
      lines.push(`complete -c sluice -n ${sq(`__fish_seen_subcommand_from ${name}; and not __fish_seen_subcommand_from ${subWords}`)} -a ${sub} -d ${sq(s.summary)}`);
      const cond = `__fish_seen_subcommand_from ${name}; and __fish_seen_subcommand_from ${[sub, ...(s.aliases ?? [])].join(' ')}`;
      for (const o of s.options ?? []) lines.push(flagLine(cond, o));
      if (s.args) lines.push(`complete -c sluice -n ${sq(cond)} -F`);
    }
  }
  return `${lines.join('\n')}\n`;
}

const SHELLS: Record<string, (t: CommandTable) => string> = { bash: bashCompletion, zsh: zshCompletion, fish: fishCompletion };

export async function completionCommand(table: CommandTable, args: ParsedArgs): Promise<number> {
  const [shell, ...extra] = args.positionals;
  const generate = shell === undefined ? undefined : SHELLS[shell];
  if (!generate || extra.length > 0) throw new UsageError(`completion takes one shell: ${Object.keys(SHELLS).join(', ')}`);
  process.stdout.write(generate(table));
  return 0;
}
