// The scale-out keys: `storage: { s3: {…}, path }` (blobs on an S3-compatible object store, the local folder for
// spools and the admin token) and `database: { postgres: {…} }` (metadata in PostgreSQL). Validated like the rest.
import { checkKeys, CONFIG_KEYS } from './keys.js';

export interface S3StorageConfig {
  /** http(s)://host:port of an S3-compatible service; absent: AWS S3 of `region`. */
  endpoint?: string;
  bucket: string;
  region: string;
  /** Prepended to every key ("" or ending in "/"), so one bucket can hold several stores. */
  prefix: string;
  accessKeyFile?: string;
  secretKeyFile?: string;
  accessKeyEnv?: string;
  secretKeyEnv?: string;
  forcePathStyle: boolean;
  tls?: { ca?: string };
  /** A request that sends or receives no byte for this long is abandoned (each attempt); default 10 s. */
  requestTimeoutMs?: number;
  /** Default 5 s. */
  connectTimeoutMs?: number;
  /** Attempts per request (the SDK retries; default 3): answered within about attempts × requestTimeoutMs. */
  maxAttempts?: number;
  /** `redirect: { ttl }`: blob GETs are answered 307 to a presigned GET of the object, valid this long (whole seconds). */
  redirectTtlSeconds?: number;
}

/** SigV4 presigned URLs are valid for at most 7 days. */
const MAX_REDIRECT_TTL_MS = 7 * 24 * 3600 * 1000;

/** `storage.cache`: a local copy of the blobs read from the object store, at most maxBytes, per replica. */
export interface BlobCacheConfig {
  path: string;
  maxBytes: number;
}

export interface PostgresConfig {
  url?: string;
  host?: string;
  port?: number;
  user?: string;
  passwordFile?: string;
  database?: string;
  /** Connections per replica for metadata queries (leases use their own). */
  poolSize: number;
  /** Connecting, and waiting for a free pooled connection. */
  connectTimeoutMs: number;
  /** One query (client side, so a half-open connection is found too; also statement_timeout on the server). */
  queryTimeoutMs: number;
  /** A replica that has not confirmed its change feed (a heartbeat through LISTEN) for this long fails closed. */
  freshnessMs: number;
}

import { duration } from './values.js';

/** The defaults of database.postgres's bounds (connectTimeout 5s, queryTimeout 10s, freshness 10s). */
export const POSTGRES_BOUNDS = { connectTimeoutMs: 5_000, queryTimeoutMs: 10_000, freshnessMs: 10_000 } as const;

type Problems = string[];
type PathOf = (v: string) => string;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function optStr(v: unknown, at: string, p: Problems): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string' && v.length > 0) return v;
  p.push(`${at}: must be a non-empty string`);
  return undefined;
}

