// Upstreams that are other mirrors: `mirror: true` per host, or `'*'` for every host (only as a mirror), and the
// ?ns=<host> every request to a mirror carries. Pure config validation plus the transport's URL.
import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/config.js';
import { hostTable } from '../../src/app.js';
import { Transport } from '../../src/upstream/transport.js';
import { CONFIG_FILE as FILE, configProblems as problems } from '../helpers/config-problems.js';

describe('mirror upstreams', () => {
  it("'*' with mirror: true serves every host; defaultUpstream may be any host", () => {
    const c = validateConfig({ upstreams: { '*': { url: 'https://outer.example:6000', mirror: true } }, defaultUpstream: 'docker.io' }, FILE);
    expect(c.upstreams.get('*')).toEqual({ host: '*', url: 'https://outer.example:6000', mirror: true });
    const hosts = hostTable(c);
    expect(['docker.io', 'ghcr.io', 'myreg.local:5000'].map((h) => hosts.has(h))).toEqual([true, true, true]);
  });

  it("'*' without mirror: true, a non-boolean mirror and an invalid host are refused with their key paths", () => {
    expect(problems({ upstreams: { '*': { url: 'https://outer.example' } }, defaultUpstream: 'docker.io' })).toEqual([
      'upstreams.*: an upstream for every host must be another mirror: add mirror: true',
    ]);
    expect(problems({ upstreams: { 'docker.io': { url: 'https://x', mirror: 'yes' } } })).toEqual(['upstreams.docker.io.mirror: must be true or false']);
    expect(problems({ upstreams: { 'docker.io': { url: 'https://x' }, 'bad host': { url: 'https://y', mirror: true } } })[0]).toMatch(/^upstreams\.bad host: not a valid registry host name/);
  });

  it('per host: a mirror for ghcr.io only; other hosts stay direct and unknown ones stay unknown', () => {
    const c = validateConfig({ upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' }, 'ghcr.io': { url: 'http://outer:6000', mirror: true } } }, FILE);
    expect(c.upstreams.get('ghcr.io')?.mirror).toBe(true);
    expect(c.upstreams.get('docker.io')?.mirror).toBe(false);
    expect(hostTable(c).has('quay.io')).toBe(false);
  });

  it('a mirror upstream gets ?ns=<host> on every URL, after any query of its own', () => {
    const t = new Transport({ host: 'ghcr.io', base: new URL('http://outer:6000'), ns: 'ghcr.io' });
    expect(t.urlFor('/siderolabs/kubelet/manifests/v1').toString()).toBe('http://outer:6000/v2/siderolabs/kubelet/manifests/v1?ns=ghcr.io');
    expect(t.urlFor('/x/tags/list?n=10').toString()).toBe('http://outer:6000/v2/x/tags/list?n=10&ns=ghcr.io');
    const direct = new Transport({ host: 'ghcr.io', base: new URL('https://ghcr.io') });
    expect(direct.urlFor('/x/manifests/v1').toString()).toBe('https://ghcr.io/v2/x/manifests/v1');
    void Promise.all([t.close(), direct.close()]);
  });
});
