// The mirror as the one door to content, over the in-memory store (no descriptors, so range streams): a blob's
// body is sized before anything is opened, opened as a buffer or a range stream, and one gone since its stat is a
// miss; tags/list and every closed-window miss are answered by the mirror with the next window.
import { describe, expect, test } from 'vitest';
import type { Readable } from 'node:stream';
import { Mirror } from '../../src/mirror/mirror.js';
import { AllowlistPolicy } from '../../src/mirror/decision.js';
import { UpstreamAccess } from '../../src/mirror/upstream-access.js';
import { RegistryError } from '../../src/oci/errors.js';
import { MediaType } from '../../src/oci/manifest.js';
import { Allowlist } from '../../src/policy/allowlist.js';
import { openMemoryStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import type { Upstream } from '../../src/upstream/client.js';
import { WindowState } from '../../src/window/state.js';

const HOST = 'ghcr.io';
const NAME = 'team/app';

/** A mirror on a fresh in-memory store, outside any window, with no upstream configured. */
async function mirrorOn(rules: (store: Store) => Promise<string[]>): Promise<{ store: Store; mirror: Mirror }> {
  const store = openMemoryStore();
  const allowlist = await Allowlist.open(store.meta.state.allowlist, await rules(store));
  const upstreams = new Map<string, Upstream>();
  const log = (): void => undefined;
  const access = new UpstreamAccess({ store, window: new WindowState('never'), upstreams, tagTtlMs: 60_000, log });
  const policy = new AllowlistPolicy(allowlist, store, access);
  return { store, mirror: new Mirror({ store, policy, access, ingestTimeoutMs: 60_000, log }) };
}

/** A blob stored and linked to the repository, pinned by digest. */
async function pinnedBlob(store: Store, bytes: Buffer): Promise<string> {
  const { digest } = await store.putBlob(bytes);
  await store.linkBlob(HOST, NAME, digest);
  return digest;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

const request = (digest: string, fromOffset = false): Parameters<Mirror['blob']>[0] => ({ host: HOST, name: NAME, digest, fromOffset });

describe('Mirror.blob: the body a route sends', () => {
  const small = Buffer.from('a config of a few bytes');
  const large = Buffer.alloc(200 * 1024, 7);
  large.write('the first bytes', 0);

  test('a small stored blob: sized, not fetched, opened whole as one buffer', async () => {
    let digest = '';
    const { mirror } = await mirrorOn(async (store) => [`${HOST}/${NAME}@${(digest = await pinnedBlob(store, small))}`]);
    const body = await mirror.blob(request(digest));
    expect({ sizeBytes: body.sizeBytes, ranges: body.ranges, fetched: body.fetched }).toEqual({ sizeBytes: small.length, ranges: true, fetched: false });
    const bytes = await body.open(undefined);
    expect(bytes.kind === 'buffer' && bytes.bytes.equals(small)).toBe(true);
  });

  test('a large blob on a backend without descriptors: the range asked for, as a stream of exactly those bytes', async () => {
    let digest = '';
    const { mirror } = await mirrorOn(async (store) => [`${HOST}/${NAME}@${(digest = await pinnedBlob(store, large))}`]);
    const body = await mirror.blob(request(digest, true));
    const bytes = await body.open({ start: 4, end: 13 });
    if (bytes.kind !== 'stream') throw new Error(`expected a stream, got ${bytes.kind}`);
    expect(bytes.sizeBytes).toBe(10);
    expect((await readAll(bytes.stream)).toString()).toBe('first byte');
  });

  test('a blob gone between stat and open is a miss with the next window, never bytes', async () => {
    let digest = '';
    const { store, mirror } = await mirrorOn(async (s) => [`${HOST}/${NAME}@${(digest = await pinnedBlob(s, large))}`]);
    const body = await mirror.blob(request(digest));
    await store.blobs.delete(digest);
    const err = await body.open(undefined).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).kind).toBe('BLOB_UNKNOWN');
    expect((err as RegistryError).detail).toHaveProperty('nextWindow', null);
  });
});

describe('Mirror.tags and the closed-window miss', () => {
  test('outside a window tags/list is the stored tags the allowlist allows', async () => {
    const { mirror } = await mirrorOn(async (store) => {
      const config = await store.putBlob(Buffer.from('{}'));
      const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: 2 }, layers: [] }));
      const m = await store.putManifest(body, MediaType.ociManifest);
      for (const tag of ['1.0', '1.1', 'dev']) await store.setTag(HOST, NAME, tag, m.digest);
      return [`${HOST}/${NAME}:1.*`];
    });
    const warnings: string[] = [];
    expect((await mirror.tags(HOST, NAME, undefined, (msg) => warnings.push(msg))).sort()).toEqual(['1.0', '1.1']);
    expect(warnings).toEqual([]);
  });

  test('a blob neither stored nor reachable upstream now: the one closed-window miss, not a download', async () => {
    const missing = `sha256:${'e'.repeat(64)}`;
    const { mirror } = await mirrorOn(async () => [`${HOST}/${NAME}@${missing}`]);
    const err = await mirror.blob(request(missing)).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).message).toBe('blob not cached; upstream access closed (no sync window is scheduled)');
  });
});
