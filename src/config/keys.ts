// Every configuration key the validator accepts, declared once as a tree: the validator refuses any other key,
// naming its path, and the reference (config/README.md) is checked against this tree by a test.
import { WINDOW_KEYS } from '../window/schedule.js';

/** A mapping's keys; `null` marks a key whose value is a scalar, a list of scalars, or a form with its own grammar. */
export interface KeyTree { readonly [key: string]: KeyTree | null }

/** Under `upstreams`: the key standing for any registry host (or '*'). */
export const ANY_HOST = '<host>';
/** Under a list of mappings (`windows`): the key standing for each item. */
export const LIST_ITEM = '[]';

const leaves = (...keys: readonly string[]): KeyTree => Object.fromEntries(keys.map((k) => [k, null]));

const TLS = leaves('cert', 'key', 'clientCA');

export const CONFIG_KEYS = {
  listen: null,
  storage: {
    ...leaves('path', 'maxBytes', 'maxBlobBytes'),
    s3: {
      ...leaves('endpoint', 'bucket', 'region', 'prefix', 'accessKeyFile', 'secretKeyFile', 'accessKeyEnv', 'secretKeyEnv', 'forcePathStyle'),
      tls: leaves('ca'),
      ...leaves('requestTimeout', 'connectTimeout', 'maxAttempts'),
      redirect: leaves('ttl'),
    },
    cache: leaves('path', 'maxBytes'),
  },
  database: { postgres: leaves('url', 'host', 'port', 'user', 'passwordFile', 'database', 'poolSize', 'connectTimeout', 'queryTimeout', 'freshness') },
  defaultUpstream: null,
  upstreams: {
    [ANY_HOST]: {
      ...leaves('url', 'mirror'),
      auth: leaves('username', 'passwordFile', 'passwordEnv'),
      tls: leaves('ca', 'insecureSkipVerify'),
      ...leaves('redirectHosts', 'tokenRealms'),
    },
  },
  windows: { [LIST_ITEM]: leaves(...WINDOW_KEYS) },
  allowlist: null,
  tls: TLS,
  auth: leaves('htpasswd'),
  admin: { ...leaves('listen', 'tokenFile'), tls: TLS },
  tagTtl: null,
  syncOnOpen: null,
  requestLog: null,
  upstreamTimeouts: leaves('connect', 'idle', 'sync'),
  ingestTimeout: null,
  platforms: null,
  metrics: leaves('listen'),
  gc: leaves('keep', 'schedule'),
  gcGrace: null,
  signing: {
    ...leaves('key', 'policy'),
    rules: { [LIST_ITEM]: { image: null, publicKey: leaves('certificate'), keyless: leaves('issuer', 'subject', 'subjectRegex') } },
    trustedRoot: null,
  },
} as const satisfies KeyTree;

/** Pushes `<at>.<key>: unknown key` for every key of `value` the tree does not name. */
export function checkKeys(value: Record<string, unknown>, known: KeyTree, at: string, p: string[]): void {
  const names = Object.keys(known);
  for (const k of Object.keys(value)) if (!names.includes(k)) p.push(`${joinKey(at, k)}: unknown key`);
}

/** Every key path of the tree, parents before children: `storage`, `storage.s3`, `upstreams.<host>.url`, `windows[].days`. */
export function keyPaths(tree: KeyTree = CONFIG_KEYS, at = ''): string[] {
  return Object.entries(tree).flatMap(([k, sub]) => {
    const path = joinKey(at, k);
    return sub === null ? [path] : [path, ...keyPaths(sub, path)];
  });
}

function joinKey(at: string, key: string): string {
  if (at === '') return key;
  return key === LIST_ITEM ? `${at}${key}` : `${at}.${key}`;
}
