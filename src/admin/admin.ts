// The admin API on its own listener: bearer-token auth (token file created 0600 on first start) and the
// JSON routes for the allowlist, the denied log, the operator's window, status and sync (NDJSON progress).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { PassThrough } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { formatSchemaErrors, SCHEMAS } from './schemas.js';
import { AllowlistFileError, InvalidRulesError, parseImageList, type Allowlist, type AllowlistProblem } from '../policy/allowlist.js';
import { ConfigError, type Config } from '../config/config.js';
import { suggestRule, type DeniedLog } from '../policy/denied.js';
import { RegistryError } from '../oci/errors.js';
import type { Mirror } from '../mirror/mirror.js';
import type { Store } from '../store/store.js';
import { SyncClosedError, type SyncEvent, type Syncer } from '../jobs/sync.js';
import { parseDuration, type ManualWindow, type Schedule, type WindowState } from '../window/window.js';

export interface AdminDeps {
  config: Config;
  allowlist: Allowlist;
  denied: DeniedLog;
  window: WindowState;
  syncer: Syncer;
  mirror: Mirror;
  store: Store;
}

export const API_PREFIX = '/api/v1';
export const USER_HEADER = 'x-sluice-user';
/** A manual window is bounded: an operator opens one for a maintenance task, not for good. */
export const MAX_MANUAL_WINDOW_MS = 30 * 24 * 3600 * 1000;
const MIN_TOKEN_CHARS = 32;

export async function registerAdminRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const token = await ensureAdminToken(deps.config.admin.tokenFile, deps.config.file);
  const expected = digestOf(token);
  app.setSchemaErrorFormatter(formatSchemaErrors);
  app.addHook('onRequest', async (req) => {
    if (!authorized(req.headers.authorization, expected)) {
      throw new RegistryError('UNAUTHORIZED', 'admin API: missing or wrong bearer token', null, {
        'www-authenticate': 'Bearer realm="sluice-admin"',
      });
    }
  });
  registerAllowlistRoutes(app, deps);
  registerDeniedRoutes(app, deps);
  registerWindowRoutes(app, deps);
  registerSyncRoute(app, deps);
  app.get(`${API_PREFIX}/status`, { schema: SCHEMAS.getNone }, async () => {
    await deps.allowlist.refresh(); // the count and any file problem as of now, not as of the last watch event
    return statusReport(deps);
  });
  // `sluice import` (another process) wrote tags and manifests: forget what was memoised about them.
  app.post(`${API_PREFIX}/store/refresh`, { schema: SCHEMAS.none }, async () => {
    deps.store.invalidate();
    return { refreshed: true };
  });
}

/** Reads the admin token, creating it (32 random bytes, hex, mode 0600, folder 0700) when absent. */
export async function ensureAdminToken(file: string, configFile = ''): Promise<string> {
  let text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
    return undefined;
  });
  if (text === undefined) {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const fresh = randomBytes(32).toString('hex');
    // 'wx': two processes starting at once must not overwrite each other's token.
    const created = await writeFile(file, `${fresh}\n`, { mode: 0o600, flag: 'wx' }).then(
      () => true,
      (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
        return false;
      },
    );
    text = created ? fresh : await readFile(file, 'utf8');
  }
  const token = text.trim();
  if (token.length < MIN_TOKEN_CHARS) {
    throw new ConfigError([`admin.tokenFile: ${file} holds ${token.length} characters; a token needs at least ${MIN_TOKEN_CHARS} (delete the file to have one generated)`], configFile);
  }
  return token;
}

const digestOf = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Constant-time: both sides are hashed to equal length before timingSafeEqual. */
function authorized(header: string | undefined, expected: Buffer): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? '');
  return m !== null && timingSafeEqual(digestOf(m[1] ?? ''), expected);
}

/** Who made a change: the X-Sluice-User header (the CLI sends the login name) or 'admin-api'. */
function who(req: FastifyRequest): string {
  const v = req.headers[USER_HEADER];
  const s = typeof v === 'string' ? v.trim() : '';
  return s !== '' && s.length <= 100 && /^[\x20-\x7e]+$/.test(s) ? s : 'admin-api';
}


function badRequest(message: string, detail?: unknown): RegistryError {
  return new RegistryError('ADMIN_INVALID_REQUEST', message, detail);
}

/** The shapes the route schemas (admin-schemas.ts) have already checked. */
interface RulesBody {
  rules: string[];
  note?: string;
}
type ImportBody = string | { text: string; note?: string };
interface WindowBody {
  duration: string | number;
  note: string;
}
type SyncBody = { dryRun?: boolean; platforms?: string[] } | null;

/** Every invalid rule with its reason; nothing of the batch was applied. */
function invalidRules(err: InvalidRulesError): RegistryError {
  const invalid = err.errors.map((e) => ({ rule: e.input, reason: e.reason }));
  const list = invalid.map((i) => `${JSON.stringify(i.rule)}: ${i.reason}`).join('; ');
  return badRequest(`${invalid.length} invalid rule(s), nothing was changed: ${list}`, { invalid });
}