/** `storage`: a folder (string), or `{ s3: {…}, path?: folder }`. */
export function parseS3(s: Record<string, unknown>, p: Problems, path: PathOf): S3StorageConfig {
  const at = 'storage.s3';
  checkKeys(s, CONFIG_KEYS.storage.s3, at, p);
  const bucket = optStr(s.bucket, `${at}.bucket`, p) ?? '';
  if (s.bucket === undefined) p.push(`${at}.bucket: is required`);
  else if (bucket && !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) p.push(`${at}.bucket: not a valid bucket name (3-63 of a-z 0-9 . -)`);
  const endpoint = optStr(s.endpoint, `${at}.endpoint`, p);
  if (endpoint && !/^https?:\/\/[^/]+\/?$/.test(endpoint)) p.push(`${at}.endpoint: must be http(s)://HOST[:PORT]`);
  const prefix = s.prefix === '' ? '' : (optStr(s.prefix, `${at}.prefix`, p) ?? '');
  if (prefix.startsWith('/')) p.push(`${at}.prefix: must not start with "/"`);
  const c: S3StorageConfig = {
    bucket,
    region: optStr(s.region, `${at}.region`, p) ?? 'us-east-1',
    prefix: prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`,
    forcePathStyle: s.forcePathStyle === undefined ? endpoint !== undefined : s.forcePathStyle === true,
    requestTimeoutMs: positive(s.requestTimeout ?? '10s', `${at}.requestTimeout`, p),
    connectTimeoutMs: positive(s.connectTimeout ?? '5s', `${at}.connectTimeout`, p),
    maxAttempts: 3,
  };
  if (s.maxAttempts !== undefined) {
    if (typeof s.maxAttempts !== 'number' || !Number.isInteger(s.maxAttempts) || s.maxAttempts < 1 || s.maxAttempts > 10) p.push(`${at}.maxAttempts: must be an integer from 1 to 10`);
    else c.maxAttempts = s.maxAttempts;
  }
  if (s.forcePathStyle !== undefined && typeof s.forcePathStyle !== 'boolean') p.push(`${at}.forcePathStyle: must be true or false`);
  if (endpoint) c.endpoint = endpoint.replace(/\/$/, '');
  if (s.redirect !== undefined) {
    const ttl = parseRedirect(s.redirect, `${at}.redirect`, p);
    if (ttl !== undefined) c.redirectTtlSeconds = ttl;
  }
  for (const k of ['accessKeyFile', 'secretKeyFile'] as const) {
    const f = optStr(s[k], `${at}.${k}`, p);
    if (f) c[k] = path(f);
  }
  for (const k of ['accessKeyEnv', 'secretKeyEnv'] as const) {
    const e = optStr(s[k], `${at}.${k}`, p);
    if (e) c[k] = e;
  }
  if ((c.accessKeyFile === undefined) !== (c.secretKeyFile === undefined)) p.push(`${at}: give accessKeyFile and secretKeyFile together`);
  if ((c.accessKeyEnv === undefined) !== (c.secretKeyEnv === undefined)) p.push(`${at}: give accessKeyEnv and secretKeyEnv together`);
  if (c.accessKeyFile && c.accessKeyEnv) p.push(`${at}: give key files or key environment variables, not both`);
  if (s.tls !== undefined) {
    if (!isObject(s.tls)) p.push(`${at}.tls: must be a mapping with ca`);
    else {
      checkKeys(s.tls, CONFIG_KEYS.storage.s3.tls, `${at}.tls`, p);
      const ca = optStr(s.tls.ca, `${at}.tls.ca`, p);
      c.tls = ca ? { ca: path(ca) } : {};
    }
  }
  return c;
}

/** `storage.s3.redirect: { ttl }`: the presigned URL's lifetime in whole seconds, 1s to 7d. */
function parseRedirect(v: unknown, at: string, p: Problems): number | undefined {
  if (!isObject(v)) {
    p.push(`${at}: must be a mapping with ttl (e.g. redirect: { ttl: 5m })`);
    return undefined;
  }
  checkKeys(v, CONFIG_KEYS.storage.s3.redirect, at, p);
  if (v.ttl === undefined) {
    p.push(`${at}.ttl: is required (e.g. 5m)`);
    return undefined;
  }
  const before = p.length;
  const ms = duration(v.ttl, `${at}.ttl`, p);
  if (p.length > before) return undefined;
  if (ms < 1000 || ms % 1000 !== 0) p.push(`${at}.ttl: must be whole seconds, at least 1s (got ${JSON.stringify(v.ttl)})`);
  else if (ms > MAX_REDIRECT_TTL_MS) p.push(`${at}.ttl: must be at most 7d (the longest an S3 presigned URL is valid)`);
  else return ms / 1000;
  return undefined;
}

/** `storage.cache: { path, maxBytes }`; only beside `storage.s3` (the filesystem store is local already). */
export function parseCache(v: unknown, hasS3: boolean, p: Problems, path: PathOf, size: (v: unknown, at: string) => number | undefined): BlobCacheConfig | undefined {
  const at = 'storage.cache';
  if (!isObject(v)) {
    p.push(`${at}: must be a mapping with path and maxBytes`);
    return undefined;
  }
  checkKeys(v, CONFIG_KEYS.storage.cache, at, p);
  if (!hasS3) p.push(`${at}: only with storage.s3 (blobs on the filesystem are local already)`);
  const dir = optStr(v.path, `${at}.path`, p);
  if (v.path === undefined) p.push(`${at}.path: is required`);
  if (v.maxBytes === undefined) p.push(`${at}.maxBytes: is required (e.g. 50GiB)`);
  const maxBytes = v.maxBytes === undefined ? undefined : size(v.maxBytes, `${at}.maxBytes`);
  return dir && maxBytes ? { path: path(dir), maxBytes } : undefined;
}

/** `database`: absent (metadata beside the store, as always), or `{ postgres: { url | host/port/user/passwordFile, database } }`. */
export function parseDatabase(v: unknown, p: Problems, path: PathOf): PostgresConfig | undefined {
  if (v === undefined) return undefined;
  if (isObject(v)) checkKeys(v, CONFIG_KEYS.database, 'database', p);
  if (!isObject(v) || !isObject(v.postgres)) {
    p.push('database: must be a mapping with postgres');
    return undefined;
  }
  const at = 'database.postgres';
  const g = v.postgres;
  checkKeys(g, CONFIG_KEYS.database.postgres, at, p);
  const c: PostgresConfig = {
    poolSize: 10,
    connectTimeoutMs: g.connectTimeout === undefined ? POSTGRES_BOUNDS.connectTimeoutMs : positive(g.connectTimeout, `${at}.connectTimeout`, p),
    queryTimeoutMs: g.queryTimeout === undefined ? POSTGRES_BOUNDS.queryTimeoutMs : positive(g.queryTimeout, `${at}.queryTimeout`, p),
    freshnessMs: g.freshness === undefined ? POSTGRES_BOUNDS.freshnessMs : positive(g.freshness, `${at}.freshness`, p),
  };
  const url = optStr(g.url, `${at}.url`, p);
  if (url) {
    if (!/^postgres(ql)?:\/\//.test(url)) p.push(`${at}.url: must be a postgres:// URL`);
    c.url = url;
  }
  const host = optStr(g.host, `${at}.host`, p);
  if (host) c.host = host;
  if (!url && !host) p.push(`${at}: give url, or host (with port, user, passwordFile, database)`);
  if (g.port !== undefined) {
    if (typeof g.port !== 'number' || !Number.isInteger(g.port) || g.port < 1 || g.port > 65535) p.push(`${at}.port: must be a port number`);
    else c.port = g.port;
  }
  const user = optStr(g.user, `${at}.user`, p);
  if (user) c.user = user;
  const database = optStr(g.database, `${at}.database`, p);
  if (database) c.database = database;
  const passwordFile = optStr(g.passwordFile, `${at}.passwordFile`, p);
  if (passwordFile) c.passwordFile = path(passwordFile);
  if (g.poolSize !== undefined) {
    if (typeof g.poolSize !== 'number' || !Number.isInteger(g.poolSize) || g.poolSize < 1) p.push(`${at}.poolSize: must be a positive integer`);
    else c.poolSize = g.poolSize;
  }
  return c;
}

/** A bound: a duration ("5s", "1500ms", or seconds as a number) greater than zero. */
function positive(v: unknown, at: string, p: Problems): number {
  const ms = duration(v, at, p);
  if (ms <= 0 && !p.some((x) => x.startsWith(`${at}:`))) p.push(`${at}: must be longer than 0`);
  return ms;
}
