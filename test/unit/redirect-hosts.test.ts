// upstreams.<host>.redirectHosts, tokenRealms and upstreamTimeouts.sync: how they are validated, which redirect
// targets a pinned list lets through (exact host, host:port, *.domain), and which targets are internal.
import { describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../../src/config/config.js';
import { guardedLookup, internalTarget, redirectAllowed, redirectRefusal } from '../../src/upstream/redirects.js';

const base = { upstreams: { 'factory.talos.dev': { url: 'https://factory.talos.dev' } }, defaultUpstream: 'factory.talos.dev' };

function problems(doc: object): string[] {
  try {
    validateConfig(doc, '/etc/sluice/sluice.yaml');
    return [];
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
}

describe('redirectHosts and upstreamTimeouts.sync in the config', () => {
  it('absent: any redirect target; given: the list, lower-cased; sync defaults to 15 minutes', () => {
    const c = validateConfig(base, '/etc/sluice/sluice.yaml');
    expect(c.upstreams.get('factory.talos.dev')?.redirectHosts).toBeUndefined();
    expect(c.upstreamTimeouts.syncMs).toBe(15 * 60_000);
    const pinned = validateConfig({ ...base, upstreams: { 'factory.talos.dev': { url: 'https://f', redirectHosts: ['Registry.Example:5000', '*.r2.cloudflarestorage.com'] } }, upstreamTimeouts: { sync: '30m' } }, '/x.yaml');
    expect(pinned.upstreams.get('factory.talos.dev')?.redirectHosts).toEqual(['registry.example:5000', '*.r2.cloudflarestorage.com']);
    expect(pinned.upstreamTimeouts.syncMs).toBe(30 * 60_000);
  });

  it('a list of anything but host names is refused with its key path', () => {
    expect(problems({ ...base, upstreams: { 'factory.talos.dev': { url: 'https://f', redirectHosts: 'cdn.example' } } }))
      .toEqual([expect.stringMatching(/^upstreams\.factory\.talos\.dev\.redirectHosts: must be a list of hosts/) as string]);
    expect(problems({ ...base, upstreams: { 'factory.talos.dev': { url: 'https://f', redirectHosts: ['ok.example', 'https://cdn.example/x', 7] } } }))
      .toEqual([
        'upstreams.factory.talos.dev.redirectHosts[1]: "https://cdn.example/x" is not a host name (host, host:port or *.domain)',
        'upstreams.factory.talos.dev.redirectHosts[2]: 7 is not a host name (host, host:port or *.domain)',
      ]);
    expect(problems({ ...base, upstreamTimeouts: { sync: 'soon' } }).join('\n')).toMatch(/^upstreamTimeouts\.sync: /m);
  });
});

describe('redirectAllowed', () => {
  it.each([
    [['cdn.example'], 'https://cdn.example/blob', true],
    [['cdn.example'], 'https://cdn.example:8443/blob', true],
    [['cdn.example:443'], 'https://cdn.example:8443/blob', false],
    [['127.0.0.1:5000'], 'http://127.0.0.1:5000/v2/', true],
    [['127.0.0.1:5000'], 'http://127.0.0.1:5001/v2/', false],
    [['*.docker.com'], 'https://production.cloudflare.docker.com/x', true],
    [['*.docker.com'], 'https://docker.com/x', false],
    [['*.docker.com'], 'https://evildocker.com/x', false],
    [[], 'https://cdn.example/', false],
  ])('%j lets %s through: %s', (patterns, url, ok) => {
    expect(redirectAllowed(patterns, new URL(url))).toBe(ok);
  });
});

describe('redirect hops', () => {
  it('never from https to plain http, never to another scheme; http to https and same scheme are fine', () => {
    const u = (s: string): URL => new URL(s);
    expect(redirectRefusal(u('https://reg.example/v2/x'), u('http://reg.example/v2/x'))).toBe('redirect from https to plain http (reg.example) refused');
    expect(redirectRefusal(u('https://reg.example/v2/x'), u('file:///etc/passwd'))).toBe('redirect to file: refused');
    expect(redirectRefusal(u('https://reg.example/v2/x'), u('https://cdn.example/b'))).toBeUndefined();
    expect(redirectRefusal(u('http://127.0.0.1:5000/v2/x'), u('http://127.0.0.1:5001/b'))).toBeUndefined();
    expect(redirectRefusal(u('http://127.0.0.1:5000/v2/x'), u('https://cdn.example/b'))).toBeUndefined();
  });
});

describe('tokenRealms in the config', () => {
  it('origins are kept as origins; anything else is refused with its key path', () => {
    const c = validateConfig({ ...base, upstreams: { 'factory.talos.dev': { url: 'https://f', tokenRealms: ['https://Auth.Example:8443', 'https://auth.example/'] } } }, '/x.yaml');
    expect(c.upstreams.get('factory.talos.dev')?.tokenRealms).toEqual(['https://auth.example:8443', 'https://auth.example']);
    expect(problems({ ...base, upstreams: { 'factory.talos.dev': { url: 'https://f', tokenRealms: 'https://auth.example' } } }))
      .toEqual([expect.stringMatching(/^upstreams\.factory\.talos\.dev\.tokenRealms: must be a list of origins/) as string]);
    expect(problems({ ...base, upstreams: { 'factory.talos.dev': { url: 'https://f', tokenRealms: ['https://auth.example/token', 'auth.example'] } } }))
      .toEqual([
        'upstreams.factory.talos.dev.tokenRealms[0]: "https://auth.example/token" is not an origin (scheme://host[:port], nothing after)',
        'upstreams.factory.talos.dev.tokenRealms[1]: "auth.example" is not an origin (scheme://host[:port], nothing after)',
      ]);
  });
});

describe('internalTarget', () => {
  const listeners = [{ host: '0.0.0.0', port: 6000 }, { host: '127.0.0.1', port: 6001 }, { host: '192.0.2.10', port: 9090 }];
  it.each([
    ['http://127.0.0.1:5000/b', 'a loopback address'],
    ['http://127.1.2.3/b', 'a loopback address'],
    ['http://localhost:5000/b', 'a loopback address'],
    ['http://registry.localhost/b', 'a loopback address'],
    ['http://[::1]:5000/b', 'a loopback address'],
    ['http://[::ffff:127.0.0.1]/b', 'a loopback address'],
    ['http://[::ffff:169.254.169.254]/b', 'a link-local address'],
    ['http://0.0.0.0:5000/b', 'a loopback address'],
    ['http://169.254.169.254/latest', 'a link-local address'],
    ['http://[fe80::1]/x', 'a link-local address'],
    ['http://127.0.0.1:6000/metrics', 'a listener of this sluice'],
    ['http://127.0.0.1:6001/v1/status', 'a listener of this sluice'],
    ['http://192.0.2.10:9090/metrics', 'a listener of this sluice'],
    ['http://192.0.2.10:9091/x', undefined],
    ['https://cdn.example/b', undefined],
    ['https://10.0.0.8/b', undefined],
  ])('%s: %s', (url, why) => {
    expect(internalTarget(new URL(url), listeners)).toBe(why);
  });
});

describe('guardedLookup: a name that resolves to an internal address', () => {
  type Answer = { err: NodeJS.ErrnoException | null; address: unknown };
  const answers: Record<string, string> = { 'sneaky.example': '127.0.0.1', 'meta.example': '169.254.169.254', 'cdn.example': '198.51.100.7', 'blobs.lab': '127.0.0.2' };
  const resolve = (hostname: string, _o: unknown, cb: (err: NodeJS.ErrnoException | null, a: Array<{ address: string; family: number }>) => void): void =>
    cb(null, [{ address: answers[hostname] ?? '192.0.2.1', family: 4 }]);
  const lookup = guardedLookup((h) => h === 'blobs.lab', 'reg.test', resolve);
  const ask = (hostname: string, all: boolean): Promise<Answer> =>
    new Promise((done) => lookup(hostname, { all }, (err, address) => done({ err, address })));

  it('is refused unless named; a public one resolves as asked (one address or all)', async () => {
    const sneaky = await ask('sneaky.example', false);
    expect(sneaky.err?.message).toBe('sneaky.example resolves to 127.0.0.1, a loopback address: refused unless upstreams.reg.test.redirectHosts names it');
    expect(sneaky.err?.code).toBe('ERR_SLUICE_INTERNAL_ADDRESS');
    expect((await ask('meta.example', true)).err?.message).toContain('169.254.169.254, a link-local address');
    expect(await ask('blobs.lab', false)).toEqual({ err: null, address: '127.0.0.2' });
    expect(await ask('cdn.example', false)).toEqual({ err: null, address: '198.51.100.7' });
    expect(await ask('cdn.example', true)).toEqual({ err: null, address: [{ address: '198.51.100.7', family: 4 }] });
  });
});