/** A hand-broken allowlist.json: not the client's fault, so a 409 naming the file, never a 500. */
function brokenFile(e: AllowlistFileError, allowlist: Allowlist): RegistryError {
  const message = `allowlist file ${e.file} is not usable: ${e.problem}; nothing was changed (fix the file; until then the last good ${allowlist.list().length} rule(s) stay in force)`;
  return new RegistryError('ALLOWLIST_FILE_INVALID', message, { file: e.file, problem: e.problem });
}

async function withRules<T>(allowlist: Allowlist, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof InvalidRulesError) throw invalidRules(e);
    if (e instanceof AllowlistFileError) throw brokenFile(e, allowlist);
    throw e;
  }
}

function registerAllowlistRoutes(app: FastifyInstance, { allowlist }: AdminDeps): void {
  // A broken file is no reason to hide the rules in force: they are listed, with what is wrong with the file.
  app.get(`${API_PREFIX}/allowlist`, { schema: SCHEMAS.getNone }, async () => {
    const problem = await allowlist.refresh();
    return { rules: allowlist.list(), allowlistError: problem ?? null };
  });
  app.post<{ Body: RulesBody }>(`${API_PREFIX}/allowlist`, { schema: SCHEMAS.addRules }, async (req) => {
    const { rules, note } = req.body;
    return withRules(allowlist, () => allowlist.add(rules, { by: who(req), note }));
  });
  app.delete<{ Body: RulesBody }>(`${API_PREFIX}/allowlist`, { schema: SCHEMAS.removeRules }, async (req) => {
    return withRules(allowlist, () => allowlist.remove(req.body.rules));
  });
  app.post<{ Body: ImportBody; Querystring: { note?: string } }>(`${API_PREFIX}/allowlist/import`, { schema: SCHEMAS.importList }, async (req) => {
    const body = req.body;
    const text = typeof body === 'string' ? body : body.text;
    const note = (typeof body === 'string' ? undefined : body.note) ?? req.query.note;
    const { rules, errors } = parseImageList(text);
    if (errors.length > 0) {
      const list = errors.map((e) => `line ${e.line} ${JSON.stringify(e.text)}: ${e.reason}`).join('; ');
      throw badRequest(`${errors.length} invalid line(s), nothing was added: ${list}`, { invalid: errors });
    }
    if (rules.length === 0) throw badRequest('the image list holds no references');
    const result = await withRules(allowlist, () => allowlist.add(rules, { by: who(req), note }));
    return { rules, ...result };
  });
}

function registerDeniedRoutes(app: FastifyInstance, { denied }: AdminDeps): void {
  app.get<{ Querystring: { format?: 'json' | 'commands' } }>(`${API_PREFIX}/denied`, { schema: SCHEMAS.denied }, async (req, reply) => {
    const entries = denied.list();
    if (req.query.format === 'commands') {
      reply.header('content-type', 'text/plain; charset=utf-8');
      return entries.map((e) => `${suggestRule(e)}\n`).join('');
    }
    return { entries: entries.map((e) => ({ ...e, command: suggestRule(e) })) };
  });
  app.delete(`${API_PREFIX}/denied`, { schema: SCHEMAS.none }, async () => {
    const cleared = denied.list().length;
    await denied.clear();
    return { cleared };
  });
}

function registerWindowRoutes(app: FastifyInstance, deps: AdminDeps): void {
  app.post<{ Body: WindowBody }>(`${API_PREFIX}/window`, { schema: SCHEMAS.openWindow }, async (req) => {
    const { durationMs, note } = windowRequest(req.body.duration, req.body.note);
    deps.window.open(durationMs, note, who(req));
    return { window: windowReport(deps.window) };
  });
  app.delete(`${API_PREFIX}/window`, { schema: SCHEMAS.none }, async () => {
    deps.window.close();
    return { window: windowReport(deps.window) };
  });
}

/** Validates `{duration: "2h", note: "why"}` for opening a window now. */
export function windowRequest(duration: unknown, note: unknown): { durationMs: number; note: string } {
  if (typeof duration !== 'string' && typeof duration !== 'number') {
    throw badRequest('expected a JSON body {"duration": "2h", "note": "why"}');
  }
  let durationMs: number;
  try {
    durationMs = typeof duration === 'number' ? duration * 1000 : parseDuration(duration);
  } catch (e) {
    throw badRequest((e as Error).message);
  }
  if (!(durationMs > 0) || durationMs > MAX_MANUAL_WINDOW_MS) {
    throw badRequest(`a window must last more than 0 and at most 30d; got ${JSON.stringify(duration)}`);
  }
  if (typeof note !== 'string' || note.trim() === '') throw badRequest('"note" is required: say why upstream access is opened');
  return { durationMs, note: note.trim() };
}

