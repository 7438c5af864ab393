// The content-addressed store on a temp folder: ingest is temp → hash → verify → fsync → rename, a failed
// ingest commits nothing and leaves no temp file, leftovers go at open, big manifests are refused,
// and tags, manifest links and referrers per (host, repository).
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { RegistryError } from '../../src/oci/errors.js';
import { MAX_MANIFEST_BYTES, Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { blobFile, spoolDir, spoolFile } from '../helpers/fs-store.js';
import { MediaType, sha256 } from '../kit/oci.js';

let dir: string;
let store: Store;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-store-'));
  store = await openStore({ storage: join(dir, 'data') });
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const tmpFiles = (): Promise<string[]> => readdir(spoolDir(store));

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof RegistryError) return e.kind;
    throw e;
  }
  return 'resolved';
}

async function* chunks(...parts: Array<Buffer | Error>): AsyncGenerator<Uint8Array> {
  for (const p of parts) {
    if (p instanceof Error) throw p;
    yield p;
  }
}

describe('ingest', () => {
  test('bytes sit in a temp file under tmp/ until a verified commit renames them into place', async () => {
    const body = Buffer.from('hello layer');
    const w = await store.beginIngest({ digest: sha256(body), sizeBytes: body.length });
    await w.write(body.subarray(0, 5));
    expect(spoolFile(w).startsWith(spoolDir(store))).toBe(true);
    expect(existsSync(spoolFile(w))).toBe(true);
    expect(existsSync(blobFile(store, sha256(body)))).toBe(false);
    expect(await store.stat(sha256(body))).toBeUndefined();
    await w.write(body.subarray(5));
    expect(w.bytesWritten).toBe(body.length);
    expect(await w.commit()).toEqual({ digest: sha256(body), sizeBytes: body.length });
    expect(existsSync(spoolFile(w))).toBe(false);
    expect(await readFile(blobFile(store, sha256(body)))).toEqual(body);
    expect(blobFile(store, sha256(body))).toBe(join(store.root, 'blobs', 'sha256', sha256(body).slice(7, 9), sha256(body).slice(7)));
    expect(await store.stat(sha256(body))).toEqual({ digest: sha256(body), sizeBytes: body.length });
    expect(await tmpFiles()).toEqual([]);
  });

  test('without an expected digest the computed one is used', async () => {
    const body = Buffer.from('{"a":1}');
    expect(await store.putBlob(body)).toEqual({ digest: sha256(body), sizeBytes: body.length });
  });

  const bad: Array<[string, () => Promise<unknown>, string]> = [
    ['digest mismatch', () => store.putBlob(Buffer.from('abc'), { digest: sha256('abd'), sizeBytes: 3 }), 'DIGEST_INVALID'],
    ['content shorter than its size', () => store.putBlob(Buffer.from('abc'), { digest: sha256('abc'), sizeBytes: 4 }), 'SIZE_INVALID'],
    ['content longer than its size', () => store.putBlob(Buffer.from('abcd'), { digest: sha256('abcd'), sizeBytes: 3 }), 'SIZE_INVALID'],
    ['content over maxBytes', () => store.putBlob(Buffer.alloc(10), { maxBytes: 9 }), 'SIZE_INVALID'],
    ['size right, digest wrong', () => store.ingest(chunks(Buffer.from('ab'), Buffer.from('c')), { digest: sha256('xyz'), sizeBytes: 3 }), 'DIGEST_INVALID'],
    ['source fails midway', () => store.ingest(chunks(Buffer.from('ab'), new RegistryError('UPSTREAM_FAILED', 'reset')), { digest: sha256('abc'), sizeBytes: 3 }), 'UPSTREAM_FAILED'],
    ['invalid expected digest', () => store.putBlob(Buffer.from('a'), { digest: 'sha256:totallywrong' }), 'DIGEST_INVALID'],
  ];
  test.each(bad)('%s: nothing committed, no temp file left', async (_label, attempt, kind) => {
    expect(await kindOf(attempt())).toBe(kind);
    expect(await tmpFiles()).toEqual([]);
    for await (const d of store.allBlobs()) throw new Error(`committed ${d}`);
    for (const body of ['abc', 'abd', 'abcd', 'xyz']) expect(await store.stat(sha256(body))).toBeUndefined();
  });

  test('abort discards the temp file and a later commit is refused', async () => {
    const w = await store.beginIngest({ digest: sha256('abc'), sizeBytes: 3 });
    await w.write(Buffer.from('abc'));
    await w.abort();
    expect(existsSync(spoolFile(w))).toBe(false);
    await expect(w.commit()).rejects.toThrow(/already finished/);
    expect(await store.stat(sha256('abc'))).toBeUndefined();
  });

  test('a blob already committed is replaced atomically by an identical ingest', async () => {
    await store.putBlob(Buffer.from('same'));
    await store.putBlob(Buffer.from('same'), { digest: sha256('same'), sizeBytes: 4 });
    const all: string[] = [];
    for await (const d of store.allBlobs()) all.push(d);
    expect(all).toEqual([sha256('same')]);
  });

  test('openBlob streams a whole blob or an inclusive range', async () => {
    const body = Buffer.from('0123456789');
    await store.putBlob(body);
    const read = async (range?: { start: number; end: number }): Promise<string> => {
      const parts: Buffer[] = [];
      const stream = await store.openBlob(sha256(body), range ?? { start: 0, end: body.length - 1 });
      if (!stream) throw new Error('blob missing');
      for await (const c of stream) parts.push(c as Buffer);
      return Buffer.concat(parts).toString();
    };
    expect(await read()).toBe('0123456789');
    expect(await read({ start: 2, end: 4 })).toBe('234');
    expect(await read({ start: 9, end: 9 })).toBe('9');
  });

  test('openBlob of a blob removed behind the store\'s back is a miss, and forgets the memoised size', async () => {
    const body = Buffer.from('gone soon');
    await store.putBlob(body);
    expect(await store.stat(sha256(body))).toBeDefined();
    await rm(blobFile(store, sha256(body)));
    expect(await store.openBlob(sha256(body), { start: 0, end: 0 })).toBeUndefined();
    expect(await store.stat(sha256(body))).toBeUndefined();
  });
});

