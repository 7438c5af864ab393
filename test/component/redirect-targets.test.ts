// Where an upstream's redirects may lead by default: its own origin, and public addresses; never loopback,
// link-local or sluice's own listeners unless upstreams.<host>.redirectHosts names them.
import { lookup } from 'node:dns/promises';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { RegistryError } from '../../src/oci/errors.js';
import type { MiniUpstream } from '../helpers/mini-upstream.js';
import { upstreamFixtures } from '../helpers/upstream-fixtures.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { seededBytes } from '../kit/oci.js';

const { mini, client } = upstreamFixtures();
const sluices: InProcessSluice[] = [];

async function read(p: Promise<{ body: AsyncIterable<Uint8Array> }>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of (await p).body) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

afterEach(async () => {
  await Promise.all(sluices.splice(0).map((s) => s.close()));
});

describe('redirect targets on internal addresses', () => {
  it('a redirect within the upstream’s own origin is followed, even on loopback', async () => {
    const reg = await mini();
    const image = reg.addImage('team/app', 'v1', [seededBytes(1000, 'own')]);
    const layer = image.layers[0];
    reg.redirectBlob = (d) => (d === layer?.digest ? `${reg.url}/storage/${d}` : undefined);
    reg.routes.set(`/storage/${layer?.digest ?? ''}`, (_req, res) => void res.writeHead(200, { 'content-length': layer?.body.length ?? 0 }).end(layer?.body));
    expect((await read(client(reg).getBlob('team/app', layer?.digest ?? ''))).equals(layer?.body ?? Buffer.alloc(0))).toBe(true);
  });

  it('a redirect to another loopback port is refused unless redirectHosts names it; nothing is dialled there', async () => {
    const reg = await mini();
    const other = await mini();
    const image = reg.addImage('team/app', 'v1', [seededBytes(1000, 'loop')]);
    const layer = image.layers[0];
    other.blobs.set(layer?.digest ?? '', layer?.body ?? Buffer.alloc(0));
    reg.redirectBlob = (d) => `${other.url}/v2/team/app/blobs/${d}`;
    const e = await client(reg).getBlob('team/app', layer?.digest ?? '').then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(RegistryError);
    expect((e as RegistryError).kind).toBe('DENIED');
    expect((e as RegistryError).message).toContain(`to ${new URL(other.url).host}, a loopback address`);
    expect((e as RegistryError).message).toContain('upstreams.reg.test.redirectHosts');
    expect(other.requests).toEqual([]);
    const named = client(reg, { redirectHosts: [new URL(other.url).host] });
    expect((await read(named.getBlob('team/app', layer?.digest ?? ''))).equals(layer?.body ?? Buffer.alloc(0))).toBe(true);
  });

  it('a redirect to a link-local address (cloud metadata) is refused before anything is dialled', async () => {
    const reg = await mini();
    reg.redirectBlob = () => 'http://169.254.169.254/latest/meta-data/';
    const e = await client(reg).getBlob('team/app', `sha256:${'a'.repeat(64)}`).then(() => undefined, (err: unknown) => err);
    expect((e as RegistryError).kind).toBe('DENIED');
    expect((e as RegistryError).message).toContain('169.254.169.254, a link-local address');
  });

  /**
   * A sluice whose upstream redirects a blob to its own metrics listener (bound on `bindAddress`, named `host` in the
   * redirect, which `redirectHosts` also names as a blob host, as a site with blob storage on this machine would).
   */
  async function redirectToMetrics(reg: MiniUpstream, layer: string, host: string, bindAddress: string): Promise<{ res: Response; body: string; port: number; scraped: () => number }> {
    const s = await startSluice({
      windows: 'always',
      allowlist: ['ghcr.io/team/app'],
      upstreams: { 'ghcr.io': { url: reg.url, redirectHosts: [host] } },
      extra: { metrics: { listen: '127.0.0.1:0' } },
    });
    sluices.push(s);
    const listener = s.app.metricsListener;
    if (!listener) throw new Error('no metrics listener');
    let scraped = 0;
    listener.addHook('onRequest', async () => void scraped++);
    await listener.listen({ host: bindAddress, port: 0 });
    const port = (listener.server.address() as AddressInfo).port;
    reg.redirectBlob = () => `http://${host}:${port}/metrics`;
    const res = await fetch(`${s.url}/v2/team/app/blobs/${layer}?ns=ghcr.io`);
    return { res, body: await res.text(), port, scraped: () => scraped };
  }

  it('a blob redirected to sluice’s own metrics listener is refused: no byte of /metrics reaches the node', async () => {
    const reg = await mini();
    const image = reg.addImage('team/app', 'v1', [seededBytes(1000, 'metrics')]);
    const layer = image.layers[0]?.digest ?? '';
    // Loopback blob hosts are named, as a site with its blob storage on this machine would; the listener is not.
    const { res, body, port, scraped } = await redirectToMetrics(reg, layer, '127.0.0.1', '127.0.0.1');
    expect(res.status).toBe(403);
    expect(body).toContain(`127.0.0.1:${port}, a listener of this sluice`);
    expect(body).not.toContain('# HELP');
    expect(scraped()).toBe(0);
  });

  it('a blob redirected to sluice’s own listener by a host name that resolves to this machine is refused too', async () => {
    // This machine's own name resolves to one of its addresses (/etc/hosts): a listener there is sluice's.
    const name = hostname();
    const addresses = (await lookup(name, { all: true })).map((a) => a.address);
    expect(addresses.length, `${name} does not resolve`).toBeGreaterThan(0);
    const reg = await mini();
    const image = reg.addImage('team/app', 'v1', [seededBytes(1000, 'metrics by name')]);
    const layer = image.layers[0]?.digest ?? '';
    // The machine's name is named as a blob host, as a site with its blob storage on this machine would; the listener is not.
    const { res, body, scraped } = await redirectToMetrics(reg, layer, name, addresses[0] ?? '127.0.0.1');
    expect(res.status, body).toBeGreaterThanOrEqual(400);
    expect(body).toContain('a listener of this sluice');
    expect(body).not.toContain('# HELP');
    expect(scraped()).toBe(0);
  });
});
