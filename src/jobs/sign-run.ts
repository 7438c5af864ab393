// One signing run over admitted images (`sluice sign`, and after a sync or an import): resolves each image's
// reference in the store, signs it once however many rules name it, and sums up what happened.
import type { Store } from '../store/store.js';
import type { AdmittedImage } from './admitted-images.js';
import type { ImageSigning, SiteSigner } from './site-signer.js';

export interface SignReport {
  images: Array<ImageSigning & { reference: string }>;
  /** Images whose reference is not stored: nothing to sign until a sync or an import brings them. */
  notStored: string[];
  signed: number;
  kept: number;
  unsigned: number;
}

export async function signImages(signer: SiteSigner, store: Pick<Store, 'getTag'>, images: readonly AdmittedImage[]): Promise<SignReport> {
  const report: SignReport = { images: [], notStored: [], signed: 0, kept: 0, unsigned: 0 };
  const done = new Set<string>();
  for (const i of images) {
    const digest = i.reference.startsWith('sha256:') ? i.reference : await store.getTag(i.host, i.name, i.reference);
    const text = `${i.host}/${i.name}${i.reference.startsWith('sha256:') ? '@' : ':'}${i.reference}`;
    if (!digest) {
      report.notStored.push(text);
      continue;
    }
    const key = `${i.host}/${i.name}@${digest}`;
    if (done.has(key)) continue;
    done.add(key);
    // One image that cannot be signed (a full store) does not stop the others; it is named with the reason.
    const result = await signer.signImage(i.host, i.name, digest).catch((e: unknown): ImageSigning => ({
      host: i.host, name: i.name, digest, manifests: [{ digest, state: 'unsigned', reason: `signing failed: ${e instanceof Error ? e.message : String(e)}` }],
    }));
    report.images.push({ ...result, reference: text });
    for (const m of result.manifests) report[m.state]++;
  }
  return report;
}
