// The operator subcommands `allow` and `denied`, and what every operator subcommand shares: each talks to the
// running server's admin API so changes apply live, and falls back to the store files when no server answers.
import { readFile } from 'node:fs/promises';
import { AdminApiError, AdminClient, AdminUnavailableError, currentUser } from './admin-client.js';
import { Allowlist, AllowlistFileError, ConfigRuleError, InvalidRulesError, parseImageList, type AddResult, type AllowlistProblem, type ListedRule, type RemoveResult } from '../policy/allowlist.js';
import { flag, UsageError, type Command, type ParsedArgs } from './args.js';
import type { Config } from '../config/config.js';
import { openStateDocuments, openStore as openConfiguredStore, withEditableStateDocuments } from '../store/open.js';
import { DocumentBusyError, type Store } from '../store/store.js';
import type { StateDocuments } from '../store/ports.js';
import { DeniedLog, deniedReference, suggestRule, type DeniedEntry } from '../policy/denied.js';
import { SyncClosedError } from '../jobs/sync.js';

export type { Command } from './args.js';
type Invalid = Array<{ rule?: string; line?: number; text?: string; reason: string }>;

export const out = (s: string): void => void process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
export const err = (s: string): void => void process.stderr.write(s.endsWith('\n') ? s : `${s}\n`);
export const isJson = (args: ParsedArgs): boolean => args.flags.get('json') === true;

/** Runs `online` against the server; `offline` when none answers (nothing was sent, so nothing applied). */
export async function liveOrOffline<T>(cfg: Config, online: (c: AdminClient) => Promise<T>, offline: (why: string) => Promise<T>): Promise<T> {
  try {
    return await online(await AdminClient.fromConfig(cfg));
  } catch (e) {
    if (!(e instanceof AdminUnavailableError)) throw e;
    return offline(e.message);
  }
}

/** Operation failures become a message and exit code 1 (2 for invalid rules); usage errors pass through. */
export function guarded(name: string, run: Command): Command {
  return async (args, config) => {
    try {
      return await run(args, config);
    } catch (e) {
      const invalid = invalidOf(e);
      if (invalid) {
        for (const i of invalid) err(i.line !== undefined ? `line ${i.line}: ${JSON.stringify(i.text)}: ${i.reason}` : `invalid rule ${JSON.stringify(i.rule)}: ${i.reason}`);
        err(`sluice ${name}: ${invalid.length} invalid; nothing was changed`);
        return 2;
      }
      if (e instanceof AdminApiError || e instanceof AllowlistFileError || e instanceof DocumentBusyError || e instanceof SyncClosedError || e instanceof ConfigRuleError) {
        err(`sluice ${name}: ${e.message}`);
        return 1;
      }
      throw e;
    }
  };
}

function invalidOf(e: unknown): Invalid | undefined {
  if (e instanceof InvalidRulesError) return e.errors.map((r) => ({ rule: r.input, reason: r.reason }));
  if (e instanceof AdminApiError && e.status === 400 && typeof e.detail === 'object' && e.detail !== null) {
    const inv = (e.detail as { invalid?: unknown }).invalid;
    if (Array.isArray(inv)) return inv as Invalid;
  }
  return undefined;
}

/** The store as the config describes it, opened by a command that runs beside (or without) the server. */
export const openStore = (cfg: Config): Promise<Store> => openConfiguredStore(cfg, { follow: false });
export const openAllowlist = async (cfg: Config): Promise<Allowlist> => Allowlist.open((await openStateDocuments(cfg)).allowlist, cfg.allowlist, { configFile: cfg.file });
const editableAllowlist = (cfg: Config, docs: StateDocuments): Promise<Allowlist> => Allowlist.open(docs.allowlist, cfg.allowlist, { configFile: cfg.file });
export const openDenied = async (cfg: Config): Promise<DeniedLog> => DeniedLog.open((await openStateDocuments(cfg)).denied);
/** Bytes as the CLI prints them: `512 B`, `1.5 GiB`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export const offlineNote = (why: string, what: string): void => err(`note: ${why}; ${what}`);

// ---------------------------------------------------------------------------------------------------------------
// allow add|rm|ls|import

export const allowCommand: Command = guarded('allow', async (args, config) => {
  const [sub, ...rest] = args.positionals;
  const cfg = config();
  switch (sub) {
    case 'add':
      if (rest.length === 0) throw new UsageError('allow add needs at least one RULE');
      return printAdded(await addRules(cfg, rest, flag(args, 'note')), args);
    case 'rm':
    case 'remove':
      if (rest.length === 0) throw new UsageError('allow rm needs at least one RULE');
      return printRemoved(await removeRules(cfg, rest), args);
    case 'ls':
    case 'list':
      if (rest.length > 0) throw new UsageError('allow ls takes no arguments');
      return printRules(await listRules(cfg), args);
    case 'import':
      if (rest.length !== 1) throw new UsageError('allow import takes one FILE (or - for standard input)');
      return importList(cfg, rest[0] ?? '-', flag(args, 'note'), args);
    default:
      throw new UsageError(sub === undefined ? 'allow needs a subcommand: add, rm, ls or import' : `unknown allow subcommand "${sub}"`);
  }
});

/** Tells a running server that the store changed under it (after an import); nothing to do without one. */
export function notifyStoreChanged(cfg: Config): Promise<boolean> {
  return liveOrOffline(
    cfg,
    async (c) => (await c.json<{ refreshed: boolean }>('POST', '/api/v1/store/refresh', {})).refreshed,
    async () => false,
  );
}

