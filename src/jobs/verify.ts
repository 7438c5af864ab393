// `sluice verify [--repair]`: re-hashes every blob against its digest, checks that tags point at present
// manifests and lists manifests whose blobs are absent; --repair quarantines corrupt blobs so they are refetched.
import { createHash } from 'node:crypto';
import { walkGraph, type GraphSource } from '../oci/graph.js';
import type { Store } from '../store/store.js';
import type { ProgressPort } from './progress.js';

export interface VerifyReport {
  blobsChecked: number;
  bytesChecked: number;
  corrupt: Array<{ digest: string; computed: string; quarantinedTo?: string }>;
  danglingTags: Array<{ host: string; name: string; tag: string; digest: string }>;
  /** Manifests whose config or layers are absent: normal after a partial pull, listed for information. */
  incomplete: Array<{ host: string; name: string; manifest: string; missing: string[] }>;
}

export async function verifyStore(store: Store, opts: { repair?: boolean; onProgress?: ProgressPort } = {}): Promise<VerifyReport> {
  const report: VerifyReport = { blobsChecked: 0, bytesChecked: 0, corrupt: [], danglingTags: [], incomplete: [] };
  const total = opts.onProgress ? await store.usage() : undefined;
  const progress = (current?: string): void =>
    opts.onProgress?.({ unit: 'blobs', done: report.blobsChecked, total: total?.blobs, bytesDone: report.bytesChecked, bytesTotal: total?.bytes, current });
  for await (const digest of store.allBlobs()) {
    const info = await store.stat(digest);
    const stream = info && info.sizeBytes > 0 ? await store.openBlob(digest, { start: 0, end: info.sizeBytes - 1 }) : info && [Buffer.alloc(0)];
    if (!stream) continue;
    const hash = createHash('sha256');
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      hash.update(chunk);
      report.bytesChecked += chunk.length;
      progress(digest);
    }
    report.blobsChecked++;
    progress();
    const computed = `sha256:${hash.digest('hex')}`;
    if (computed === digest) continue;
    const entry: VerifyReport['corrupt'][number] = { digest, computed };
    if (opts.repair) entry.quarantinedTo = await store.quarantine(digest);
    report.corrupt.push(entry);
  }
  for (const { host, name } of await store.repositories()) {
    for (const tag of await store.listTags(host, name)) {
      const digest = await store.getTag(host, name, tag);
      if (!digest || !(await store.hasManifest(digest))) report.danglingTags.push({ host, name, tag, digest: digest ?? '' });
    }
    report.incomplete.push(...(await incompleteManifests(store, host, name)));
  }
  return report;
}

/** The repository's image manifests (not indexes) whose config or layers are absent; one step, nothing followed. */
async function incompleteManifests(store: Store, host: string, name: string): Promise<VerifyReport['incomplete']> {
  const out: VerifyReport['incomplete'] = [];
  const source: GraphSource = { manifest: (digest) => store.getManifest(digest) };
  const graph = await walkGraph(source, await store.linkedManifests(host, name), { children: 'by-parent', maxDepth: 0 });
  for (const node of graph.nodes) {
    if (node.via !== 'root' || node.kind !== 'manifest') continue;
    const missing: string[] = [];
    for (const d of node.children) if (!(await store.stat(d.digest))) missing.push(d.digest);
    if (missing.length > 0) out.push({ host, name, manifest: node.digest, missing });
  }
  return out;
}
