// A site signature counts only when it verifies with the site key: signature artifacts that merely carry sluice's
// annotations (an upstream's, or left by tampering) are not "signed" in readiness, and signing replaces them.
import { sign } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { SiteSigner } from '../../src/jobs/site-signer.js';
import { checkSite } from '../../src/jobs/site-check.js';
import { BUNDLE_V03, COSIGN_SIGNATURE, newKey, payloadFor, SIMPLE_SIGNING, verifyBundle } from '../helpers/cosign.js';
import { MediaType, sha256 } from '../kit/oci.js';

const HOST = 'ghcr.io';
const NAME = 'acme/app';
const KEY = 'dev.sluice.site-signature.key';

describe('site signatures are checked, not taken on their annotations', () => {
  let dir: string;
  let store: Store;
  let signer: SiteSigner;
  const site = newKey();
  const forger = newKey();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-sitecheck-'));
    store = await openStore({ storage: join(dir, 'data') });
    await writeFile(join(dir, 'site.key'), site.privatePem, { mode: 0o600 });
    signer = await SiteSigner.open(store, { key: join(dir, 'site.key'), policy: 'allowlist', rules: [] });
  });
  afterAll(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function put(body: Buffer): Promise<string> {
    const m = await store.putManifest(body, MediaType.ociManifest);
    await store.linkManifest(HOST, NAME, m);
    return m.digest;
  }

  it('forged artifacts with the site key id do not count, and signing replaces them with sound ones', async () => {
    const config = Buffer.from('{"a":1}');
    await store.putBlob(config);
    const image = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: sha256(config), size: config.length }, layers: [] }));
    const digest = await put(image);
    const hex = digest.slice(7);
    // A referrer, a .sig and an index that claim to be the site's (its key id is public), signed by someone else.
    const bundle = Buffer.from(JSON.stringify({
      mediaType: BUNDLE_V03, verificationMaterial: { publicKey: { hint: site.id }, tlogEntries: [] },
      messageSignature: { messageDigest: { algorithm: 'SHA2_256', digest: Buffer.from(hex, 'hex').toString('base64') }, signature: sign('sha256', image, forger.privateKey).toString('base64') },
    }));
    const empty = Buffer.from('{}');
    await store.putBlob(empty);
    await store.putBlob(bundle);
    const referrer = await put(Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.ociManifest, artifactType: BUNDLE_V03,
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(empty), size: 2 },
      layers: [{ mediaType: BUNDLE_V03, digest: sha256(bundle), size: bundle.length }],
      subject: { mediaType: MediaType.ociManifest, digest, size: image.length }, annotations: { [KEY]: site.id },
    })));
    const payload = payloadFor(`${HOST}/${NAME}`, digest);
    await store.putBlob(payload);
    const sig = await put(Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: sha256(empty), size: 2 },
      layers: [{ mediaType: SIMPLE_SIGNING, digest: sha256(payload), size: payload.length, annotations: { [COSIGN_SIGNATURE]: sign('sha256', payload, forger.privateKey).toString('base64'), [KEY]: site.id } }],
      annotations: { [KEY]: site.id },
    })));
    await store.setTag(HOST, NAME, `sha256-${hex}.sig`, sig);
    const index = await put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [{ mediaType: MediaType.ociManifest, digest: referrer, size: 1 }], annotations: { [KEY]: site.id } })));
    await store.setTag(HOST, NAME, `sha256-${hex}`, index);

    const m = await store.getManifest(digest);
    if (!m) throw new Error('stored above');
    expect(await checkSite(store, signer.key, HOST, NAME, m)).toEqual({ legacy: false, index: false });
    expect((await signer.status(HOST, NAME, digest))[0]).toMatchObject({ signed: false });

    expect((await signer.signImage(HOST, NAME, digest)).manifests).toMatchObject([{ state: 'signed' }]);
    const after = await checkSite(store, signer.key, HOST, NAME, m);
    expect(after).toMatchObject({ legacy: true, index: true });
    expect(after.referrer?.digest).not.toBe(referrer);
    const [layer] = JSON.parse((await store.getManifest(after.referrer?.digest ?? ''))?.body.toString() ?? '{}').layers as Array<{ digest: string }>;
    const sound = await store.readBlob(layer?.digest ?? '');
    expect(() => verifyBundle(sound ?? Buffer.alloc(0), image, digest, site)).not.toThrow();
    // The forged layer is gone from the .sig; the index lists the sound referrer only.
    const newSig = JSON.parse((await store.getManifest((await store.getTag(HOST, NAME, `sha256-${hex}.sig`)) ?? ''))?.body.toString() ?? '{}') as { layers: unknown[] };
    expect(newSig.layers).toHaveLength(1);
    const newIndex = JSON.parse((await store.getManifest((await store.getTag(HOST, NAME, `sha256-${hex}`)) ?? ''))?.body.toString() ?? '{}') as { manifests: Array<{ digest: string }> };
    expect(newIndex.manifests.map((d) => d.digest)).toEqual([after.referrer?.digest]);
    expect((await signer.signImage(HOST, NAME, digest)).manifests).toMatchObject([{ state: 'kept' }]);
  });
});
