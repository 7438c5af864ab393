// Garbage collection over the in-memory store (store/memory): a removed rule frees exactly its image's unshared
// blobs and its tag, a dry run removes nothing, `keep` holds a moved tag's previous image, gcGrace spares fresh
// blobs. (test/component/gc.test.ts runs it in the app, with pulls during the sweep.)
import { describe, expect, test } from 'vitest';
import { collectGarbage } from '../../src/jobs/gc.js';
import { MediaType, type Descriptor } from '../../src/oci/manifest.js';
import { Allowlist } from '../../src/policy/allowlist.js';
import { openMemoryStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';

const HOUR = 3_600_000;
const CONFIG = 'application/vnd.oci.image.config.v1+json';
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const later = (): number => Date.now() + 2 * HOUR;

/** An image as sync stores it: its blobs, its manifest (linked to the repository) and its tag. */
async function image(store: Store, name: string, tag: string, layers: string[]): Promise<string[]> {
  const blob = async (text: string, mediaType: string): Promise<Descriptor> => {
    const { digest } = await store.putBlob(Buffer.from(text));
    return { mediaType, digest, size: Buffer.byteLength(text) };
  };
  const config = await blob(`config of ${name}:${tag} over ${layers.join(", ")}`, CONFIG);
  const ls = await Promise.all(layers.map((l) => blob(l, LAYER)));
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config, layers: ls }));
  const m = await store.putManifest(body, MediaType.ociManifest);
  await store.linkManifest('ghcr.io', name, m);
  await store.setTag('ghcr.io', name, tag, m.digest);
  return [m.digest, config.digest, ...ls.map((l) => l.digest)];
}

async function present(store: Store, digests: string[]): Promise<boolean[]> {
  return Promise.all(digests.map(async (d) => (await store.blobs.stat(d)) !== undefined));
}

describe('collectGarbage over the in-memory store', () => {
  test('a removed rule frees exactly its image\'s unshared blobs and its tag; a dry run removes nothing', async () => {
    const store = openMemoryStore();
    const rules = await Allowlist.open(store.meta.state.allowlist, []);
    await rules.add(['ghcr.io/team/a:1', 'ghcr.io/team/b:1'], { by: 'test' });
    const a = await image(store, 'team/a', '1', ['shared layer', 'a only']);
    const b = await image(store, 'team/b', '1', ['shared layer', 'b only']);
    const shared = a[2] ?? '';
    expect((await collectGarbage(store, rules, { keep: 2, graceMs: HOUR, now: later })).swept).toEqual([]);

    await rules.remove(['ghcr.io/team/b:1']);
    const unshared = b.filter((d) => d !== shared).sort();
    const dry = await collectGarbage(store, rules, { keep: 2, graceMs: HOUR, now: later, dryRun: true });
    expect(dry.swept.map((x) => x.digest).sort()).toEqual(unshared);
    expect(await present(store, b)).toEqual(b.map(() => true));

    const r = await collectGarbage(store, rules, { keep: 2, graceMs: HOUR, now: later });
    expect(r.swept.map((x) => x.digest).sort()).toEqual(unshared);
    expect(r.tagsRemoved).toEqual(['ghcr.io/team/b:1']);
    expect(await present(store, b)).toEqual(b.map((d) => d === shared));
    expect(await present(store, a)).toEqual(a.map(() => true));
    expect(await store.getTag('ghcr.io', 'team/b', '1')).toBeUndefined();
  });

  test('keep holds a moved tag\'s previous image; keep 1 lets it go', async () => {
    const store = openMemoryStore();
    const rules = await Allowlist.open(store.meta.state.allowlist, ['ghcr.io/team/app:stable']);
    const old = await image(store, 'team/app', 'stable', ['old layer']);
    const current = await image(store, 'team/app', 'stable', ['new layer']);
    expect((await collectGarbage(store, rules, { keep: 2, graceMs: HOUR, now: later })).swept).toEqual([]);
    const r = await collectGarbage(store, rules, { keep: 1, graceMs: HOUR, now: later });
    expect(r.swept.map((x) => x.digest).sort()).toEqual([...old].sort());
    expect(await present(store, current)).toEqual(current.map(() => true));
  });

  test('gcGrace spares what was committed within it', async () => {
    const store = openMemoryStore();
    const rules = await Allowlist.open(store.meta.state.allowlist);
    const orphan = await image(store, 'team/gone', '1', ['orphan layer']);
    const r = await collectGarbage(store, rules, { keep: 2, graceMs: HOUR });
    expect(r.swept).toEqual([]);
    expect(r.spared).toBe(orphan.length);
    expect(await present(store, orphan)).toEqual(orphan.map(() => true));
  });
});
