// The status page on the admin listener (/ui): log in with the admin token, then window state, readiness per
// rule, the denied list with "allow this" (the exact rule shown first), store usage and recent syncs. Writes
// are HTML forms guarded by the session's CSRF token, SameSite=Strict and an Origin check; edits are recorded
// with the name given at login, like the CLI's.
import { timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { coverageReport } from '../jobs/coverage.js';
import { statusReport, type StatusParts } from '../jobs/status.js';
import type { Syncer } from '../jobs/sync.js';
import { AllowlistFileError, InvalidRulesError, parseRule, RuleError, type Allowlist } from '../policy/allowlist.js';
import { deniedReference, type DeniedEntry, type DeniedLog } from '../policy/denied.js';
import { confirmPage, loginPage, messagePage, statusPage, STYLE, type DeniedRow } from './page-html.js';
import { cookieValue, sameOrigin, sameToken, SESSION_COOKIE, sessionCookie, Sessions, type Session } from './page-session.js';
import { ruleTexts } from './status.js';
import { digestOf } from './token.js';

export const PAGE_PREFIX = '/ui';

/** Paths the page answers itself (its own login), outside the API's bearer check. */
export const isPagePath = (url: string): boolean => url === PAGE_PREFIX || /^\/ui[/?]/.test(url);

export type PageDeps = StatusParts & {
  allowlist: Allowlist;
  denied: DeniedLog;
  syncer: Pick<Syncer, 'busy' | 'last' | 'recent'>;
  /** sha256 of the admin token. */
  expected: Buffer;
  /** The admin listener speaks TLS: the cookie is Secure and origins are https. */
  secure: boolean;
};

type Form = Record<string, string>;

const HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  // No script at all, nothing from elsewhere, forms only to this page, never framed.
  'content-security-policy': "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-frame-options': 'DENY',
  // same-origin, not no-referrer: with no-referrer a browser posts forms with `Origin: null`.
  'referrer-policy': 'same-origin',
  'x-content-type-options': 'nosniff',
};

export const statusPageRoutes: FastifyPluginAsync<PageDeps> = async (app, deps) => {
  const ui = new Page(deps);
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(String(body))));
  });
  app.get(`${PAGE_PREFIX}/style.css`, async (_req, reply) => reply.headers({ 'content-type': 'text/css; charset=utf-8', 'cache-control': 'no-cache' }).send(STYLE));
  app.get<{ Querystring: Record<string, unknown> }>(PAGE_PREFIX, (req, reply) => ui.home(req, reply));
  app.post(`${PAGE_PREFIX}/login`, (req, reply) => ui.login(req, reply));
  app.post(`${PAGE_PREFIX}/logout`, (req, reply) => ui.logout(req, reply));
  app.get<{ Querystring: Record<string, unknown> }>(`${PAGE_PREFIX}/allow`, (req, reply) => ui.confirm(req, reply));
  app.post(`${PAGE_PREFIX}/allow`, (req, reply) => ui.allow(req, reply));
};

type Req = FastifyRequest<{ Querystring: Record<string, unknown> }>;

/** The page's handlers, sharing the sessions and the answers' shape. */
class Page {
  private readonly sessions = new Sessions();

  constructor(private readonly deps: PageDeps) {}

  private send(reply: FastifyReply, status: number, text: string): FastifyReply {
    return reply.code(status).headers(HEADERS).send(text);
  }

  private seeOther(reply: FastifyReply, location: string, cookie?: string): FastifyReply {
    if (cookie !== undefined) reply.header('set-cookie', cookie);
    return reply.code(303).header('location', location).send();
  }

  private sessionOf(req: FastifyRequest): Session | undefined {
    return this.sessions.get(cookieValue(req.headers.cookie, SESSION_COOKIE));
  }

  /** A form post from this page by a logged-in user, or undefined after answering 403. */
  private writer(req: FastifyRequest, reply: FastifyReply): { session: Session; form: Form } | undefined {
    const session = this.sessionOf(req);
    const form = formOf(req.body);
    if (!session) return void this.send(reply, 403, messagePage('Not logged in', 'Your session has ended; log in again.'));
    if (!sameOrigin(req.headers.origin, req.headers.host, this.deps.secure) || !sameToken(form.csrf, session.csrf)) {
      return void this.send(reply, 403, messagePage('Refused', 'This request did not come from the status page (CSRF check failed); nothing was changed.'));
    }
    return { session, form };
  }

  async home(req: Req, reply: FastifyReply): Promise<FastifyReply> {
    const session = this.sessionOf(req);
    if (!session) return this.send(reply, 200, loginPage());
    // Said only of a rule that is in force: a crafted link cannot make the page claim anything else.
    const given = req.query.allowed;
    const allowed = typeof given === 'string' && ruleTexts(this.deps.allowlist).includes(given) ? given : undefined;
    return this.send(reply, 200, statusPage(await model(this.deps, session, allowed ? `Allowed ${allowed}: the next pull of it goes through.` : undefined)));
  }

