// The MetadataStore conformance suite: tags, links per repository, referrers by subject, the generation, and the
// state documents (allowlist, denied log, manual window) through the policy and window code that uses them.
// Each backend's own test file calls it (store-fs, store-pg, store-memory).
import { afterEach, describe, expect, it } from 'vitest';
import { Allowlist } from '../../../src/policy/allowlist.js';
import { DeniedLog } from '../../../src/policy/denied.js';
import type { LinkableManifest, MetadataStore } from '../../../src/store/ports.js';
import type { ManualWindow } from '../../../src/window/state.js';
import { MediaType, sha256 } from '../../kit/oci.js';

export interface OpenedMetadata {
  meta: MetadataStore;
  /** A second, independent instance over the same storage (another process or replica). */
  another(): Promise<MetadataStore>;
  close(): Promise<void>;
}

function manifest(doc: Record<string, unknown>): LinkableManifest {
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, ...doc }));
  return { digest: sha256(body), mediaType: MediaType.ociManifest, body };
}

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

/**
 * What every MetadataStore must do (store/ports.ts), as a suite each backend's own test file calls with a
 * factory: a fresh, empty store per test, and `another` for a second process or replica over the same storage.
 */
export function metadataStoreConformance(name: string, open: () => Promise<OpenedMetadata>): void {
  describe(`MetadataStore conformance: ${name}`, () => {
    let opened: OpenedMetadata | undefined;
    const meta = async (): Promise<MetadataStore> => {
      opened = await open();
      return opened.meta;
    };
    const another = (): Promise<MetadataStore> => {
      if (!opened) throw new Error('open the store first');
      return opened.another();
    };
    afterEach(async () => {
      await opened?.close();
      opened = undefined;
    });

    it('sets, gets, lists and overwrites tags per repository', async () => {
      const m = await meta();
      expect(await m.getTag('ghcr.io', 'a/b', 'v1')).toBeUndefined();
      expect(await m.listTags('ghcr.io', 'a/b')).toEqual([]);
      await m.setTag('ghcr.io', 'a/b', 'v2', D2);
      await m.setTag('ghcr.io', 'a/b', 'v1', D1);
      expect(await m.getTag('ghcr.io', 'a/b', 'v1')).toBe(D1);
      expect(await m.listTags('ghcr.io', 'a/b')).toEqual(['v1', 'v2']);
      await m.setTag('ghcr.io', 'a/b', 'v1', D2);
      expect(await m.getTag('ghcr.io', 'a/b', 'v1')).toBe(D2);
      expect(await (await another()).getTag('ghcr.io', 'a/b', 'v1')).toBe(D2);
      expect(await m.getTag('ghcr.io', 'a/c', 'v1')).toBeUndefined();
      expect(await m.getTag('docker.io', 'a/b', 'v1')).toBeUndefined();
    });

    it('links manifests and blobs per repository, with no leakage to another', async () => {
      const m = await meta();
      const image = manifest({ config: { mediaType: MediaType.ociConfig, digest: D1, size: 2 }, layers: [] });
      await m.linkManifest('ghcr.io', 'team/app', image);
      await m.linkBlob('ghcr.io', 'team/app', D1);
      expect(await m.isManifestLinked('ghcr.io', 'team/app', image.digest)).toBe(true);
      expect(await m.isBlobLinked('ghcr.io', 'team/app', D1)).toBe(true);
      expect(await m.isBlobLinked('ghcr.io', 'team/app', D2)).toBe(false);
      for (const [host, name] of [['ghcr.io', 'team/other'], ['ghcr.io', 'team'], ['docker.io', 'team/app']]) {
        expect(await m.isManifestLinked(host, name, image.digest)).toBe(false);
        expect(await m.isBlobLinked(host, name, D1)).toBe(false);
        expect(await m.linkedManifests(host, name)).toEqual([]);
      }
      const second = manifest({ layers: [], annotations: { n: '2' } });
      await m.linkManifest('ghcr.io', 'team/app', second);
      expect((await m.linkedManifests('ghcr.io', 'team/app')).sort()).toEqual([image.digest, second.digest].sort());
    });

    it('keeps a tag\'s history newest first as it moves (gc keep), and deletes a tag with its history', async () => {
      const m = await meta();
      expect(await m.tagHistory('ghcr.io', 'a/b', 'v1')).toEqual([]);
      await m.setTag('ghcr.io', 'a/b', 'v1', D1);
      await m.setTag('ghcr.io', 'a/b', 'v1', D1);
      expect(await m.tagHistory('ghcr.io', 'a/b', 'v1')).toEqual([D1]);
      await m.setTag('ghcr.io', 'a/b', 'v1', D2);
      await m.setTag('ghcr.io', 'a/b', 'v2', D1);
      expect(await m.tagHistory('ghcr.io', 'a/b', 'v1')).toEqual([D2, D1]);
      await m.setTag('ghcr.io', 'a/b', 'v1', D1);
      expect(await m.tagHistory('ghcr.io', 'a/b', 'v1')).toEqual([D1, D2]);
      expect(await (await another()).tagHistory('ghcr.io', 'a/b', 'v1')).toEqual([D1, D2]);
      const before = m.generation;
      expect(await m.deleteTag('ghcr.io', 'a/b', 'v1')).toBe(true);
      expect(m.generation).toBeGreaterThan(before);
      expect(await m.deleteTag('ghcr.io', 'a/b', 'v1')).toBe(false);
      expect(await m.getTag('ghcr.io', 'a/b', 'v1')).toBeUndefined();
      expect(await m.listTags('ghcr.io', 'a/b')).toEqual(['v2']);
      expect(await m.tagHistory('ghcr.io', 'a/b', 'v1')).toEqual([]);
      await m.setTag('ghcr.io', 'a/b', 'v1', D2);
      expect(await m.tagHistory('ghcr.io', 'a/b', 'v1')).toEqual([D2]);
    });

    it('unlinks manifests (their referrer entry too) and blobs, and lists linked blobs', async () => {
      const m = await meta();
      const subject = manifest({ layers: [] });
      const sig = manifest({ layers: [], subject: { mediaType: MediaType.ociManifest, digest: subject.digest, size: subject.body.length } });
      await m.linkManifest('ghcr.io', 'team/app', subject);
      await m.linkManifest('ghcr.io', 'team/app', sig);
      await m.linkBlob('ghcr.io', 'team/app', D1);
      await m.linkBlob('ghcr.io', 'team/app', D2);
      expect((await m.linkedBlobs('ghcr.io', 'team/app')).sort()).toEqual([D1, D2].sort());
      expect((await m.referrers('ghcr.io', 'team/app', subject.digest)).map((d) => d.digest)).toEqual([sig.digest]);
      await m.unlinkManifest('ghcr.io', 'team/app', sig);
      await m.unlinkBlob('ghcr.io', 'team/app', D1);
      expect(await m.isManifestLinked('ghcr.io', 'team/app', sig.digest)).toBe(false);
      expect(await m.referrers('ghcr.io', 'team/app', subject.digest)).toEqual([]);
      expect(await m.linkedManifests('ghcr.io', 'team/app')).toEqual([subject.digest]);
      expect(await m.linkedBlobs('ghcr.io', 'team/app')).toEqual([D2]);
      expect(await m.isBlobLinked('ghcr.io', 'team/app', D1)).toBe(false);
    });

    it('lists every repository holding a tag or a manifest', async () => {
      const m = await meta();
      await m.setTag('ghcr.io', 'a/b', 'v1', D1);
      await m.linkManifest('registry.k8s.io', 'pause', manifest({ layers: [] }));
      await m.linkBlob('docker.io', 'library/busybox', D1);
      const repos = (await m.repositories()).map((r) => `${r.host}/${r.name}`).sort();
      expect(repos).toEqual(['ghcr.io/a/b', 'registry.k8s.io/pause']);
      // gc asks for repositories holding only blob links too, to unlink what it sweeps from them.
      const all = (await m.repositories({ blobLinks: true })).map((r) => `${r.host}/${r.name}`).sort();
      expect(all).toEqual(['docker.io/library/busybox', 'ghcr.io/a/b', 'registry.k8s.io/pause']);
    });

    it('indexes referrers by subject, as descriptors sorted by digest', async () => {
      const m = await meta();
      const subject = manifest({ layers: [] });
      const sbom = manifest({ artifactType: 'application/spdx+json', subject: { mediaType: MediaType.ociManifest, digest: subject.digest, size: subject.body.length }, annotations: { a: 'b' } });
      const sig = manifest({ config: { mediaType: 'application/vnd.dev.cosign.artifact.sig.v1+json', digest: D1, size: 2 }, subject: { mediaType: MediaType.ociManifest, digest: subject.digest, size: subject.body.length } });
      for (const x of [subject, sbom, sig]) await m.linkManifest('ghcr.io', 'a/b', x);
      const got = await m.referrers('ghcr.io', 'a/b', subject.digest);
      expect(got.map((d) => d.digest)).toEqual([sbom.digest, sig.digest].sort());
      expect(got.find((d) => d.digest === sbom.digest)).toEqual({
        mediaType: MediaType.ociManifest, digest: sbom.digest, size: sbom.body.length, artifactType: 'application/spdx+json', annotations: { a: 'b' },
      });
      expect(got.find((d) => d.digest === sig.digest)?.artifactType).toBe('application/vnd.dev.cosign.artifact.sig.v1+json');
      expect(await m.referrers('ghcr.io', 'a/other', subject.digest)).toEqual([]);
      expect(await m.referrers('ghcr.io', 'a/b', sbom.digest)).toEqual([]);
    });

    it('bumps the generation on every tag or manifest-link change, and on invalidate', async () => {
      const m = await meta();
      let g = m.generation;
      const bumped = (): boolean => {
        const now = m.generation;
        const was = g;
        g = now;
        return now > was;
      };
      await m.setTag('ghcr.io', 'a/b', 'v1', D1);
      expect(bumped()).toBe(true);
      await m.linkManifest('ghcr.io', 'a/b', manifest({ layers: [] }));
      expect(bumped()).toBe(true);
      m.invalidate();
      expect(bumped()).toBe(true);
      await m.getTag('ghcr.io', 'a/b', 'v1');
      await m.listTags('ghcr.io', 'a/b');
      expect(bumped()).toBe(false);
    });

    it('sees a tag another instance changed once invalidated', async () => {
      const m = await meta();
      await m.setTag('ghcr.io', 'a/b', 'v1', D1);
      expect(await m.getTag('ghcr.io', 'a/b', 'v1')).toBe(D1);
      await (await another()).setTag('ghcr.io', 'a/b', 'v1', D2);
      m.invalidate();
      expect(await m.getTag('ghcr.io', 'a/b', 'v1')).toBe(D2);
    });

    it('round-trips the allowlist document, and concurrent editors on two instances lose no edit', async () => {
      const m = await meta();
      const first = await Allowlist.open(m.state.allowlist, ['ghcr.io/seed/x:1']);
      const other = await Allowlist.open((await another()).state.allowlist);
      await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? first : other).add([`ghcr.io/c/r${i}:v1`], { by: `w${i}`, note: 'n' })));
      const reopened = await Allowlist.open(m.state.allowlist);
      expect(reopened.list()).toHaveLength(41);
      expect(reopened.list()[0]).toMatchObject({ rule: 'ghcr.io/seed/x:1', addedBy: 'config' });
      await first.reload();
      expect(first.list()).toHaveLength(41);
      await other.remove(['ghcr.io/seed/x:1']);
      expect((await Allowlist.open(m.state.allowlist)).list()).toHaveLength(40);
    });

    it('round-trips the denied log document', async () => {
      const m = await meta();
      const log = await DeniedLog.open(m.state.denied);
      log.record({ host: 'ghcr.io', name: 'a/b', reference: 'v1', client: '10.0.0.1' });
      log.record({ host: 'ghcr.io', name: 'a/b', reference: 'v1' });
      await log.close();
      const again = await DeniedLog.open((await another()).state.denied);
      expect(again.list()).toEqual([expect.objectContaining({ host: 'ghcr.io', name: 'a/b', reference: 'v1', count: 2, client: '10.0.0.1' })]);
      expect(again.recoveredFrom).toBeUndefined();
    });

    it('keeps the denied log bounded in storage (1,000 references by default), whichever replica wrote what', async () => {
      const m = await meta();
      const a = await DeniedLog.open(m.state.denied, { flushMs: 60_000 });
      const b = await DeniedLog.open((await another()).state.denied, { flushMs: 60_000 });
      for (let i = 0; i < 700; i++) a.record({ host: 'ghcr.io', name: 'flood/a', reference: `v${i}` });
      await a.flush();
      for (let i = 0; i < 700; i++) b.record({ host: 'ghcr.io', name: 'flood/b', reference: `v${i}` });
      await b.close();
      await a.close();
      const stored = (await m.state.denied.read()) as { entries: Array<{ name: string; reference: string }> };
      expect(stored.entries.length).toBeLessThanOrEqual(1000);
      const names = new Set(stored.entries.map((e) => `${e.name}:${e.reference}`));
      expect(names.has('flood/b:v699')).toBe(true);
      const reopened = await DeniedLog.open((await another()).state.denied);
      expect(reopened.size).toBeLessThanOrEqual(1000);
      expect(reopened.list()[0]).toMatchObject({ name: expect.stringMatching(/^flood\//) });
    });

    it('round-trips the manual window, none by default', async () => {
      const m = await meta();
      expect(await m.state.window.read()).toBeNull();
      const w: ManualWindow = { openedAt: '2026-01-01T00:00:00.000Z', until: '2026-01-01T02:00:00.000Z', note: 'patch day', who: 'ops' };
      await m.state.window.write(w);
      expect(await (await another()).state.window.read()).toEqual(w);
      await m.state.window.write(null);
      expect(await m.state.window.read()).toBeNull();
    });
  });
}
