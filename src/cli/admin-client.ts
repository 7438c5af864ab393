// The CLI's client for the admin API of a running sluice: address and token from the config, global fetch
// (node:https pinned to the server's own certificate when admin.tls is set), OCI error bodies turned into
// messages, NDJSON streams read line by line; "no server" is its own error.
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { userInfo } from 'node:os';
import { Readable } from 'node:stream';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import type { Config } from '../config/config.js';

/** Nothing listens at the admin address (connection refused), or the config gives no dialable port. */
export class AdminUnavailableError extends Error {}

/** The server answered with an error status; `message` is the server's own explanation. */
export class AdminApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly detail: unknown,
  ) {
    super(message);
    this.name = 'AdminApiError';
  }
}

const REQUEST_TIMEOUT_MS = 60_000;

/**
 * How the CLI trusts an admin listener with admin.tls: the listener's own certificate file (the CLI runs on
 * the same machine and reads the same config) is the only trust anchor, so a private CA needs no system
 * store or NODE_EXTRA_CA_CERTS. The file may hold the leaf alone or the whole chain.
 */
interface AdminTrust {
  /** PEM text of admin.tls.cert. */
  ca: string;
  /** SHA-256 fingerprint of the first certificate in it (the leaf the server presents). */
  leafFingerprint: string;
  certFile: string;
  /** admin.tls.clientCA is set: the listener wants a client certificate, which the CLI does not have. */
  wantsClientCert: boolean;
}

export class AdminClient {
  private constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly tokenFile: string,
    private readonly trust?: AdminTrust,
  ) {}

  /**
   * A client for the admin listener in `config`. A wildcard listen address is dialled on loopback;
   * port 0 (pick any) cannot be dialled from outside the server, so it counts as "no server".
   */
  static async fromConfig(config: Config): Promise<AdminClient> {
    const { host, port } = config.admin.listen;
    if (port === 0) throw new AdminUnavailableError('admin.listen has port 0, so no server can be reached by address');
    const dial = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host;
    const hostPart = dial.includes(':') ? `[${dial}]` : dial;
    const token = await readFile(config.admin.tokenFile, 'utf8').then(
      (t) => t.trim(),
      () => undefined,
    );
    const trust = config.admin.tls ? await loadTrust(config.admin.tls.cert, config.admin.tls.clientCA !== undefined) : undefined;
    const scheme = trust ? 'https' : 'http';
    return new AdminClient(`${scheme}://${hostPart}:${port}`, token, config.admin.tokenFile, trust);
  }

  /** `timeoutMs`: longer for a request whose work is long (gc on a large store). */
  async json<T>(method: string, path: string, body?: unknown, timeoutMs = REQUEST_TIMEOUT_MS): Promise<T> {
    const res = await this.send(method, path, body, AbortSignal.timeout(timeoutMs));
    return (await res.json()) as T;
  }

  async text(method: string, path: string): Promise<string> {
    const res = await this.send(method, path, undefined, AbortSignal.timeout(REQUEST_TIMEOUT_MS));
    return res.text();
  }

  /** POSTs `body` and calls `onLine` with each parsed NDJSON line as it arrives; no timeout (a sync is long). */
  async stream(path: string, body: unknown, onLine: (line: unknown) => void): Promise<void> {
    const res = await this.send('POST', path, body);
    const decoder = new TextDecoder();
    let pending = '';
    const emit = (text: string): void => {
      if (text.trim() !== '') onLine(JSON.parse(text));
    };
    for await (const chunk of res.body ?? []) {
      pending += decoder.decode(chunk as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = pending.indexOf('\n')) !== -1) {
        emit(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    }
    emit(pending + decoder.decode());
  }

  private async send(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = { 'x-sluice-user': currentUser() };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    let payload: string | undefined;
    if (body !== undefined) {
      headers['content-type'] = typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json';
      payload = typeof body === 'string' ? body : JSON.stringify(body);
    }
    let res: Response;
    const url = `${this.baseUrl}${path}`;
    try {
      res = this.trust
        ? await pinnedHttps(url, { method, headers, body: payload, signal }, this.trust)
        : await fetch(url, { method, headers, body: payload, signal });
    } catch (e) {
      if (errorCode(e) === 'ECONNREFUSED') throw new AdminUnavailableError(`no sluice server answers at ${this.baseUrl}`);
      throw new Error(`admin API at ${this.baseUrl}: ${describeFetchError(e)}${this.trust ? trustHint(this.trust) : ''}`);
    }
    if (res.ok) return res;
    throw await this.apiError(res);
  }

  private async apiError(res: Response): Promise<AdminApiError> {
    const text = await res.text().catch(() => '');
    let message = `${res.status} ${res.statusText}`;
    let detail: unknown = null;
    try {
      const first = (JSON.parse(text) as { errors?: Array<{ message?: string; detail?: unknown }> }).errors?.[0];
      if (first?.message) message = first.message;
      detail = first?.detail ?? null;
    } catch {
      if (text.trim() !== '') message = text.trim();
    }
    if (res.status === 401) {
      message = this.token === undefined
        ? `the admin API wants a token, but ${this.tokenFile} cannot be read`
        : `the admin API refused the token in ${this.tokenFile} (is it the file the server uses?)`;
    }
    return new AdminApiError(res.status, message, detail);
  }
}