  async login(req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const form = formOf(req.body);
    if (!sameOrigin(req.headers.origin, req.headers.host, this.deps.secure)) return this.send(reply, 403, loginPage('Refused: the login form was posted from another site.'));
    if (typeof form.token !== 'string' || !timingSafeEqual(digestOf(form.token.trim()), this.deps.expected)) {
      return this.send(reply, 401, loginPage('Wrong admin token.'));
    }
    const { id } = this.sessions.create(userName(form.user));
    return this.seeOther(reply, PAGE_PREFIX, sessionCookie(id, this.deps.secure));
  }

  async logout(req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    if (!this.writer(req, reply)) return reply;
    this.sessions.end(cookieValue(req.headers.cookie, SESSION_COOKIE));
    return this.seeOther(reply, PAGE_PREFIX, sessionCookie('', this.deps.secure));
  }

  /** The exact rule "allow this" would add, before anything is written. */
  async confirm(req: Req, reply: FastifyReply): Promise<FastifyReply> {
    const session = this.sessionOf(req);
    if (!session) return this.seeOther(reply, PAGE_PREFIX);
    const q = req.query;
    const refused = deniedEntries(this.deps.denied).find((e) => e.host === q.host && e.name === q.name && e.reference === q.reference);
    const rule = refused ? ruleFor(refused) : undefined;
    if (!refused || !rule) return this.send(reply, 404, messagePage('Not in the denied list', 'That reference is not (or no longer) in the denied list.'));
    return this.send(reply, 200, confirmPage({ user: session.user, csrf: session.csrf, rule, refused }));
  }

  async allow(req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const w = this.writer(req, reply);
    if (!w) return reply;
    let rule: string;
    try {
      rule = parseRule(w.form.rule ?? '').text;
      await this.deps.allowlist.add([rule], { by: w.session.user, note: (w.form.note ?? '').trim().slice(0, 200) || undefined });
    } catch (e) {
      if (!(e instanceof RuleError || e instanceof InvalidRulesError || e instanceof AllowlistFileError)) throw e;
      return this.send(reply, e instanceof AllowlistFileError ? 409 : 400, messagePage('Nothing was changed', e.message));
    }
    return this.seeOther(reply, `${PAGE_PREFIX}?${new URLSearchParams({ allowed: rule }).toString()}`);
  }
}

/** Most recently seen first. */
const deniedEntries = (denied: Pick<DeniedLog, 'list'>): DeniedEntry[] => denied.list();

function formOf(body: unknown): Form {
  if (typeof body !== 'object' || body === null) return {};
  return Object.fromEntries(Object.entries(body).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/** The login name recorded with edits: printable ASCII, as the API's X-Sluice-User; 'status-page' when none. */
function userName(given: string | undefined): string {
  const s = (given ?? '').trim();
  return s !== '' && s.length <= 100 && /^[\x20-\x7e]+$/.test(s) ? s : 'status-page';
}

/** The exact rule "allow this" adds (the denied log's suggestion), or undefined for a refused tags/list. */
function ruleFor(e: DeniedEntry): string | undefined {
  if (e.reference === '') return undefined;
  try {
    return parseRule(deniedReference(e)).text;
  } catch (err) {
    if (err instanceof RuleError) return undefined; // a hand-edited denied.json: shown, but offers no rule
    throw err;
  }
}

function allowedNow(allowlist: Allowlist, e: DeniedEntry): boolean {
  if (e.reference === '') return allowlist.matcher.matchesRepository(e.host, e.name);
  if (!e.reference.startsWith('sha256:')) return allowlist.matchTag(e.host, e.name, e.reference) !== undefined;
  return allowlist.matcher.isDigestPinned(e.host, e.name, e.reference) || allowlist.allowsAnyTag(e.host, e.name);
}

async function model(deps: PageDeps, session: Session, flash: string | undefined): Promise<Parameters<typeof statusPage>[0]> {
  await deps.allowlist.refresh();
  const [status, coverage] = await Promise.all([
    statusReport(deps),
    coverageReport(deps.store, ruleTexts(deps.allowlist), { platforms: deps.config.platforms, signer: deps.signer }),
  ]);
  const denied: DeniedRow[] = deniedEntries(deps.denied).map((entry) => ({
    entry, reference: deniedReference(entry), rule: ruleFor(entry), allowedNow: allowedNow(deps.allowlist, entry),
  }));
  return { user: session.user, csrf: session.csrf, status, coverage, denied, syncs: { running: deps.syncer.busy, recent: deps.syncer.recent }, flash };
}