export function addRules(cfg: Config, rules: string[], note: string | undefined): Promise<AddResult> {
  return liveOrOffline(
    cfg,
    (c) => c.json<AddResult>('POST', '/api/v1/allowlist', { rules, ...(note === undefined ? {} : { note }) }),
    async (why) => {
      offlineNote(why, `editing ${(await openStateDocuments(cfg)).allowlist.location} directly`);
      return withEditableStateDocuments(cfg, async (docs) => (await editableAllowlist(cfg, docs)).add(rules, { by: currentUser(), note }));
    },
  );
}

function removeRules(cfg: Config, rules: string[]): Promise<RemoveResult> {
  return liveOrOffline(
    cfg,
    (c) => c.json<RemoveResult>('DELETE', '/api/v1/allowlist', { rules }),
    async (why) => {
      offlineNote(why, `editing ${(await openStateDocuments(cfg)).allowlist.location} directly`);
      return withEditableStateDocuments(cfg, async (docs) => (await editableAllowlist(cfg, docs)).remove(rules, { by: currentUser() }));
    },
  );
}

interface Listing {
  rules: ListedRule[];
  /** The server found allowlist.json broken: `rules` are the last good ones, still in force. */
  allowlistError?: AllowlistProblem | null;
}

function listRules(cfg: Config): Promise<Listing> {
  return liveOrOffline(
    cfg,
    (c) => c.json<Listing>('GET', '/api/v1/allowlist'),
    async () => ({ rules: (await openAllowlist(cfg)).listing() }),
  );
}

/** The warning `allow ls` and `status` print while the server enforces the last good rules of a broken file. */
export function allowlistWarning(p: AllowlistProblem): string {
  return `warning: allowlist file ${p.file} is not usable since ${p.since}: ${p.message}; the server keeps enforcing the last good rules until it is fixed`;
}

async function importList(cfg: Config, source: string, note: string | undefined, args: ParsedArgs): Promise<number> {
  const text = source === '-' ? await readStdin() : await readList(source);
  // Checked here first, so the line numbers refer to the operator's file whichever way it is applied.
  const { rules, errors } = parseImageList(text);
  if (errors.length > 0) {
    for (const e of errors) err(`${source === '-' ? 'stdin' : source}:${e.line}: ${JSON.stringify(e.text)}: ${e.reason}`);
    err(`sluice allow import: ${errors.length} invalid line(s); nothing was added`);
    return 2;
  }
  if (rules.length === 0) {
    err(`sluice allow import: ${source === '-' ? 'standard input' : source} holds no image references`);
    return 2;
  }
  return printAdded(await addRules(cfg, rules, note ?? `imported from ${source === '-' ? 'stdin' : source}`), args);
}

/** The operator named the file: one that cannot be read is a usage error (exit 2), not a failed operation. */
async function readList(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read the image list ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : (code ?? (e as Error).message)}`);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function printAdded(r: AddResult, args: ParsedArgs): number {
  if (isJson(args)) out(JSON.stringify(r));
  else {
    for (const a of r.added) out(`added ${a.rule}`);
    for (const e of r.existing) out(`already allowed ${e}`);
  }
  return 0;
}

function printRemoved(r: RemoveResult, args: ParsedArgs): number {
  if (isJson(args)) out(JSON.stringify(r));
  else for (const x of r.removed) out(`removed ${x}`);
  for (const m of r.missing) err(`not on the allowlist: ${m}`);
  return r.missing.length > 0 ? 1 : 0;
}

function printRules({ rules, allowlistError }: Listing, args: ParsedArgs): number {
  if (allowlistError) err(allowlistWarning(allowlistError));
  if (isJson(args)) out(JSON.stringify(rules, null, 2));
  else if (rules.length === 0) err('the allowlist is empty: every request is refused');
  else table(['RULE', 'FROM', 'ADDED BY', 'ADDED AT', 'NOTE'], rules.map((r) => [r.rule, r.fromConfig ? 'config' : 'store', r.addedBy, r.addedAt, r.note ?? '']));
  return 0;
}

export function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  out([head, ...rows].map(line).join('\n'));
}

// ---------------------------------------------------------------------------------------------------------------
// denied [--json] [--format commands] [--clear]

type DeniedRow = DeniedEntry & { command: string };

export const deniedCommand: Command = guarded('denied', async (args, config) => {
  if (args.positionals.length > 0) throw new UsageError('denied takes no arguments');
  const format = flag(args, 'format') ?? (isJson(args) ? 'json' : 'table');
  if (!['json', 'table', 'commands'].includes(format)) throw new UsageError(`--format must be table, json or commands; got "${format}"`);
  const cfg = config();
  if (args.flags.get('clear') === true) {
    const cleared = await liveOrOffline(
      cfg,
      async (c) => (await c.json<{ cleared: number }>('DELETE', '/api/v1/denied')).cleared,
      async () => {
        const log = await openDenied(cfg);
        const n = log.list().length;
        await log.clear();
        await log.close();
        return n;
      },
    );
    out(`cleared ${cleared} denied entr${cleared === 1 ? 'y' : 'ies'}`);
    return 0;
  }
  const entries = await liveOrOffline(
    cfg,
    async (c) => (await c.json<{ entries: DeniedRow[] }>('GET', '/api/v1/denied')).entries,
    async () => (await openDenied(cfg)).list().map((e) => ({ ...e, command: suggestRule(e) })),
  );
  if (format === 'json') out(JSON.stringify(entries, null, 2));
  else if (format === 'commands') for (const e of entries) out(e.command);
  else if (entries.length === 0) err('nothing has been denied');
  else {
    table(['COUNT', 'LAST SEEN', 'FIRST SEEN', 'CLIENT', 'REFERENCE'], entries.map((e) => [String(e.count), e.lastSeen, e.firstSeen, e.client || '-', deniedReference(e)]));
  }
  return 0;
});

// ---------------------------------------------------------------------------------------------------------------
// window open DURATION --note TEXT | window close
