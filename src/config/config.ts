// The configuration schema (DESIGN.md §8), its defaults, and load + validate: every problem is
// reported with its key path, all at once, before anything listens. Durations and windows are parsed here once.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseDuration, parseWindows, type Schedule } from '../window/schedule.js';
import { parseRule } from '../policy/allowlist.js';
import { canonicalHost, isValidHost } from '../oci/reference.js';
import { parseDatabase, parseStorage, type PostgresConfig, type S3StorageConfig } from './scale-out.js';

export type { PostgresConfig, S3StorageConfig } from './scale-out.js';

export interface UpstreamConfig {
  host: string;
  url: string;
  auth?: { username: string; passwordFile?: string; passwordEnv?: string };
  tls?: { ca?: string; insecureSkipVerify: boolean };
}

export interface TlsConfig {
  cert: string;
  key: string;
  clientCA?: string;
}

export interface Config {
  /** The file this was read from ('' for a config built in code). */
  file: string;
  listen: { host: string; port: number };
  /** The local folder: the whole store on fs; spools and the admin token when blobs are on `s3`. */
  storage: string;
  /** Blobs on an S3-compatible object store (`storage: { s3: {…} }`). */
  s3?: S3StorageConfig;
  /** Metadata in PostgreSQL (`database: { postgres: {…} }`); absent: beside the store, as always. */
  postgres?: PostgresConfig;
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
  upstreamTimeouts: { connectMs: number; idleMs: number };
  /** Bound on one upstream blob ingest, independent of any client. */
  ingestTimeoutMs: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[], file: string) {
    super(`invalid config ${file}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const KNOWN_KEYS = new Set([
  'listen', 'storage', 'defaultUpstream', 'upstreams', 'windows', 'allowlist', 'tls', 'auth', 'admin',
  'tagTtl', 'syncOnOpen', 'upstreamTimeouts', 'ingestTimeout', 'database',
]);

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
  for (const k of Object.keys(doc)) if (!KNOWN_KEYS.has(k)) p.push(`${k}: unknown key`);

  const listen = address(doc.listen ?? '0.0.0.0:6000', 'listen', p);
  const { storage, s3 } = parseStorage(doc.storage ?? './data', p, path);
  const postgres = parseDatabase(doc.database, p, path);
  const upstreams = parseUpstreams(doc.upstreams ?? {}, p, path);
  const defaultUpstream = canonicalHost(str(doc.defaultUpstream ?? 'docker.io', 'defaultUpstream', p));
  if (!upstreams.has(defaultUpstream)) p.push(`defaultUpstream: "${defaultUpstream}" is not one of the configured upstreams`);
  const w = parseWindows(doc.windows ?? 'never', 'windows');
  p.push(...w.errors);
  const allowlist = parseAllowlist(doc.allowlist ?? [], p);
  const tls = doc.tls === undefined ? undefined : parseTls(doc.tls, 'tls', p, path);
  const auth = parseAuth(doc.auth, p, path);
  if (auth && !tls) p.push('auth: basic auth needs tls too (over plain HTTP every request would carry a node password in clear)');
  const admin = parseAdmin(doc.admin ?? {}, p, path, storage);
  const timeouts = isObject(doc.upstreamTimeouts) ? doc.upstreamTimeouts : {};
  if (doc.upstreamTimeouts !== undefined && !isObject(doc.upstreamTimeouts)) p.push('upstreamTimeouts: must be a mapping');

  const config: Config = {
    file,
    listen,
    storage,
    ...(s3 ? { s3 } : {}),
    ...(postgres ? { postgres } : {}),
    defaultUpstream,
    upstreams,
    windows: w.windows,
    allowlist,
    tls,
    auth,
    admin,
    tagTtlMs: duration(doc.tagTtl ?? '5m', 'tagTtl', p),
    syncOnOpen: bool(doc.syncOnOpen ?? false, 'syncOnOpen', p),
    upstreamTimeouts: {
      connectMs: duration(timeouts.connect ?? '10s', 'upstreamTimeouts.connect', p),
      idleMs: duration(timeouts.idle ?? '30s', 'upstreamTimeouts.idle', p),
    },
    ingestTimeoutMs: duration(doc.ingestTimeout ?? '30m', 'ingestTimeout', p),
  };
  if (p.length > 0) throw new ConfigError(p, file);
  return config;
}

function parseUpstreams(v: unknown, p: string[], path: (s: string) => string): Map<string, UpstreamConfig> {
  const out = new Map<string, UpstreamConfig>();
  if (!isObject(v)) {
    p.push('upstreams: must be a mapping of registry host to { url }');
    return out;
  }
  for (const [rawHost, spec] of Object.entries(v)) {
    const at = `upstreams.${rawHost}`;
    const host = canonicalHost(rawHost);
    if (!isValidHost(host)) p.push(`${at}: not a valid registry host name`);
    if (!isObject(spec)) {
      p.push(`${at}: must be a mapping with at least url`);
      continue;
    }
    for (const k of Object.keys(spec)) if (!['url', 'auth', 'tls'].includes(k)) p.push(`${at}.${k}: unknown key`);
    const url = str(spec.url, `${at}.url`, p);
    if (url && !/^https?:\/\/[^/]+/.test(url)) p.push(`${at}.url: must be an http:// or https:// URL`);
    const u: UpstreamConfig = { host, url: url.replace(/\/+$/, '') };
    if (spec.auth !== undefined) {
      if (!isObject(spec.auth)) p.push(`${at}.auth: must be a mapping`);
      else {
        const a = spec.auth;
        u.auth = { username: str(a.username, `${at}.auth.username`, p) };
        if (a.passwordFile !== undefined) u.auth.passwordFile = path(str(a.passwordFile, `${at}.auth.passwordFile`, p));
        if (a.passwordEnv !== undefined) u.auth.passwordEnv = str(a.passwordEnv, `${at}.auth.passwordEnv`, p);
        if ((a.passwordFile === undefined) === (a.passwordEnv === undefined)) {
          p.push(`${at}.auth: give exactly one of passwordFile or passwordEnv`);
        }
      }
    }
    if (spec.tls !== undefined) {
      if (!isObject(spec.tls)) p.push(`${at}.tls: must be a mapping`);
      else {
        u.tls = { insecureSkipVerify: bool(spec.tls.insecureSkipVerify ?? false, `${at}.tls.insecureSkipVerify`, p) };
        if (spec.tls.ca !== undefined) u.tls.ca = path(str(spec.tls.ca, `${at}.tls.ca`, p));
      }
    }
    if (out.has(host)) p.push(`${at}: duplicate of ${host}`);
    out.set(host, u);
  }
  return out;
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

function parseTls(v: unknown, at: string, p: string[], path: (s: string) => string): TlsConfig | undefined {
  if (!isObject(v)) {
    p.push(`${at}: must be a mapping with cert and key`);
    return undefined;
  }
  for (const k of Object.keys(v)) if (!['cert', 'key', 'clientCA'].includes(k)) p.push(`${at}.${k}: unknown key`);
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
  return { htpasswd: path(str(v.htpasswd, 'auth.htpasswd', p)) };
}

function parseAdmin(v: unknown, p: string[], path: (s: string) => string, storage: string): Config['admin'] {
  const a = isObject(v) ? v : {};
  if (!isObject(v)) p.push('admin: must be a mapping');
  for (const k of Object.keys(a)) if (!['listen', 'tokenFile', 'tls'].includes(k)) p.push(`admin.${k}: unknown key`);
  return {
    listen: address(a.listen ?? '127.0.0.1:6001', 'admin.listen', p),
    tokenFile: a.tokenFile === undefined ? resolve(storage, 'admin.token') : path(str(a.tokenFile, 'admin.tokenFile', p)),
    tls: a.tls === undefined ? undefined : parseAdminTls(a.tls, p, path),
  };
}

function parseAdminTls(v: unknown, p: string[], path: (s: string) => string): TlsConfig | undefined {
  const t = parseTls(v, 'admin.tls', p, path);
  // The CLI authenticates with the token and has no client certificate to offer.
  if (t?.clientCA !== undefined) p.push('admin.tls.clientCA: not supported; the admin API is protected by its bearer token');
  return t;
}

function address(v: unknown, at: string, p: string[]): { host: string; port: number } {
  const s = typeof v === 'number' ? `0.0.0.0:${v}` : str(v, at, p);
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    if (s) p.push(`${at}: must be HOST:PORT (e.g. 0.0.0.0:6000), got "${s}"`);
    return { host: '127.0.0.1', port: 0 };
  }
  const host = (m[1] ?? '').replace(/^\[|\]$/g, '') || '0.0.0.0';
  return { host, port };
}

function duration(v: unknown, at: string, p: string[]): number {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v * 1000;
  try {
    return parseDuration(str(v, at, p));
  } catch (e) {
    p.push(`${at}: ${(e as Error).message}`);
    return 0;
  }
}

function str(v: unknown, at: string, p: string[]): string {
  if (typeof v === 'string' && v.length > 0) return v;
  p.push(`${at}: ${v === undefined ? 'is required' : 'must be a non-empty string'}`);
  return '';
}

function bool(v: unknown, at: string, p: string[]): boolean {
  if (typeof v === 'boolean') return v;
  p.push(`${at}: must be true or false`);
  return false;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
