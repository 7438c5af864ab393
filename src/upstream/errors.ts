// What an upstream's failures mean to our clients: a final HTTP status, a refusal after authenticating, or a
// transport failure, each mapped to the RegistryError kind of the one table in oci/errors.ts. Pure.
import { RegistryError, type ErrorKind } from '../oci/errors.js';

/** How the upstream is configured, as far as error messages and the Docker Hub 401 rule need to know. */
export interface UpstreamIdentity {
  host: string;
  /** Docker Hub answers 401 rather than 404 for a repository that does not exist. */
  dockerHub?: boolean;
  hasAuth: boolean;
}

/** The parts of a final non-success answer that decide its error. */
export interface StatusAnswer {
  status: number;
  body: Buffer | null;
  retryAfter?: string;
}

/** Maps a final non-success status: 404 → `notFound`, 429 → TOOMANYREQUESTS (Retry-After kept), else 502. */
export function statusError(host: string, answer: StatusAnswer, what: string, notFound: ErrorKind): RegistryError {
  const said = upstreamMessage(answer.body);
  const detail = { upstream: host, status: answer.status, ...(said ? { message: said } : {}) };
  if (answer.status === 404) return new RegistryError(notFound, `upstream ${host} has no ${what}`, detail);
  if (answer.status === 429) {
    const headers: Record<string, string> = answer.retryAfter ? { 'Retry-After': answer.retryAfter } : {};
    return new RegistryError('TOOMANYREQUESTS', `upstream ${host} is rate limiting: ${what}`, detail, headers);
  }
  return new RegistryError('UPSTREAM_FAILED', `upstream ${host}: ${what} failed: HTTP ${answer.status}${said ? ` ${said}` : ''}`, detail);
}

/** 401/403 after authenticating. Docker Hub says 401 for a repository that does not exist, so anonymous → unknown. */
export function refused(id: UpstreamIdentity, what: string, status: number): RegistryError {
  const detail = { upstream: id.host, status };
  if (id.dockerHub && !id.hasAuth) {
    return new RegistryError(what.startsWith('blob') ? 'BLOB_UNKNOWN' : what.startsWith('manifest') ? 'MANIFEST_UNKNOWN' : 'NAME_UNKNOWN',
      `upstream ${id.host} has no ${what} (Docker Hub answers 401 when a repository does not exist or is private)`, detail);
  }
  const hint = id.hasAuth ? `check upstreams.${id.host}.auth` : `configure upstreams.${id.host}.auth if the repository is private`;
  return new RegistryError('DENIED', `upstream ${id.host} refused access to ${what} (HTTP ${status}); ${hint}`, detail);
}

export function needsCredentials(host: string, what: string, scheme: string): RegistryError {
  return new RegistryError('DENIED', `upstream ${host} requires ${scheme} credentials for ${what}; configure upstreams.${host}.auth`, { upstream: host });
}

/** A token request the realm refused: the configured credentials are wrong. */
export function tokenRefused(host: string, what: string, status: number): RegistryError {
  return new RegistryError('DENIED', `upstream ${host}: ${what} refused (HTTP ${status}); check upstreams.${host}.auth`, { upstream: host, status });
}

export function upstreamFailed(host: string, message: string): RegistryError {
  return new RegistryError('UPSTREAM_FAILED', `upstream ${host}: ${message}`, { upstream: host });
}

/** A request that never got an answer: the caller's abort passes through, anything else is UPSTREAM_FAILED with why. */
export function transportError(host: string, e: unknown, what: string, url: URL, signal?: AbortSignal): unknown {
  if (signal?.aborted) return e; // the caller gave up; its own reason is the truthful one
  if (e instanceof RegistryError) return e;
  const code = typeof e === 'object' && e !== null && 'code' in e ? String(e.code) : '';
  const reason = REASONS[code]?.(url) ?? (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO/.test(code)
    ? `TLS verification of ${url.host} failed (${code}); set upstreams.${host}.tls.ca`
    : `${e instanceof Error ? e.message : String(e)}${code ? ` (${code})` : ''}`);
  return new RegistryError('UPSTREAM_FAILED', `upstream ${host}: ${what} failed: ${reason}`, { upstream: host, url: url.origin, code: code || undefined });
}

const REASONS: Record<string, (url: URL) => string> = {
  UND_ERR_CONNECT_TIMEOUT: (url) => `connecting to ${url.host} timed out`,
  UND_ERR_HEADERS_TIMEOUT: (url) =>
    `${url.host} sent no response headers in time (a registry that builds images on demand, such as the Talos Image Factory, ` +
    'can take minutes on a first request: retry in a few minutes, or prefetch with `sluice sync`, which waits upstreamTimeouts.sync)',
  UND_ERR_BODY_TIMEOUT: (url) => `${url.host} stopped sending the body (idle timeout)`,
  UND_ERR_SOCKET: (url) => `connection to ${url.host} closed unexpectedly`,
  ECONNRESET: (url) => `connection to ${url.host} reset`,
  ECONNREFUSED: (url) => `connection to ${url.host} refused`,
  ENOTFOUND: (url) => `DNS lookup of ${url.hostname} failed`,
  EAI_AGAIN: (url) => `DNS lookup of ${url.hostname} failed (temporary)`,
  EHOSTUNREACH: (url) => `${url.host} is unreachable`,
  ENETUNREACH: (url) => `network unreachable for ${url.host}`,
};

/** The first message of an OCI error body, if the upstream sent one. */
function upstreamMessage(body: Buffer | null): string | undefined {
  if (!body || body.length === 0) return undefined;
  try {
    const doc: unknown = JSON.parse(body.toString('utf8'));
    const first = isRecord(doc) && Array.isArray(doc.errors) ? doc.errors[0] : undefined;
    if (isRecord(first) && typeof first.message === 'string') return first.message.slice(0, 200);
  } catch {
    // a proxy's HTML error page: not worth quoting
  }
  return undefined;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
