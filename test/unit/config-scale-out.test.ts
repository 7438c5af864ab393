// The scale-out config keys: storage.s3 (+ storage.path) and database.postgres, their defaults, paths resolved
// against the config file's folder, and every problem reported with its key path.
import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/config.js';
import { CONFIG_FILE as FILE, configProblems } from '../helpers/config-problems.js';

const BASE = { upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } } };

const problems = (doc: Record<string, unknown>): string[] => configProblems({ ...BASE, ...doc });

describe('config: storage.s3 and database.postgres', () => {
  it('a folder stays the whole store; no database means metadata beside it', () => {
    const c = validateConfig({ ...BASE, storage: './data' }, FILE);
    expect(c.storage).toBe('/etc/sluice/data');
    expect(c.s3).toBeUndefined();
    expect(c.postgres).toBeUndefined();
  });

  it('parses s3 with defaults (region, path style with an endpoint, local folder) and resolves key files', () => {
    const c = validateConfig({
      ...BASE,
      storage: { s3: { endpoint: 'http://rgw.lan:7480/', bucket: 'mirror', prefix: 'site-a', accessKeyFile: 'keys/access', secretKeyFile: '/run/s/secret', tls: { ca: 'ca.pem' } } },
      database: { postgres: { host: 'db.lan', port: 5432, user: 'sluice', passwordFile: 'pg.pass', database: 'sluice' } },
    }, FILE);
    expect(c.storage).toBe('/etc/sluice/data');
    expect(c.s3).toEqual({
      endpoint: 'http://rgw.lan:7480', bucket: 'mirror', region: 'us-east-1', prefix: 'site-a/', forcePathStyle: true,
      accessKeyFile: '/etc/sluice/keys/access', secretKeyFile: '/run/s/secret', tls: { ca: '/etc/sluice/ca.pem' },
      requestTimeoutMs: 10_000, connectTimeoutMs: 5_000, maxAttempts: 3,
    });
    expect(c.postgres).toEqual({
      host: 'db.lan', port: 5432, user: 'sluice', passwordFile: '/etc/sluice/pg.pass', database: 'sluice', poolSize: 10,
      connectTimeoutMs: 5_000, queryTimeoutMs: 10_000, freshnessMs: 10_000,
    });
  });

  it('bounds every wait on the shared engines: timeouts and freshness are durations, attempts a small integer', () => {
    const c = validateConfig({
      ...BASE,
      storage: { s3: { endpoint: 'http://rgw.lan:7480', bucket: 'mirror', requestTimeout: '2s', connectTimeout: 500, maxAttempts: 1 } },
      database: { postgres: { url: 'postgres://db/x', connectTimeout: '1s', queryTimeout: '1500ms', freshness: '3s' } },
    }, FILE);
    expect(c.s3).toMatchObject({ requestTimeoutMs: 2_000, connectTimeoutMs: 500_000, maxAttempts: 1 });
    expect(c.postgres).toMatchObject({ connectTimeoutMs: 1_000, queryTimeoutMs: 1_500, freshnessMs: 3_000 });
    const p = problems({
      storage: { s3: { bucket: 'mirror', requestTimeout: '0s', maxAttempts: 0 } },
      database: { postgres: { url: 'postgres://db/x', queryTimeout: 'soon', freshness: '0s' } },
    });
    expect(p).toEqual(expect.arrayContaining([
      'storage.s3.requestTimeout: must be longer than 0',
      'storage.s3.maxAttempts: must be an integer from 1 to 10',
      expect.stringMatching(/^database\.postgres\.queryTimeout: /),
      'database.postgres.freshness: must be longer than 0',
    ]));
  });

  it('reports every problem with its key path', () => {
    const p = problems({
      storage: { s3: { bucket: 'X', endpoint: 'rgw:7480', accessKeyFile: 'a', colour: 1 }, path: 3 },
      database: { postgres: { url: 'mysql://x', port: 70000, poolSize: 0 } },
    });
    expect(p).toEqual(expect.arrayContaining([
      'storage.path: must be a non-empty string',
      'storage.s3.colour: unknown key',
      expect.stringMatching(/^storage\.s3\.bucket: not a valid bucket name/),
      'storage.s3.endpoint: must be http(s)://HOST[:PORT]',
      'storage.s3: give accessKeyFile and secretKeyFile together',
      'database.postgres.url: must be a postgres:// URL',
      'database.postgres.port: must be a port number',
      'database.postgres.poolSize: must be a positive integer',
    ]));
    expect(problems({ storage: { s3: {} } })).toContain('storage.s3.bucket: is required');
    expect(problems({ database: { mysql: {} } })).toContain('database: must be a mapping with postgres');
    expect(problems({ database: { postgres: {} } })).toContain('database.postgres: give url, or host (with port, user, passwordFile, database)');
  });

  it('storage.cache: path (resolved) and maxBytes, beside s3 only, every problem named', () => {
    const c = validateConfig({ ...BASE, storage: { s3: { bucket: 'mirror' }, cache: { path: 'cache', maxBytes: '2GiB' } } }, FILE);
    expect(c.storageCache).toEqual({ path: '/etc/sluice/cache', maxBytes: 2 * 1024 ** 3 });
    expect(validateConfig({ ...BASE, storage: { s3: { bucket: 'mirror' } } }, FILE).storageCache).toBeUndefined();
    expect(problems({ storage: { path: './data', cache: { path: 'c', maxBytes: '1GiB' } } })).toEqual(['storage.cache: only with storage.s3 (blobs on the filesystem are local already)']);
    expect(problems({ storage: { s3: { bucket: 'mirror' }, cache: { size: 1 } } })).toEqual(expect.arrayContaining([
      'storage.cache.size: unknown key', 'storage.cache.path: is required', 'storage.cache.maxBytes: is required (e.g. 50GiB)',
    ]));
    expect(problems({ storage: { s3: { bucket: 'mirror' }, cache: '/var/cache' } })).toEqual(['storage.cache: must be a mapping with path and maxBytes']);
  });

  it('storage.s3.redirect: a ttl in whole seconds from 1s to 7d; off when absent; every problem named', () => {
    expect(validateConfig({ ...BASE, storage: { s3: { bucket: 'mirror', redirect: { ttl: '5m' } } } }, FILE).s3?.redirectTtlSeconds).toBe(300);
    expect(validateConfig({ ...BASE, storage: { s3: { bucket: 'mirror' } } }, FILE).s3?.redirectTtlSeconds).toBeUndefined();
    const at = (redirect: unknown): string[] => problems({ storage: { s3: { bucket: 'mirror', redirect } } });
    expect(at({ ttl: 'soon' })).toEqual([expect.stringMatching(/^storage\.s3\.redirect\.ttl: invalid duration "soon": use a number with a unit/)]);
    expect(at({ ttl: '0s' })).toEqual(['storage.s3.redirect.ttl: must be whole seconds, at least 1s (got "0s")']);
    expect(at({ ttl: '1500ms' })).toEqual(['storage.s3.redirect.ttl: must be whole seconds, at least 1s (got "1500ms")']);
    expect(at({ ttl: '8d' })).toEqual(['storage.s3.redirect.ttl: must be at most 7d (the longest an S3 presigned URL is valid)']);
    expect(at({})).toEqual(['storage.s3.redirect.ttl: is required (e.g. 5m)']);
    expect(at({ ttl: '1m', hosts: [] })).toEqual(['storage.s3.redirect.hosts: unknown key']);
    expect(at(true)).toEqual(['storage.s3.redirect: must be a mapping with ttl (e.g. redirect: { ttl: 5m })']);
    expect(problems({ storage: { s3: { bucket: 'mirror', redirect: { ttl: '5m' } }, cache: { path: 'c', maxBytes: '1GiB' } } })).toEqual([
      'storage.cache: not with storage.s3.redirect (blob GETs are redirected to the object store, so no blob passes through this replica to be cached)',
    ]);
  });
});
