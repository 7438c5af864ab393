// The configuration schema (its keys: keys.ts), its defaults, and load + validate: every problem is
// reported with its key path, all at once, before anything listens. Durations and windows are parsed here once.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseWindows, type Schedule } from '../window/schedule.js';
import { parseRule } from '../policy/allowlist.js';
import { canonicalHost } from '../oci/reference.js';
import { parseCache, parseDatabase, parseS3, type BlobCacheConfig, type PostgresConfig, type S3StorageConfig } from './scale-out.js';

import { parseUpstreams, WILDCARD, type UpstreamConfig } from './upstreams.js';
import { parseSigning, type SigningConfig } from './signing.js';
import { address, bool, duration, isObject, size, str } from './values.js';
import { checkKeys, CONFIG_KEYS, type KeyTree } from './keys.js';

export type { BlobCacheConfig, PostgresConfig, S3StorageConfig } from './scale-out.js';
export type { UpstreamConfig } from './upstreams.js';
export type { SigningConfig, SigningPolicy, SigningRule } from './signing.js';
export { WILDCARD } from './upstreams.js';
export { size } from './values.js';

export interface TlsConfig {
  cert: string;
  key: string;
  clientCA?: string;
}

export interface Config {
  /** The file this was read from ('' for a config built in code). */
  file: string;
  listen: { host: string; port: number };
  storage: string;
  defaultUpstream: string;
  upstreams: Map<string, UpstreamConfig>;
  windows: Schedule;
  allowlist: string[];
  tls?: TlsConfig;
  auth?: { htpasswd: string };
  admin: { listen: { host: string; port: number }; tokenFile: string; tls?: TlsConfig };
  /** How long a tag resolved upstream is trusted before asking again. */
  tagTtlMs: number;
  syncOnOpen: boolean;
  /** One log entry per registry request, naming the node (address, mTLS subject, basic-auth user). */
  requestLog: boolean;
  /** syncMs: how long a sync waits for an upstream's response headers (an Image Factory builds on first request). */
  upstreamTimeouts: { connectMs: number; idleMs: number; syncMs: number };
  /** Bound on one upstream blob ingest, independent of any client. */
  ingestTimeoutMs: number;
  /** `storage.maxBytes`: past it new ingests are refused (507); nothing is evicted. */
  storageMaxBytes?: number;
  /** `storage.maxBlobBytes`: no one blob may be larger (507), its size declared or not. */
  storageMaxBlobBytes: number;
  /** Blobs on an S3-compatible object store (`storage: { s3: {…} }`); `storage` is then the local folder (spools, token). */
  s3?: S3StorageConfig;
  /** A local cache of the object store's blobs on this replica (`storage: { s3, cache: { path, maxBytes } }`). */
  storageCache?: BlobCacheConfig;
  /** Metadata in PostgreSQL (`database: { postgres: {…} }`); absent: beside the store, as always. */
  postgres?: PostgresConfig;
  /** A listener serving only /metrics, without the admin token (`metrics.listen`). */
  metrics?: { listen: { host: string; port: number } };
  /** Garbage collection: `keep` digests per tag survive; `everyMs` runs it on a timer (`gc.schedule`). */
  gc: { keep: number; everyMs?: number };
  /** Nothing committed or read within this long is swept. */
  gcGraceMs: number;
  /** `os/arch[/variant]` an index is expected to hold (sync's default filter, the readiness report's yardstick); empty: all. */
  platforms: string[];
  /** Site signatures (`signing:`): the key, when to sign, and the rules upstream signatures are verified against. */
  signing?: SigningConfig;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[], file: string) {
    super(`invalid config ${file}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([`cannot read config file: ${(e as Error).message}`], file);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError([`not valid YAML: ${(e as Error).message}`], file);
  }
  return validateConfig(doc ?? {}, resolve(file));
}

/** Validates a parsed document; relative paths resolve against the config file's folder. */
export function validateConfig(doc: unknown, file: string): Config {
  const p: string[] = [];
  const base = file ? dirname(file) : process.cwd();
  const path = (v: string): string => (isAbsolute(v) ? v : resolve(base, v));
  if (!isObject(doc)) throw new ConfigError(['(root): must be a mapping'], file);
  checkKeys(doc, CONFIG_KEYS, '', p);

  const listen = address(doc.listen ?? '0.0.0.0:6000', 'listen', p);
  const { storage, storageMaxBytes, storageMaxBlobBytes, s3, storageCache } = parseStorage(doc.storage ?? './data', p, path);
  const postgres = parseDatabase(doc.database, p, path);
  const upstreams = parseUpstreams(doc.upstreams ?? {}, p, path);
  const defaultUpstream = canonicalHost(str(doc.defaultUpstream ?? 'docker.io', 'defaultUpstream', p));
  if (!upstreams.has(defaultUpstream) && !upstreams.has(WILDCARD)) p.push(`defaultUpstream: "${defaultUpstream}" is not one of the configured upstreams`);
  const w = parseWindows(doc.windows ?? 'never', 'windows');
  p.push(...w.errors);
  const allowlist = parseAllowlist(doc.allowlist ?? [], p);
  const tls = doc.tls === undefined ? undefined : parseTls(doc.tls, 'tls', CONFIG_KEYS.tls, p, path);
  const auth = parseAuth(doc.auth, p, path);
  if (auth && !tls) p.push('auth: basic auth needs tls too (over plain HTTP every request would carry a node password in clear)');
  const admin = parseAdmin(doc.admin ?? {}, p, path, storage);
  const limits = parseLimits(doc, p);
  const ops = parseOperations(doc, p);
  const signing = parseSigning(doc.signing, p, path);
  const config: Config = { ...(signing ? { signing } : {}), file, listen, storage, storageMaxBytes, storageMaxBlobBytes, ...(s3 ? { s3 } : {}), ...(storageCache ? { storageCache } : {}), ...(postgres ? { postgres } : {}), defaultUpstream, upstreams, windows: w.windows, allowlist, tls, auth, admin, ...limits, ...ops };
  if (p.length > 0) throw new ConfigError(p, file);
  return config;
}

type Limits = Pick<Config, 'tagTtlMs' | 'syncOnOpen' | 'requestLog' | 'upstreamTimeouts' | 'ingestTimeoutMs' | 'platforms'>;

/** The durations and switches at the top level (problems in the order the keys are listed here). */
function parseLimits(doc: Record<string, unknown>, p: string[]): Limits {
  const timeouts = isObject(doc.upstreamTimeouts) ? doc.upstreamTimeouts : {};
  if (doc.upstreamTimeouts !== undefined && !isObject(doc.upstreamTimeouts)) p.push('upstreamTimeouts: must be a mapping');
  checkKeys(timeouts, CONFIG_KEYS.upstreamTimeouts, 'upstreamTimeouts', p);
  return {
    tagTtlMs: duration(doc.tagTtl ?? '5m', 'tagTtl', p),
    syncOnOpen: bool(doc.syncOnOpen ?? false, 'syncOnOpen', p),
    requestLog: bool(doc.requestLog ?? false, 'requestLog', p),
    upstreamTimeouts: {
      connectMs: duration(timeouts.connect ?? '10s', 'upstreamTimeouts.connect', p),
      idleMs: duration(timeouts.idle ?? '30s', 'upstreamTimeouts.idle', p),
      syncMs: duration(timeouts.sync ?? '15m', 'upstreamTimeouts.sync', p),
    },
    ingestTimeoutMs: duration(doc.ingestTimeout ?? '30m', 'ingestTimeout', p),
    platforms: parsePlatforms(doc.platforms ?? [], p),
  };
}

/** The largest one blob may be unless `storage.maxBlobBytes` says otherwise: beyond any real image layer. */
export const DEFAULT_MAX_BLOB_BYTES = 64 * 1024 ** 3;

type StorageConfig = Pick<Config, 'storage' | 'storageMaxBytes' | 'storageMaxBlobBytes' | 's3' | 'storageCache'>;

/** `storage: ./data`, or `{ path, maxBytes, maxBlobBytes, s3, cache }` (s3: blobs on an object store, path: spools and the token). */
function parseStorage(v: unknown, p: string[], path: (s: string) => string): StorageConfig {
  if (!isObject(v)) return { storage: path(str(v, 'storage', p)), storageMaxBlobBytes: DEFAULT_MAX_BLOB_BYTES };
  checkKeys(v, CONFIG_KEYS.storage, 'storage', p);
  const out: StorageConfig = { storage: path(str(v.path ?? './data', 'storage.path', p)), storageMaxBlobBytes: DEFAULT_MAX_BLOB_BYTES };
  if (v.maxBytes !== undefined) out.storageMaxBytes = size(v.maxBytes, 'storage.maxBytes', p);
  if (v.maxBlobBytes !== undefined) out.storageMaxBlobBytes = size(v.maxBlobBytes, 'storage.maxBlobBytes', p) ?? DEFAULT_MAX_BLOB_BYTES;
  if (v.s3 !== undefined) {
    if (isObject(v.s3)) out.s3 = parseS3(v.s3, p, path);
    else p.push('storage.s3: must be a mapping with at least bucket');
  }
  if (v.cache !== undefined) {
    const cache = parseCache(v.cache, v.s3 !== undefined, p, path, (x, at) => size(x, at, p));
    if (cache) out.storageCache = cache;
    // Redirected blobs never pass through this replica: a cache would fill from nothing and serve nothing.
    if (isObject(v.s3) && v.s3.redirect !== undefined) p.push('storage.cache: not with storage.s3.redirect (blob GETs are redirected to the object store, so no blob passes through this replica to be cached)');
  }
  return out;
}

type Operations = Pick<Config, 'metrics' | 'gc' | 'gcGraceMs'>;

/** `metrics: { listen }`, `gc: { schedule, keep }` and `gcGrace`. */
function parseOperations(doc: Record<string, unknown>, p: string[]): Operations {
  const out: Operations = { gc: { keep: 2 }, gcGraceMs: duration(doc.gcGrace ?? '1h', 'gcGrace', p) };
  if (doc.metrics !== undefined) {
    if (!isObject(doc.metrics)) p.push('metrics: must be a mapping with listen');
    else {
      checkKeys(doc.metrics, CONFIG_KEYS.metrics, 'metrics', p);
      out.metrics = { listen: address(doc.metrics.listen, 'metrics.listen', p) };
    }
  }
  if (doc.gc === undefined) return out;
  if (!isObject(doc.gc)) {
    p.push('gc: must be a mapping with schedule and/or keep');
    return out;
  }
  checkKeys(doc.gc, CONFIG_KEYS.gc, 'gc', p);
  const keep = doc.gc.keep ?? 2;
  if (typeof keep !== 'number' || !Number.isInteger(keep) || keep < 1) p.push('gc.keep: must be a whole number of at least 1 (the current digest counts)');
  else out.gc.keep = keep;
  if (doc.gc.schedule !== undefined) {
    const everyMs = duration(doc.gc.schedule, 'gc.schedule', p);
    if (everyMs < 60_000) p.push('gc.schedule: must be an interval of at least 1m (e.g. 24h)');
    else out.gc.everyMs = everyMs;
  }
  return out;
}

const PLATFORM_RE = /^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/;

function parsePlatforms(v: unknown, p: string[]): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    p.push('platforms: must be a list like [linux/amd64, linux/arm64]');
    return [];
  }
  v.forEach((x: string, i) => {
    if (!PLATFORM_RE.test(x)) p.push(`platforms[${i}]: "${x}" is not os/arch[/variant], e.g. linux/amd64`);
  });
  return v as string[];
}

function parseAllowlist(v: unknown, p: string[]): string[] {
  if (!Array.isArray(v)) {
    p.push('allowlist: must be a list of rules');
    return [];
  }
  return v.flatMap((r, i) => {
    if (typeof r !== 'string') {
      p.push(`allowlist[${i}]: must be a string`);
      return [];
    }
    try {
      parseRule(r);
      return [r];
    } catch (e) {
      p.push(`allowlist[${i}]: ${(e as Error).message}`);
      return [];
    }
  });
}

function parseTls(v: unknown, at: string, known: KeyTree, p: string[], path: (s: string) => string): TlsConfig | undefined {
  if (!isObject(v)) {
    p.push(`${at}: must be a mapping with cert and key`);
    return undefined;
  }
  checkKeys(v, known, at, p);
  const t: TlsConfig = { cert: path(str(v.cert, `${at}.cert`, p)), key: path(str(v.key, `${at}.key`, p)) };
  if (v.clientCA !== undefined) t.clientCA = path(str(v.clientCA, `${at}.clientCA`, p));
  return t;
}

function parseAuth(v: unknown, p: string[], path: (s: string) => string): { htpasswd: string } | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v)) {
    p.push('auth: must be a mapping with htpasswd');
    return undefined;
  }
  checkKeys(v, CONFIG_KEYS.auth, 'auth', p);
  return { htpasswd: path(str(v.htpasswd, 'auth.htpasswd', p)) };
}

function parseAdmin(v: unknown, p: string[], path: (s: string) => string, storage: string): Config['admin'] {
  const a = isObject(v) ? v : {};
  if (!isObject(v)) p.push('admin: must be a mapping');
  checkKeys(a, CONFIG_KEYS.admin, 'admin', p);
  return {
    listen: address(a.listen ?? '127.0.0.1:6001', 'admin.listen', p),
    tokenFile: a.tokenFile === undefined ? resolve(storage, 'admin.token') : path(str(a.tokenFile, 'admin.tokenFile', p)),
    tls: a.tls === undefined ? undefined : parseAdminTls(a.tls, p, path),
  };
}

function parseAdminTls(v: unknown, p: string[], path: (s: string) => string): TlsConfig | undefined {
  const t = parseTls(v, 'admin.tls', CONFIG_KEYS.admin.tls, p, path);
  // The CLI authenticates with the token and has no client certificate to offer.
  if (t?.clientCA !== undefined) p.push('admin.tls.clientCA: not supported; the admin API is protected by its bearer token');
  return t;
}
