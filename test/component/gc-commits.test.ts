// gc never removes what an import, a sync or a pull is committing, in this process or another: an import that
// says "imported" holds every blob of its image, verified, however gc runs beside it (in process, as `sluice gc`).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectGarbage, type GcReport, type RetentionRules } from '../../src/jobs/gc.js';
import { importPath } from '../../src/jobs/importer.js';
import { loadSiteKey } from '../../src/jobs/site-key.js';
import { SiteSigner } from '../../src/jobs/site-signer.js';
import { Store } from '../../src/store/store.js';
import { openMemoryStore, openStore } from '../../src/store/open.js';
import { buildLayoutOf, blobPath, type TestImage } from '../helpers/images.js';
import { freePort } from '../helpers/registry.js';
import { newKey } from '../helpers/cosign.js';
import { runSluice, SLUICE_MAIN, sluiceConfigYaml } from '../helpers/sluice.js';
import { KiB, MediaType } from '../kit/oci.js';

/** Every tag is kept; nothing else is: an image whose tag is not set yet is all garbage. */
const KEEP_TAGS: RetentionRules = {
  version: 0,
  matchesRepository: () => true,
  tagRulesFor: () => () => true,
  pinnedDigests: () => [],
  allowsAnyTag: () => false,
};
const REF = 'ghcr.io/race/img:v1';

let dir: string;
let layoutDir: string;
let image: TestImage;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-gc-commits-'));
  layoutDir = join(dir, 'layout');
  const layout = await buildLayoutOf(layoutDir, [{ ref: REF, kind: 'oci-manifest', sizes: Array.from({ length: 12 }, (_, i) => (8 + i) * KiB) }]);
  image = layout.images[0] as TestImage;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Stores the image's config and layers with no tag or link: what gc would sweep. */
async function preStore(store: Store): Promise<void> {
  for (const d of image.blobs.slice(1)) await store.putBlob(await readFile(blobPath(layoutDir, d.digest)), { digest: d.digest });
}

/** Blobs of the image missing or not matching their digest, asked of the backend itself (no memo). */
async function incomplete(store: Store): Promise<string[]> {
  const bad: string[] = [];
  for (const d of image.blobs) {
    const body = await store.blobs.readAll(d.digest);
    if (!body || `sha256:${createHash('sha256').update(body).digest('hex')}` !== d.digest) bad.push(d.digest);
  }
  return bad;
}

describe('gc and an import committing in the same process', () => {
  it('a gc started while an import links and tags waits for it, and then keeps the whole image', async () => {
    const store = await openStore({ storage: join(dir, 'in-process') });
    try {
      await preStore(store);
      const setTag = store.setTag.bind(store);
      let gc: Promise<GcReport | Error> | undefined;
      // Just before the import tags (its blobs checked and linked), a gc starts: it must not sweep them.
      store.setTag = async (...args: Parameters<Store['setTag']>): Promise<void> => {
        if (!gc) {
          let waiting!: () => void;
          const waits = new Promise<void>((resolve) => (waiting = resolve));
          gc = collectGarbage(store, KEEP_TAGS, { keep: 2, graceMs: 0, now: () => Date.now() + 60_000, onWaitingForCommits: waiting }).catch((e: Error) => e);
          await Promise.race([gc, waits]);
        }
        return setTag(...args);
      };
      const result = await importPath(store, layoutDir);
      expect(result.failed).toEqual([]);
      expect(result.imported.map((i) => i.ref)).toEqual([REF]);
      const report = await gc;
      expect(report).not.toBeInstanceOf(Error);
      expect(await incomplete(store)).toEqual([]);
      expect(await store.getTag('ghcr.io', 'race/img', 'v1')).toBe(image.digest);
    } finally {
      await store.close();
    }
  });
});

describe('gc between an import\'s checks and its commit', () => {
  it('an import that takes a manifest from the store (the source leaves it out) does not tag it once gc removed it', async () => {
    const store = openMemoryStore();
    const partialDir = join(dir, 'partial-layout');
    try {
      // A first import stores and links the image; the tag then goes, so the whole image is garbage.
      expect((await importPath(store, layoutDir)).failed).toEqual([]);
      await store.meta.deleteTag('ghcr.io', 'race/img', 'v1');
      // A second source leaves the manifest out (as a `--since` bundle would): it is taken from the store.
      await cp(layoutDir, partialDir, { recursive: true });
      await rm(blobPath(partialDir, image.digest));
      const commit = store.commits.commit.bind(store.commits);
      let swept: string[] = [];
      store.commits.commit = async <T>(fn: () => Promise<T>): Promise<T> => {
        // A whole gc runs after the import checked what the store holds, before it enters the commit gate.
        swept = (await collectGarbage(store, KEEP_TAGS, { keep: 2, graceMs: 0, now: () => Date.now() + 60_000 })).swept.map((b) => b.digest);
        return commit(fn);
      };
      const result = await importPath(store, partialDir);
      expect(swept).toContain(image.digest);
      if (result.failed.length === 0) {
        // Said "imported": the tag's manifest and every blob of the image must be there.
        expect(await store.getTag('ghcr.io', 'race/img', 'v1')).toBe(image.digest);
        expect(await store.getManifest(image.digest)).toBeDefined();
        expect(await incomplete(store)).toEqual([]);
      } else {
        expect(await store.getTag('ghcr.io', 'race/img', 'v1')).toBeUndefined();
      }
    } finally {
      await store.close();
      await rm(partialDir, { recursive: true, force: true });
    }
  });
});