function registerSyncRoute(app: FastifyInstance, { syncer, mirror, window }: AdminDeps): void {
  app.post<{ Body: SyncBody }>(`${API_PREFIX}/sync`, { schema: SCHEMAS.sync }, async (req, reply) => {
    const body = req.body ?? {};
    const dryRun = body.dryRun === true;
    const platforms = syncPlatforms(body.platforms);
    if (!dryRun && !mirror.isWindowOpen()) {
      const detail = { nextOpen: window.status().nextOpen?.toISOString() ?? null };
      throw new RegistryError('WINDOW_CLOSED', syncClosedMessage(mirror.closedUntil()), detail);
    }
    const out = new PassThrough();
    out.on('error', () => undefined); // the client went away; the sync carries on without it
    const write = (line: unknown): void => {
      if (!out.writableEnded && !out.destroyed) out.write(`${JSON.stringify(line)}\n`);
    };
    if (syncer.busy) write({ type: 'info', message: 'a sync is already running; waiting for its report' });
    // The sync belongs to the server: a client that disconnects stops reading, not fetching.
    syncer.run({ dryRun, platforms, onEvent: (e: SyncEvent) => write(e) }).then(
      (report) => write({ type: 'summary', report }),
      (e: unknown) => write({ type: 'error', message: e instanceof SyncClosedError ? syncClosedMessage(mirror.closedUntil()) : String(e instanceof Error ? e.message : e) }),
    ).finally(() => out.end());
    return reply.header('content-type', 'application/x-ndjson').header('cache-control', 'no-store').send(out);
  });
}

export function syncClosedMessage(closedUntil: string): string {
  return `sync needs upstream access, which is ${closedUntil}; open a window now with "sluice window open DURATION --note TEXT"`;
}

/** `["linux/amd64", "linux/arm/v7"]`; a string "a,b" is accepted too. */
export function syncPlatforms(v: unknown): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  const list = typeof v === 'string' ? v.split(',') : Array.isArray(v) ? v : undefined;
  if (!list || !list.every((p) => typeof p === 'string')) throw badRequest('"platforms" must be a list like ["linux/amd64"]');
  const platforms = (list as string[]).map((p) => p.trim()).filter((p) => p !== '');
  const bad = platforms.filter((p) => !/^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/.test(p));
  if (bad.length > 0) throw badRequest(`invalid platform(s) ${bad.join(', ')}: use os/arch[/variant], e.g. linux/amd64`);
  return platforms.length > 0 ? platforms : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Status: the same shape online (this API) and offline (the CLI reading the files)

export interface WindowReport {
  open: boolean;
  until: string | null;
  nextOpen: string | null;
  source: 'schedule' | 'manual' | 'always' | null;
  manual?: ManualWindow;
  schedule: 'always' | 'never' | Array<{ days: string[]; start: string; end: string; timezone: string }>;
}

export interface StatusReport {
  window: WindowReport;
  allowlist: { rules: number };
  /** Set while allowlist.json on disk is broken: the rules counted are the last good ones, still in force. */
  allowlistError: AllowlistProblem | null;
  denied: { entries: number };
  store: { repositories: number; tags: number; blobs: number; sizeBytes: number };
  upstreams: Array<{ host: string; url: string }>;
  defaultUpstream: string;
  sync: { running: boolean; last: unknown };
}

export function windowReport(window: WindowState): WindowReport {
  const s = window.status();
  return {
    open: s.open,
    until: s.until?.toISOString() ?? null,
    nextOpen: s.nextOpen?.toISOString() ?? null,
    source: s.source,
    ...(s.manual ? { manual: s.manual } : {}),
    schedule: describeSchedule(window.schedule),
  };
}

function describeSchedule(schedule: Schedule): WindowReport['schedule'] {
  if (schedule === 'always' || schedule === 'never') return schedule;
  const hhmm = (min: number): string => `${String(Math.floor(min / 60)).padStart(2, '0')}:${String(min % 60).padStart(2, '0')}`;
  return schedule.map((w) => ({ days: [...w.days], start: hhmm(w.startMin), end: hhmm(w.endMin), timezone: w.timezone }));
}

export async function storeCounts(store: Store): Promise<StatusReport['store']> {
  const repos = await store.repositories();
  let tags = 0;
  for (const r of repos) tags += (await store.listTags(r.host, r.name)).length;
  const { blobs, bytes } = await store.usage();
  return { repositories: repos.length, tags, blobs, sizeBytes: bytes };
}

export async function statusReport(parts: Pick<AdminDeps, 'config' | 'window' | 'store'> & {
  allowlist: { list(): unknown[]; problem?: AllowlistProblem };
  denied: { list(): unknown[] };
  syncer?: Pick<Syncer, 'busy' | 'last'>;
}): Promise<StatusReport> {
  return {
    window: windowReport(parts.window),
    allowlist: { rules: parts.allowlist.list().length },
    allowlistError: parts.allowlist.problem ?? null,
    denied: { entries: parts.denied.list().length },
    store: await storeCounts(parts.store),
    upstreams: [...parts.config.upstreams.values()].map((u) => ({ host: u.host, url: u.url })),
    defaultUpstream: parts.config.defaultUpstream,
    sync: { running: parts.syncer?.busy ?? false, last: parts.syncer?.last ?? null },
  };
}
