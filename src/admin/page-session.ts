// The status page's logins: a random session id in an HttpOnly, SameSite=Strict cookie (never the admin token
// itself), kept in memory (a restart logs everyone out), each with its own CSRF token for the page's forms.
import { randomBytes, timingSafeEqual } from 'node:crypto';

export const SESSION_COOKIE = 'sluice_session';
const SESSION_MS = 12 * 60 * 60 * 1000;
const MAX_SESSIONS = 200;

export interface Session {
  user: string;
  csrf: string;
  expiresAt: number;
}

export class Sessions {
  private readonly byId = new Map<string, Session>();

  constructor(private readonly now: () => number = Date.now) {}

  create(user: string): { id: string; session: Session } {
    const id = randomBytes(32).toString('base64url');
    const session = { user, csrf: randomBytes(32).toString('base64url'), expiresAt: this.now() + SESSION_MS };
    this.byId.set(id, session);
    // Oldest first (insertion order): a flood of logins evicts the oldest sessions, never grows without bound.
    for (const key of this.byId.keys()) {
      if (this.byId.size <= MAX_SESSIONS) break;
      this.byId.delete(key);
    }
    return { id, session };
  }

  get(id: string | undefined): Session | undefined {
    if (!id) return undefined;
    const s = this.byId.get(id);
    if (s && s.expiresAt <= this.now()) {
      this.byId.delete(id);
      return undefined;
    }
    return s;
  }

  end(id: string | undefined): void {
    if (id) this.byId.delete(id);
  }
}

/** `Set-Cookie` for a session (empty id: expire it). Path /ui: the JSON API never sees the cookie. */
export function sessionCookie(id: string, secure: boolean): string {
  const attrs = [`${SESSION_COOKIE}=${id}`, 'Path=/ui', 'HttpOnly', 'SameSite=Strict', `Max-Age=${id ? SESSION_MS / 1000 : 0}`];
  if (secure) attrs.push('Secure');
  return attrs.join('; ');
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function sameToken(given: unknown, expected: string): boolean {
  if (typeof given !== 'string') return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * A write must come from this page: when the browser names an Origin (every modern browser does on POST) it
 * must be this listener's own. The form's CSRF token is checked as well (sameToken).
 */
export function sameOrigin(origin: string | undefined, host: string | undefined, secure: boolean): boolean {
  if (origin === undefined) return true;
  return host !== undefined && origin === `${secure ? 'https' : 'http'}://${host}`;
}