describe('gc and a site signature being written', () => {
  it('a gc started while a signature is written waits for it: every signature tagged or linked holds all its blobs', async () => {
    const store = openMemoryStore();
    try {
      expect((await importPath(store, layoutDir)).failed).toEqual([]);
      const keyFile = join(dir, 'site.key');
      await writeFile(keyFile, newKey().privatePem, { mode: 0o600 });
      const signer = new SiteSigner(store, await loadSiteKey(keyFile), 'allowlist', []);
      const putManifest = store.putManifest.bind(store);
      let gc: Promise<GcReport | Error> | undefined;
      // Once the first signature's blobs are stored and before its manifest is, a gc starts: its blobs are garbage yet.
      store.putManifest = async (...args: Parameters<Store['putManifest']>) => {
        if (!gc) {
          let waiting!: () => void;
          const waits = new Promise<void>((resolve) => (waiting = resolve));
          gc = collectGarbage(store, KEEP_TAGS, { keep: 2, graceMs: 0, now: () => Date.now() + 60_000, onWaitingForCommits: waiting }).catch((e: Error) => e);
          await Promise.race([gc, waits]);
        }
        return putManifest(...args);
      };
      const signing = await signer.signImage('ghcr.io', 'race/img', image.digest);
      expect(signing.manifests.map((m) => m.state)).toEqual(['signed']);
      expect(await gc).not.toBeInstanceOf(Error);
      const lacking: string[] = [];
      for (const d of await store.linkedManifests('ghcr.io', 'race/img')) {
        const m = await store.getManifest(d);
        if (!m) {
          lacking.push(`manifest ${d}`);
          continue;
        }
        const doc = JSON.parse(m.body.toString()) as { config?: { digest: string }; layers?: Array<{ digest: string }> };
        for (const b of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) if (!(await store.blobs.stat(b.digest))) lacking.push(`${b.digest} of ${d}`);
      }
      expect(lacking).toEqual([]);
    } finally {
      await store.close();
    }
  });
});

describe('gc in a loop while imports run as CLI processes', () => {
  let storage: string;
  let config: string;

  beforeAll(async () => {
    const root = join(dir, 'cli');
    storage = join(root, 'data');
    config = join(root, 'sluice.yaml');
    const port = await freePort(); // nothing listens: import and gc run on the store in their own processes
    await rm(root, { recursive: true, force: true });
    await mkdir(root, { recursive: true });
    await writeFile(config, sluiceConfigYaml('./data', { allowlist: ['ghcr.io/race/**'], extra: { gcGrace: 0, admin: { listen: `127.0.0.1:${port}` } } }));
  });

  it('every import that printed "imported" holds its whole image, verified, with gc looping here and as `sluice gc`', async () => {
    const store = await openStore({ storage: storage });
    let stop = false;
    const runs = { here: 0, cli: 0, failed: [] as string[] };
    const hereLoop = (async () => {
      while (!stop) {
        await collectGarbage(store, KEEP_TAGS, { keep: 2, graceMs: 0 }).then(() => runs.here++, (e: Error) => runs.failed.push(e.message));
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    const cliLoop = (async () => {
      while (!stop) {
        const r = await runSluiceQuiet(['gc', '--config', config]);
        if (r === 0) runs.cli++;
        else runs.failed.push(`sluice gc exited ${r}`);
      }
    })();
    const problems: string[] = [];
    let imported = 0;
    try {
      for (let i = 0; i < 6; i++) {
        await preStore(store); // stored, untagged: every gc wants them gone
        const r = await runSluice(['import', layoutDir, '--config', config]);
        if (r.code !== 0 || !r.stdout.includes(`imported ${REF}`)) continue; // refused is fine; half-imported is not
        imported++;
        const missing = await incomplete(store);
        if (missing.length > 0) problems.push(`import ${i + 1} printed success but lacks ${missing.join(', ')}`);
        if ((await store.getTag('ghcr.io', 'race/img', 'v1')) !== image.digest) problems.push(`import ${i + 1}: tag not on the image`);
        await store.meta.deleteTag('ghcr.io', 'race/img', 'v1'); // garbage again for the next round
      }
    } finally {
      stop = true;
      await Promise.all([hereLoop, cliLoop]);
      await store.close();
    }
    expect(problems).toEqual([]);
    expect(imported).toBeGreaterThan(0);
    expect(runs.failed).toEqual([]);
    expect(runs.here + runs.cli).toBeGreaterThan(0);
  }, 180_000);
});

/** Runs the CLI and resolves to its exit code, without collecting its output. */
function runSluiceQuiet(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SLUICE_MAIN, ...args], { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code ?? -1));
  });
}

