// How sluice's listeners face the network: TLS (optionally mutual) with certificates reloaded on SIGHUP
// without dropping connections, and HTTP basic auth for nodes from a bcrypt htpasswd file.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { TlsConfig } from '../config/config.js';
import { RegistryError } from '../oci/errors.js';

export interface HttpsOptions {
  key: Buffer;
  cert: Buffer;
  ca?: Buffer;
  requestCert: boolean;
  rejectUnauthorized: boolean;
  minVersion: 'TLSv1.2';
}

/**
 * A request Node cannot parse (malformed, headers too large, too slow) arriving on a connection whose response body
 * is on its way: the connection is cut without a word. fastify's own handler, which runs next and leaves a destroyed
 * socket alone, would write its 400 / 408 / 431 answer into the middle of that body, where the client would take it
 * for the blob's bytes (the sendfile thread may even be writing after it).
 */
export function cutMidResponse(server: HttpServer | HttpsServer): void {
  server.prependListener('clientError', (err: Error, socket: Duplex) => {
    const answering = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (answering?.headersSent === true) socket.destroy(err);
  });
}

/** With clientCA set, a client without a certificate signed by it fails the TLS handshake itself. */
export function httpsOptions(tls: TlsConfig): HttpsOptions {
  const mutual = tls.clientCA !== undefined;
  return {
    key: readFileSync(tls.key),
    cert: readFileSync(tls.cert),
    ...(mutual ? { ca: readFileSync(tls.clientCA as string) } : {}),
    requestCert: mutual,
    rejectUnauthorized: mutual,
    minVersion: 'TLSv1.2',
  };
}

/** Re-reads certificate, key and client CA into the live server; new handshakes use them, open connections carry on. */
export function reloadCertificates(server: HttpsServer, tls: TlsConfig): void {
  const o = httpsOptions(tls);
  server.setSecureContext({ key: o.key, cert: o.cert, ...(o.ca ? { ca: o.ca } : {}), minVersion: o.minVersion });
}

interface HtpasswdEntry {
  user: string;
  hash: string;
}

/** Basic auth for nodes, like distribution's htpasswd: bcrypt entries only. */
export class Htpasswd {
  private readonly entries: Map<string, string>;
  // bcrypt costs milliseconds by design; a node repeats the same header on every request, so a verified
  // header is remembered (by its SHA-256, never in clear) for a short while.
  private readonly verified = new LRUCache<string, true>({ maxSize: 10_000, sizeCalculation: () => 1, ttl: 5 * 60_000 });

  private constructor(entries: HtpasswdEntry[]) {
    this.entries = new Map(entries.map((e) => [e.user, e.hash]));
  }

  static load(file: string): Htpasswd {
    const text = readFileSync(file, 'utf8');
    const entries: HtpasswdEntry[] = [];
    text.split(/\r?\n/).forEach((line, i) => {
      if (line.trim() === '' || line.startsWith('#')) return;
      const colon = line.indexOf(':');
      const user = line.slice(0, colon);
      const hash = line.slice(colon + 1).trim();
      if (colon <= 0 || !/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
        throw new Error(`${file}:${i + 1}: not a bcrypt htpasswd entry (create it with: htpasswd -B FILE USER)`);
      }
      entries.push({ user, hash });
    });
    return new Htpasswd(entries);
  }

  /** Throws UNAUTHORIZED (with a Basic challenge) unless the Authorization header holds valid credentials. */
  async check(authorization: string | undefined): Promise<string> {
    const creds = parseBasic(authorization);
    if (!creds) throw challenge('authentication required');
    const key = createHash('sha256').update(authorization ?? '').digest('hex');
    if (this.verified.get(key)) return creds.user;
    const hash = this.entries.get(creds.user);
    // Loaded with the first check: a mirror without `auth:` never needs bcrypt.
    const { default: bcrypt } = await import('bcryptjs');
    // Compare against a dummy hash for unknown users so timing does not reveal which users exist.
    const ok = await bcrypt.compare(creds.password, hash ?? DUMMY_HASH);
    if (!ok || hash === undefined) throw challenge('invalid username or password');
    this.verified.set(key, true);
    return creds.user;
  }
}

const DUMMY_HASH = '$2a$10$CwTycUXWue0Thq9StjUM0uJ8.0aVJqJ0Y8u7Y5rTn1Zt4Hk2V6a1K';

function parseBasic(header: string | undefined): { user: string; password: string } | undefined {
  const m = header ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header) : null;
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function challenge(message: string): RegistryError {
  return new RegistryError('UNAUTHORIZED', message, null, { 'www-authenticate': 'Basic realm="sluice"' });
}
