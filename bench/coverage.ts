// `npm run bench:coverage [-- --images N --rules M --store DIR --rounds R]`: how long the readiness report
// (jobs/coverage.ts) takes on a big store. Generates N images of 10 blobs each (default 10,000 → 100,000 blobs)
// through sluice's own Store, then times the report cold (a fresh Store: the offline CLI) and warm (the same
// Store again: a server asked every minute), side by side with the baseline of merely listing every blob.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { coverageReport } from '../src/jobs/coverage.js';
import { Store } from '../src/store/store.js';
import { openStore } from '../src/store/open.js';
import { MediaType, sha256, type Descriptor } from '../test/kit/oci.js';

const HOST = 'bench.local';
const LAYERS = 8;
const TAGS_PER_REPO = 10;

async function putImage(store: Store, repo: string, tag: string): Promise<void> {
  const layers: Descriptor[] = [];
  for (let i = 0; i < LAYERS; i++) {
    const body = randomBytes(256);
    const info = await store.putBlob(body, { sizeBytes: body.length });
    layers.push({ mediaType: MediaType.ociLayerTar, digest: info.digest, size: info.sizeBytes });
  }
  const configBody = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', repo, tag }));
  const config = await store.putBlob(configBody, { digest: sha256(configBody), sizeBytes: configBody.length });
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: config.digest, size: config.sizeBytes }, layers }));
  const m = await store.putManifest(body, MediaType.ociManifest);
  await store.linkManifest(HOST, repo, m);
  await store.setTag(HOST, repo, tag, m.digest);
}

async function populate(storage: string, images: number): Promise<number> {
  const t0 = performance.now();
  const store = await openStore({ storage });
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    for (let i = next++; i < images; i = next++) await putImage(store, `many/repo${Math.floor(i / TAGS_PER_REPO)}`, `v${i % TAGS_PER_REPO}`);
  }));
  await store.close();
  return performance.now() - t0;
}

/** `rules` exact tags spread over the store, plus one glob covering all of it. */
function ruleSet(images: number, rules: number): string[] {
  const out = [`${HOST}/many/**`];
  const step = Math.max(1, Math.floor(images / rules));
  for (let i = 0; i < images && out.length <= rules; i += step) out.push(`${HOST}/many/repo${Math.floor(i / TAGS_PER_REPO)}:v${i % TAGS_PER_REPO}`);
  return out;
}

/** Wall time, and this process's CPU time (user + system): on a shared machine the second is the steadier. */
async function time<T>(fn: () => Promise<T>): Promise<{ ms: number; cpuMs: number; value: T }> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const value = await fn();
  const c = process.cpuUsage(c0);
  return { ms: performance.now() - t0, cpuMs: (c.user + c.system) / 1000, value };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { images: { type: 'string', default: '10000' }, rules: { type: 'string', default: '1000' }, store: { type: 'string' }, rounds: { type: 'string', default: '3' } } });
  const images = Number(values.images);
  const storage = values.store ?? join(tmpdir(), `sluice-bench-coverage-${images}`);
  const marker = join(storage, '.bench-complete');
  if (!existsSync(marker)) {
    await mkdir(storage, { recursive: true });
    const ms = await populate(storage, images);
    await writeFile(marker, `${images}\n`);
    process.stdout.write(`generated ${images} images (${images * (LAYERS + 2)} blobs) in ${(ms / 1000).toFixed(1)} s at ${storage}\n`);
  }
  const rules = ruleSet(images, Number(values.rules));
  const rows: Array<[string, number[], number[]]> = [['list every blob (baseline)', [], []], ['coverage, cold store', [], []], ['coverage, warm store', [], []]];
  const record = (i: number, t: { ms: number; cpuMs: number }): void => {
    rows[i]?.[1].push(t.ms);
    rows[i]?.[2].push(t.cpuMs);
  };
  let blobs = 0;
  let checked = 0;
  for (let round = 0; round < Number(values.rounds); round++) {
    const store = await openStore({ storage });
    const list = await time(async () => {
      let n = 0;
      for await (const _ of store.allBlobs()) n++;
      return n;
    });
    blobs = list.value;
    record(0, list);
    const fresh = await openStore({ storage });
    const cold = await time(() => coverageReport(fresh, rules));
    record(1, cold);
    const warm = await time(() => coverageReport(fresh, rules));
    record(2, warm);
    checked = warm.value.rules.reduce((n, r) => n + r.images.reduce((m, i) => m + i.storedBlobs, 0), 0);
    if (!warm.value.ready) throw new Error('the generated store should be complete');
    await Promise.all([store.close(), fresh.close()]);
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const base = median(rows[0]?.[1] ?? []);
  process.stdout.write(`store: ${blobs} blobs; report: ${rules.length} rules (1 glob over every image + ${rules.length - 1} exact tags), ${checked} blob checks per run\n`);
  const baseCpu = median(rows[0]?.[2] ?? []);
  process.stdout.write(`load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} on ${cpus().length} CPUs\n`);
  process.stdout.write(`${'case'.padEnd(30)} ${'wall ms'.padStart(8)} ${'ratio'.padStart(7)} ${'cpu ms'.padStart(8)} ${'ratio'.padStart(7)}  wall runs\n`);
  for (const [name, xs, cs] of rows) {
    const w = median(xs);
    const c = median(cs);
    process.stdout.write(`${name.padEnd(30)} ${w.toFixed(0).padStart(8)} ${(w / base).toFixed(1).padStart(6)}x ${c.toFixed(0).padStart(8)} ${(c / baseCpu).toFixed(1).padStart(6)}x  ${xs.map((x) => x.toFixed(0)).join(', ')}\n`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