describe('gc in a loop while syncs and pulls commit', () => {
  it('every image a sync or a pull completed is whole in the store, whatever gc ran meanwhile', async () => {
    const { MiniUpstream } = await import('../helpers/mini-upstream.js');
    const { startSluice } = await import('../helpers/sluice.js');
    const { seededBytes } = await import('../kit/oci.js');
    const up = await new MiniUpstream().start();
    const shared = seededBytes(24 * KiB, 'race-shared');
    const images = Array.from({ length: 3 }, (_, i) =>
      up.addImage(`race/s${i}`, 'v1', [shared, ...Array.from({ length: 4 }, (_, j) => seededBytes((4 + j) * KiB, `race-${i}-${j}`))]));
    const s = await startSluice({ windows: 'always', upstreams: { 'ghcr.io': { url: up.url } }, extra: { gcGrace: 0, tagTtl: 0 } });
    const problems: string[] = [];
    try {
      await s.app.allowlist.add(images.map((img) => `ghcr.io/${img.name}:v1`), { by: 'test' });
      const store = s.app.store;
      // Bounded, so a pull or sync that hangs is reported as what it is rather than as the test's own timeout.
      const bounded = <T>(what: string, p: Promise<T>): Promise<T | undefined> =>
        p.catch((e: unknown) => void problems.push(`${what}: ${String(e)}`));
      const pull = async (img: (typeof images)[number]): Promise<void> => {
        const signal = AbortSignal.timeout(20_000);
        const m = await fetch(`${s.url}/v2/ghcr.io/${img.name}/manifests/v1`, { headers: { accept: MediaType.ociManifest }, signal });
        if (m.status !== 200) return void problems.push(`pull ${img.name}: manifest ${m.status}`);
        await m.arrayBuffer();
        for (const d of img.digests.slice(1)) {
          const b = await fetch(`${s.url}/v2/ghcr.io/${img.name}/blobs/${d}`, { signal });
          const body = Buffer.from(await b.arrayBuffer());
          if (b.status !== 200 || `sha256:${createHash('sha256').update(body).digest('hex')}` !== d) problems.push(`pull ${img.name}: blob ${d} ${b.status}`);
        }
      };
      for (let round = 1; round <= 4; round++) {
        for (const img of images) await store.meta.deleteTag('ghcr.io', img.name, 'v1'); // everything is garbage again
        let stop = false;
        const gcLoop = (async () => {
          while (!stop) {
            await s.app.gc.run();
            await new Promise((resolve) => setImmediate(resolve));
          }
        })();
        const syncDone = new AbortController();
        const syncBound = AbortSignal.timeout(30_000);
        const [sync] = await Promise.all([
          bounded(`round ${round}: sync`, Promise.race([
            s.app.syncer.run(),
            new Promise<never>((_, reject) => syncBound.addEventListener('abort', () => !syncDone.signal.aborted && reject(new Error('did not finish within 30s')))),
          ]).finally(() => syncDone.abort())),
          ...images.map((img) => bounded(`round ${round}: pull ${img.name}`, pull(img))),
        ]);
        stop = true;
        await gcLoop;
        if (problems.length > 0) break;
        for (const f of sync?.failed ?? []) problems.push(`round ${round}: sync failed ${f.reference}: ${f.reason}`);
        for (const img of images) {
          const tagged = await store.getTag('ghcr.io', img.name, 'v1');
          if (tagged !== img.digest) problems.push(`round ${round}: ${img.name}:v1 is ${tagged ?? 'untagged'}`);
          for (const d of img.digests) {
            const body = await store.blobs.readAll(d);
            if (!body || `sha256:${createHash('sha256').update(body).digest('hex')}` !== d) problems.push(`round ${round}: ${img.name} lacks ${d}`);
          }
        }
      }
    } finally {
      await s.close();
      await up.stop();
    }
    expect(problems).toEqual([]);
  }, 120_000);
});
