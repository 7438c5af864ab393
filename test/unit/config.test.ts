// Config load and validation: the embedded default is valid; every problem is reported with its key path,
// all at once; relative paths resolve against the config file's folder.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, validateConfig } from '../../src/config/config.js';
import { REPO_ROOT } from '../helpers/sluice.js';
import { CONFIG_FILE as FILE, configProblems as problems } from '../helpers/config-problems.js';

describe('config', () => {
  it('the embedded default is valid and matches the contract', () => {
    const c = loadConfig(join(REPO_ROOT, 'config', 'sluice.yaml'));
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 6000 });
    expect(c.storage).toBe(join(REPO_ROOT, 'config', 'data'));
    expect(c.defaultUpstream).toBe('docker.io');
    expect([...c.upstreams.keys()]).toEqual(['docker.io', 'ghcr.io', 'registry.k8s.io', 'gcr.io', 'quay.io', 'factory.talos.dev']);
    expect(c.upstreams.get('docker.io')?.url).toBe('https://registry-1.docker.io');
    expect(c.windows).toBe('never');
    expect(c.allowlist).toEqual([]);
    expect(c.admin.listen).toEqual({ host: '127.0.0.1', port: 6001 });
    expect(c.admin.tokenFile).toBe(join(REPO_ROOT, 'config', 'data', 'admin.token'));
    expect(c.tls).toBeUndefined();
    expect(c.tagTtlMs).toBe(5 * 60_000);
  });

  it('relative paths resolve against the config file folder', () => {
    const c = validateConfig({
      storage: './store',
      upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', auth: { username: 'u', passwordFile: 'secret' }, tls: { ca: '../ca.pem' } } },
      tls: { cert: 'tls.crt', key: '/abs/tls.key' },
    }, FILE);
    expect(c.storage).toBe('/etc/sluice/store');
    expect(c.upstreams.get('docker.io')?.auth?.passwordFile).toBe('/etc/sluice/secret');
    expect(c.upstreams.get('docker.io')?.tls?.ca).toBe('/etc/ca.pem');
    expect(c.tls).toEqual({ cert: '/etc/sluice/tls.crt', key: '/abs/tls.key' });
  });

  it('reports every problem with its key path, all at once', () => {
    const found = problems({
      listen: 'nowhere',
      storage: 42,
      defaultUpstream: 'quay.io',
      upstreams: { 'docker.io': { url: 'ftp://x', extra: 1 }, 'Bad Host!': { url: 'https://x' }, 'ghcr.io': 'https://ghcr.io' },
      windows: [{ days: ['funday'], start: '25:00', end: '06:00', timezone: 'Mars/Base' }],
      allowlist: ['Ghcr.io/X', 7],
      admin: { listen: '127.0.0.1:99999', bogus: true },
      tagTtl: 'soon',
      syncOnOpen: 'yes',
      surprise: 1,
    });
    const expectations: RegExp[] = [
      /^listen: must be HOST:PORT/,
      /^storage: must be a non-empty string/,
      /^defaultUpstream: "quay.io" is not one of the configured upstreams/,
      /^upstreams\.docker\.io\.url: must be an http/,
      /^upstreams\.docker\.io\.extra: unknown key/,
      /^upstreams\.Bad Host!: not a valid registry host name/,
      /^upstreams\.ghcr\.io: must be a mapping/,
      /^windows\[0\]\.days/,
      /^windows\[0\]\.start/,
      /^windows\[0\]\.timezone: unknown time zone "Mars\/Base"/,
      /^allowlist\[0\]: invalid rule "Ghcr.io\/X"/,
      /^allowlist\[1\]: must be a string/,
      /^admin\.listen: must be HOST:PORT/,
      /^admin\.bogus: unknown key/,
      /^tagTtl: invalid duration/,
      /^syncOnOpen: must be true or false/,
      /^surprise: unknown key/,
    ];
    for (const re of expectations) expect(found.some((p) => re.test(p)), `${re} in\n${found.join('\n')}`).toBe(true);
  });

  it('upstream auth needs exactly one password source', () => {
    expect(problems({ upstreams: { 'docker.io': { url: 'https://r', auth: { username: 'u' } } } }))
      .toContain('upstreams.docker.io.auth: give exactly one of passwordFile or passwordEnv');
    expect(problems({ upstreams: { 'docker.io': { url: 'https://r', auth: { username: 'u', passwordFile: 'a', passwordEnv: 'B' } } } }))
      .toContain('upstreams.docker.io.auth: give exactly one of passwordFile or passwordEnv');
  });

  it('basic auth for nodes needs TLS; the admin listener takes no client CA', () => {
    expect(problems({ upstreams: { 'docker.io': { url: 'https://r' } }, auth: { htpasswd: './h' } }).join('\n')).toMatch(/^auth: basic auth needs tls too/m);
    expect(problems({ upstreams: { 'docker.io': { url: 'https://r' } }, tls: { cert: 'c', key: 'k' }, auth: { htpasswd: './h' } })).toEqual([]);
    expect(problems({ upstreams: { 'docker.io': { url: 'https://r' } }, admin: { tls: { cert: 'c', key: 'k', clientCA: 'ca' } } }).join('\n'))
      .toMatch(/^admin\.tls\.clientCA: not supported/m);
  });

  it('an unreadable or non-YAML file is a ConfigError naming the file', () => {
    expect(() => loadConfig('/nonexistent/sluice.yaml')).toThrow(ConfigError);
    expect(() => loadConfig('/nonexistent/sluice.yaml')).toThrow(/\/nonexistent\/sluice.yaml/);
  });

  it('reads storage.maxBytes, metrics.listen, gc and gcGrace, with defaults, and names every bad one', () => {
    const base = { upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } } };
    const d = validateConfig(base, FILE);
    expect(d.storage).toBe('/etc/sluice/data');
    expect(d.storageMaxBytes).toBeUndefined();
    expect(d.metrics).toBeUndefined();
    expect(d.gc).toEqual({ keep: 2 });
    expect(d.gcGraceMs).toBe(3600_000);
    const c = validateConfig({ ...base, storage: { path: './store', maxBytes: '1.5GiB' }, metrics: { listen: '0.0.0.0:9090' }, gc: { schedule: '24h', keep: 3 }, gcGrace: '30m' }, FILE);
    expect(c.storage).toBe('/etc/sluice/store');
    expect(c.storageMaxBytes).toBe(Math.floor(1.5 * 1024 ** 3));
    expect(c.metrics).toEqual({ listen: { host: '0.0.0.0', port: 9090 } });
    expect(c.gc).toEqual({ keep: 3, everyMs: 24 * 3600_000 });
    expect(c.gcGraceMs).toBe(30 * 60_000);
    expect(validateConfig({ ...base, storage: { maxBytes: 1000 } }, FILE).storageMaxBytes).toBe(1000);
    expect(problems({ ...base, storage: { path: './s', maxBytes: 'lots', size: 1 }, metrics: { listen: 'nope', auth: true }, gc: { keep: 0, schedule: '10s', every: 1 }, gcGrace: 'soon' })).toEqual([
      'storage.size: unknown key',
      'storage.maxBytes: must be a size such as 500GiB, 2TB or a number of bytes; got "lots"',
      expect.stringContaining('gcGrace:'),
      'metrics.auth: unknown key',
      'metrics.listen: must be HOST:PORT (e.g. 0.0.0.0:6000), got "nope"',
      'gc.every: unknown key',
      'gc.keep: must be a whole number of at least 1 (the current digest counts)',
      'gc.schedule: must be an interval of at least 1m (e.g. 24h)',
    ]);
  });
});
