// SIGTERM with a blob download in progress. The grace deadline bounds the whole shutdown; a
// detached ingest finishes inside it or is cancelled cleanly (temp file gone, nothing committed), and the temp
// folder goes only after every ingest has ended. A real `sluice serve` process and the fake upstream, slowed.
import { once } from 'node:events';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { tempDir } from '../helpers/clients.js';
import { MiniUpstream } from '../helpers/mini-upstream.js';
import { sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { MediaType, MiB, sha256 } from '../kit/oci.js';

const GRACE_MS = 2000;

/**
 * An upstream with x/app:v1 whose one layer is `body` under `digest`: the layer is sent up to `first` bytes, then
 * held until `release` (a never-released one stalls; its untouched bytes are never even paged in).
 */
async function slowUpstream(digest: string, body: Buffer, first: number) {
  const up = await new MiniUpstream().start();
  up.blobs.set(digest, body);
  up.addManifest('x/app', {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256('{}'), size: 2 },
    layers: [{ mediaType: MediaType.ociLayer, digest, size: body.length }],
  }, 'v1');
  let onHeld: () => void = () => undefined;
  const heldNow = new Promise<void>((resolve) => (onHeld = resolve));
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  up.behaviour.set(digest, {
    chunkBytes: first,
    beforeChunk: async (i) => {
      if (i !== 1) return;
      onHeld();
      await released;
    },
  });
  return { url: up.url, heldNow, release, stop: () => up.stop() };
}

describe('SIGTERM with a blob download in progress', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function start(upstreamUrl: string): Promise<{ sluice: SluiceProcess; storage: string }> {
    const dir = await tempDir('shutdown');
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const storage = join(dir, 'data');
    const yaml = sluiceConfigYaml(storage, { windows: 'always', allowlist: ['docker.io/x/app:v1'], upstreams: { 'docker.io': { url: upstreamUrl } } });
    const sluice = await startSluiceProcess(yaml, { dir, env: { ...process.env, SLUICE_SHUTDOWN_GRACE_MS: String(GRACE_MS) } });
    cleanups.push(async () => void (await sluice.stop('SIGKILL')));
    expect((await fetch(`${sluice.url}/v2/x/app/manifests/v1`)).status).toBe(200);
    return { sluice, storage };
  }

  /** A client that has its first bytes of the blob and keeps reading until cut. */
  async function pull(sluice: SluiceProcess, digest: string): Promise<void> {
    const res = await fetch(`${sluice.url}/v2/x/app/blobs/${digest}`);
    expect(res.status).toBe(200);
    const reader = res.body?.getReader();
    expect((await reader?.read())?.done).toBe(false);
    void (async () => {
      while (!(await reader?.read())?.done);
    })().catch(() => undefined);
  }

  test('a 256 MiB download that stalls is cancelled at the deadline: exit in time, no temp folder, nothing committed', async () => {
    const digest = sha256('a layer that never arrives whole');
    const up = await slowUpstream(digest, Buffer.alloc(256 * MiB), 4 * MiB);
    cleanups.push(up.stop);
    const { sluice, storage } = await start(up.url);
    await pull(sluice, digest);
    await up.heldNow;
    const t0 = Date.now();
    const code = await sluice.stop('SIGTERM');
    const elapsedMs = Date.now() - t0;
    expect(code).toBe(0);
    expect(elapsedMs).toBeLessThan(GRACE_MS + 1500);
    expect(sluice.stderr()).not.toMatch(/ENOENT/);
    expect(await readdir(join(storage, 'tmp'))).toEqual([]);
    await expect(stat(join(storage, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7)))).rejects.toThrow(/ENOENT/);
  }, 60_000);

  /**
   * An 8 MiB layer of `fill` bytes held after its first 2 MiB while a client pulls it; SIGTERM; resolves once
   * sluice says it is shutting down, with the held download still running.
   */
  async function terminateDuringDownload(fill: number) {
    const bytes = Buffer.alloc(8 * MiB, fill);
    const digest = sha256(bytes);
    const up = await slowUpstream(digest, bytes, 2 * MiB);
    cleanups.push(up.stop);
    const { sluice, storage } = await start(up.url);
    await pull(sluice, digest);
    await up.heldNow;
    const exited = sluice.stop('SIGTERM');
    while (!sluice.stdout().includes('shutting down')) await once(sluice.proc.stdout ?? sluice.proc, 'data');
    return { bytes, digest, up, sluice, storage, exited };
  }

  test('a download that completes inside the grace period is committed, verified, before the temp folder goes', async () => {
    const { bytes, digest, up, sluice, storage, exited } = await terminateDuringDownload(3);
    // The rest arrives only once sluice is shutting down (its log says so).
    up.release();
    expect(await exited).toBe(0);
    expect(sluice.stderr()).not.toMatch(/ENOENT/);
    expect(await readdir(join(storage, 'tmp'))).toEqual([]);
    expect((await stat(join(storage, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7)))).size).toBe(bytes.length);
  }, 60_000);

  test('a second SIGTERM during the graceful stop does not kill the drain: the download still commits, exit 0', async () => {
    const { bytes, digest, up, sluice, storage, exited } = await terminateDuringDownload(5);
    sluice.proc.kill('SIGTERM'); // a supervisor repeating itself while the download is still held
    up.release();
    expect(await exited).toBe(0);
    expect((await stat(join(storage, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7)))).size).toBe(bytes.length);
  }, 60_000);
});
