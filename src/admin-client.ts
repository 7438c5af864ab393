// The CLI's client for the admin API of a running sluice: address and token from the config, global fetch,
// OCI error bodies turned into messages, NDJSON streams read line by line; "no server" is its own error.
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import type { Config } from './config.js';

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

export class AdminClient {
  private constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly tokenFile: string,
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
    // With admin.tls the listener speaks HTTPS; fetch trusts the system CAs (plus NODE_EXTRA_CA_CERTS).
    const scheme = config.admin.tls ? 'https' : 'http';
    return new AdminClient(`${scheme}://${hostPart}:${port}`, token, config.admin.tokenFile);
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(method, path, body, AbortSignal.timeout(REQUEST_TIMEOUT_MS));
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
    try {
      res = await fetch(`${this.baseUrl}${path}`, { method, headers, body: payload, signal });
    } catch (e) {
      if (errorCode(e) === 'ECONNREFUSED') throw new AdminUnavailableError(`no sluice server answers at ${this.baseUrl}`);
      throw new Error(`admin API at ${this.baseUrl}: ${describeFetchError(e)}`);
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