describe('open', () => {
  test('temp leftovers of dead processes are removed at open; a live process keeps its own', async () => {
    await store.putBlob(Buffer.from('kept'));
    const w = await store.beginIngest({ sizeBytes: 100 });
    await w.write(Buffer.alloc(10));
    // A process that died mid-ingest (pid 2^22+1 is above Linux's pid_max, so it cannot be alive) and a stray file.
    const dead = join(store.root, 'tmp', '4194305-deadbeef');
    await mkdir(dead, { recursive: true });
    await writeFile(join(dead, 'partial'), 'x');
    await writeFile(join(store.root, 'tmp', 'stray'), 'y');
    const reopened = await openStore({ storage: store.root });
    expect(existsSync(dead)).toBe(false);
    expect(existsSync(join(store.root, 'tmp', 'stray'))).toBe(false);
    // This process is alive: its in-flight ingest is untouched by another open of the same store.
    expect(existsSync(spoolFile(w))).toBe(true);
    expect(await readdir(spoolDir(reopened))).toEqual([]);
    expect(await reopened.stat(sha256('kept'))).toEqual({ digest: sha256('kept'), sizeBytes: 4 });
    await w.abort();
  });
});

describe('manifests', () => {
  test('putManifest keeps the exact bytes and the media type across a reopen', async () => {
    const body = Buffer.from(`{ "schemaVersion": 2,\n  "mediaType": "${MediaType.ociManifest}", "layers": [] }`);
    const m = await store.putManifest(body, MediaType.ociManifest);
    expect(m.digest).toBe(sha256(body));
    const again = await openStore({ storage: store.root });
    const got = await again.getManifest(m.digest);
    expect(got?.body.equals(body)).toBe(true);
    expect(got?.mediaType).toBe(MediaType.ociManifest);
    expect(await again.hasManifest(sha256('nope'))).toBe(false);
  });

  test('a plain blob is not a manifest', async () => {
    await store.putBlob(Buffer.from('{}'));
    expect(await store.getManifest(sha256('{}'))).toBeUndefined();
  });

  test('putManifest with a wrong expected digest commits nothing', async () => {
    expect(await kindOf(store.putManifest(Buffer.from('{}'), MediaType.ociManifest, sha256('other')))).toBe('DIGEST_INVALID');
    expect(await store.getManifest(sha256('{}'))).toBeUndefined();
    expect(await tmpFiles()).toEqual([]);
  });

  test('manifests over 4 MiB are refused; exactly 4 MiB is accepted', async () => {
    const over = Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20);
    expect(await kindOf(store.putManifest(over, MediaType.ociManifest))).toBe('MANIFEST_INVALID');
    expect(await store.stat(sha256(over))).toBeUndefined();
    expect(await tmpFiles()).toEqual([]);
    const max = Buffer.alloc(MAX_MANIFEST_BYTES, 0x20);
    expect((await store.putManifest(max, MediaType.ociManifest)).digest).toBe(sha256(max));
  });

  test('quarantine moves a blob out of the served tree', async () => {
    await store.putManifest(Buffer.from('{}'), MediaType.ociManifest);
    const dest = await store.quarantine(sha256('{}'));
    expect(existsSync(dest)).toBe(true);
    expect(await store.stat(sha256('{}'))).toBeUndefined();
    expect(await store.getManifest(sha256('{}'))).toBeUndefined();
  });
});

