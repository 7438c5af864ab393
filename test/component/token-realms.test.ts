// Where an upstream's credentials may go and what a refused token costs, against the shared fake upstream: a token
// realm must be the upstream's own origin or a configured one, a refusal locks neither other repositories nor the
// future, and a redirect target's 401 is never taken for the upstream's own challenge.
import { describe, expect, it } from 'vitest';
import { RegistryError } from '../../src/oci/errors.js';
import { upstreamFixtures } from '../helpers/upstream-fixtures.js';
import { MediaType, seededBytes } from '../kit/oci.js';

const ACCEPT = [MediaType.ociManifest, MediaType.ociIndex];
const CREDS = { username: 'sluice', password: 'secret' };
const { mini, client } = upstreamFixtures();

async function failure(p: Promise<unknown>): Promise<RegistryError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(RegistryError);
  return e as RegistryError;
}

describe('token realms: the upstream’s own origin or a configured one', () => {
  it('a realm on another port of the upstream’s host is refused, and it is sent nothing (no credentials)', async () => {
    const reg = await mini();
    const trap = await mini();
    reg.addImage('team/app', 'v1', [seededBytes(100, 'a')]);
    trap.serveTokens('/token', () => true);
    reg.bearerRealm = () => `${trap.url}/token`;
    const e = await failure(client(reg, { auth: CREDS }).getManifest('team/app', 'v1', ACCEPT));
    expect(e.kind).toBe('UPSTREAM_FAILED');
    expect(e.message).toContain(`refusing its token realm ${trap.url}`);
    expect(e.message).toContain('upstreams.reg.test.tokenRealms');
    expect(trap.requests).toEqual([]);
  });

  it('a realm listed in tokenRealms is used, with the credentials', async () => {
    const reg = await mini();
    const tokens = await mini();
    const image = reg.addImage('team/app', 'v1', [seededBytes(100, 'a')]);
    tokens.serveTokens('/token', (scope) => scope === 'repository:team/app:pull');
    reg.bearerRealm = () => `${tokens.url}/token`;
    const got = await client(reg, { auth: CREDS, tokenRealms: [tokens.url] }).getManifest('team/app', 'v1', ACCEPT);
    expect(got.digest).toBe(image.digest);
    expect(tokens.requests).toHaveLength(1);
    expect(tokens.requests[0]?.authorization).toBe(`Basic ${Buffer.from('sluice:secret').toString('base64')}`);
  });
});

describe('a refused token locks nothing', () => {
  it('a realm that refused one repository’s token does not refuse the upstream’s other repositories', async () => {
    const reg = await mini();
    reg.addImage('locked/app', 'v1', [seededBytes(100, 'l')]);
    const open = reg.addImage('open/app', 'v1', [seededBytes(100, 'o')]);
    reg.serveTokens('/token-locked', () => false);
    reg.serveTokens('/token', () => true);
    reg.bearerRealm = (name) => `${reg.url}${name.startsWith('locked/') ? '/token-locked' : '/token'}`;
    const u = client(reg);
    expect((await failure(u.getManifest('locked/app', 'v1', ACCEPT))).kind).toBe('DENIED');
    const got = await u.getManifest('open/app', 'v1', ACCEPT);
    expect(got.digest).toBe(open.digest);
    expect(reg.count('/token-locked')).toBe(1);
  });

  it('a challenge whose token was refused is asked of the upstream again, not kept until restart', async () => {
    const reg = await mini();
    const image = reg.addImage('team/app', 'v1', [seededBytes(100, 'a')]);
    reg.serveTokens('/token-old', () => false);
    reg.serveTokens('/token-new', () => true);
    reg.bearerRealm = () => `${reg.url}/token-old`;
    const u = client(reg);
    expect((await failure(u.getManifest('team/app', 'v1', ACCEPT))).kind).toBe('DENIED');
    // The upstream fixed its token service: the next request learns the new challenge.
    reg.bearerRealm = () => `${reg.url}/token-new`;
    expect((await u.getManifest('team/app', 'v1', ACCEPT)).digest).toBe(image.digest);
  });

  it('a 401 from a redirect target is not the upstream’s challenge: the repository’s other requests still work', async () => {
    const reg = await mini();
    const storage = await mini();
    const image = reg.addImage('team/app', 'v1', [seededBytes(100, 'a')]);
    const layer = image.layers[0]?.digest ?? '';
    reg.serveTokens('/token', () => true);
    reg.serveTokens('/token-refused', () => false);
    reg.bearerRealm = () => `${reg.url}/token`;
    reg.redirectBlob = () => `${storage.url}/bucket/blob`;
    storage.routes.set('/bucket/blob', (_req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${reg.url}/token-refused",service="storage"` }).end();
    });
    const u = client(reg, { redirectHosts: [new URL(storage.url).host] });
    const e = await failure(u.getBlob('team/app', layer));
    expect(e.kind).toBe('UPSTREAM_FAILED');
    expect(e.message).toContain(new URL(storage.url).host);
    expect((await u.getManifest('team/app', 'v1', ACCEPT)).digest).toBe(image.digest);
    expect(reg.count('/token-refused')).toBe(0);
  });
});
