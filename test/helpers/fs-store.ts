// What tests of the filesystem store look at behind its ports: a blob's file, the process's spool folder, the
// file an ingest spools into. Nothing in src/ sees these paths.
import { FsBlobBackend } from '../../src/store/fs/blobs.js';
import { LocalSpool } from '../../src/store/local/spool.js';
import type { IngestWriter, Store } from '../../src/store/store.js';

export function fsBlobs(store: Store): FsBlobBackend {
  if (!(store.blobs instanceof FsBlobBackend)) throw new Error('this test needs a filesystem store');
  return store.blobs;
}

export const blobFile = (store: Store, digest: string): string => fsBlobs(store).blobPath(digest);

export const spoolDir = (store: Store): string => fsBlobs(store).spools.dir;

export function spoolFile(w: IngestWriter): string {
  if (!(w.spool instanceof LocalSpool)) throw new Error('this test needs a filesystem spool');
  return w.spool.path;
}