describe('tags, links and referrers', () => {
  const D1 = sha256('one');
  const D2 = sha256('two');

  test('tags are per (host, repository), sorted, and survive a reopen', async () => {
    const g0 = store.generation;
    await store.setTag('ghcr.io', 'siderolabs/kubelet', 'v2', D2);
    await store.setTag('ghcr.io', 'siderolabs/kubelet', 'v1', D1);
    await store.setTag('docker.io', 'siderolabs/kubelet', 'v9', D1);
    expect(store.generation).toBeGreaterThan(g0);
    expect(await store.listTags('ghcr.io', 'siderolabs/kubelet')).toEqual(['v1', 'v2']);
    expect(await store.listTags('docker.io', 'siderolabs/kubelet')).toEqual(['v9']);
    expect(await store.listTags('ghcr.io', 'siderolabs')).toEqual([]);
    expect(await store.listTags('ghcr.io', 'nothing/here')).toEqual([]);
    const again = await openStore({ storage: store.root });
    expect(await again.getTag('ghcr.io', 'siderolabs/kubelet', 'v1')).toBe(D1);
    expect(await again.getTag('ghcr.io', 'siderolabs/kubelet', 'v3')).toBeUndefined();
    expect(await again.getTag('quay.io', 'x', 'v1')).toBeUndefined();
    await store.setTag('ghcr.io', 'siderolabs/kubelet', 'v1', D2);
    expect(await store.getTag('ghcr.io', 'siderolabs/kubelet', 'v1')).toBe(D2);
    expect(await store.repositories()).toEqual(
      expect.arrayContaining([{ host: 'ghcr.io', name: 'siderolabs/kubelet' }, { host: 'docker.io', name: 'siderolabs/kubelet' }]),
    );
  });

  test('a repository nested under another keeps its own tags', async () => {
    await store.setTag('ghcr.io', 'a', 't', D1);
    await store.setTag('ghcr.io', 'a/b', 't', D2);
    expect(await store.getTag('ghcr.io', 'a', 't')).toBe(D1);
    expect(await store.getTag('ghcr.io', 'a/b', 't')).toBe(D2);
    expect((await store.repositories()).map((r) => r.name).sort()).toEqual(['a', 'a/b']);
  });

  test('linkManifest records membership and indexes manifests with a subject as referrers', async () => {
    const subject = await store.putManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, layers: [] })), MediaType.ociManifest);
    const sig = await store.putManifest(
      Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 },
        layers: [],
        subject: { mediaType: MediaType.ociManifest, digest: subject.digest, size: subject.body.length },
        annotations: { 'org.example': 'yes' },
      })),
      MediaType.ociManifest,
    );
    const sbom = await store.putManifest(
      Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: 'application/spdx+json', digest: sha256('{}'), size: 2 },
        layers: [],
        subject: { mediaType: MediaType.ociManifest, digest: subject.digest, size: subject.body.length },
      })),
      MediaType.ociManifest,
    );
    const g0 = store.generation;
    for (const m of [subject, sig, sbom]) await store.linkManifest('ghcr.io', 'a/b', m);
    expect(store.generation).toBeGreaterThan(g0);
    expect((await store.linkedManifests('ghcr.io', 'a/b')).sort()).toEqual([subject.digest, sig.digest, sbom.digest].sort());
    expect(await store.linkedManifests('ghcr.io', 'a')).toEqual([]);
    const refs = await store.referrers('ghcr.io', 'a/b', subject.digest);
    expect(refs).toEqual(
      [
        { mediaType: MediaType.ociManifest, digest: sig.digest, size: sig.body.length, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json', annotations: { 'org.example': 'yes' } },
        { mediaType: MediaType.ociManifest, digest: sbom.digest, size: sbom.body.length, artifactType: 'application/spdx+json' },
      ].sort((a, b) => a.digest.localeCompare(b.digest)),
    );
    // Referrers are per repository.
    expect(await store.referrers('ghcr.io', 'other', subject.digest)).toEqual([]);
    expect(await store.referrers('ghcr.io', 'a/b', sig.digest)).toEqual([]);
  });
});