/** The login name, sent as X-Sluice-User so the server records who made a change. */
export function currentUser(): string {
  try {
    return userInfo().username || 'cli';
  } catch {
    return process.env.USER ?? 'cli';
  }
}

async function loadTrust(certFile: string, wantsClientCert: boolean): Promise<AdminTrust> {
  let ca: string;
  try {
    ca = await readFile(certFile, 'utf8');
  } catch (e) {
    throw new Error(`admin.tls.cert ${certFile} cannot be read (the CLI trusts the admin listener by it): ${(e as Error).message}`);
  }
  let leafFingerprint: string;
  try {
    leafFingerprint = new X509Certificate(ca).fingerprint256;
  } catch (e) {
    throw new Error(`admin.tls.cert ${certFile} holds no PEM certificate: ${(e as Error).message}`);
  }
  return { ca, leafFingerprint, certFile, wantsClientCert };
}

function trustHint(t: AdminTrust): string {
  const hint = ` (the CLI trusts only the certificate in admin.tls.cert ${t.certFile}; if it was replaced, send the server SIGHUP`;
  return t.wantsClientCert ? `${hint}; admin.tls.clientCA is set, and the CLI has no client certificate to present)` : `${hint})`;
}

interface PinnedInit {
  method: string;
  headers: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
}

/**
 * One HTTPS request whose only trust anchor is the admin certificate file, answered as a fetch Response.
 * allowPartialTrustChain lets a leaf (not self-signed) in that file anchor the chain. A server presenting
 * exactly that leaf is the admin listener whatever address the CLI dialled (0.0.0.0 is dialled as
 * 127.0.0.1, which a certificate for sluice.lan does not name); any other certificate still needs the name.
 */
function pinnedHttps(url: string, init: PinnedInit, trust: AdminTrust): Promise<Response> {
  return new Promise((resolve, reject) => {
    const fail = (e: unknown): void => reject(init.signal?.aborted ? init.signal.reason : new TypeError('fetch failed', { cause: e }));
    const req = httpsRequest(url, {
      method: init.method,
      headers: init.body === undefined ? init.headers : { ...init.headers, 'content-length': String(Buffer.byteLength(init.body)) },
      ca: trust.ca,
      allowPartialTrustChain: true,
      checkServerIdentity: (host: string, cert: PeerCertificate) =>
        cert.fingerprint256 === trust.leafFingerprint ? undefined : checkServerIdentity(host, cert),
      signal: init.signal,
      // A one-off connection: a CLI process must not be held open by a kept-alive socket.
      agent: false,
    }, (res) => resolve(toResponse(res, init.method)));
    req.on('error', fail);
    req.end(init.body);
  });
}

function toResponse(res: IncomingMessage, method: string): Response {
  const headers = new Headers();
  for (const [name, value] of Object.entries(res.headers)) {
    for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) headers.append(name, v);
  }
  const status = res.statusCode ?? 502;
  // The fetch Response refuses a body for these (Fetch standard, "null body status").
  const empty = method === 'HEAD' || [101, 204, 205, 304].includes(status);
  if (empty) res.resume();
  const body = empty ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
  return new Response(body, { status, statusText: res.statusMessage ?? '', headers });
}

function errorCode(e: unknown): string | undefined {
  // undici's fetch wraps the socket error: TypeError('fetch failed', { cause: { code } }).
  const cause = e instanceof Error ? (e.cause as { code?: unknown } | undefined) : undefined;
  return typeof cause?.code === 'string' ? cause.code : undefined;
}

function describeFetchError(e: unknown): string {
  if (e instanceof Error && e.name === 'TimeoutError') return `no answer within ${REQUEST_TIMEOUT_MS / 1000}s`;
  const code = errorCode(e);
  const cause = e instanceof Error && e.cause instanceof Error ? e.cause.message : undefined;
  return cause ?? code ?? (e instanceof Error ? e.message : String(e));
}
