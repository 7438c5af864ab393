// The filesystem backend passes the store's conformance suites: BlobBackend (fs/blobs.ts over the local spool
// area) and MetadataStore (fs/metadata.ts with the state documents beside it). Its leases are the in-process
// flight alone (LOCAL_LEASES: one process downloads into an fs store), so the leases suite does not apply.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsBlobBackend } from '../../src/store/fs/blobs.js';
import { FsLayout } from '../../src/store/fs/layout.js';
import { LocalSpoolArea } from '../../src/store/local/spool.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { blobBackendConformance } from '../helpers/conformance/blob-backend.js';
import { metadataStoreConformance } from '../helpers/conformance/metadata-store.js';

blobBackendConformance('fs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-conformance-'));
  const paths = new FsLayout(dir);
  const open = async (): Promise<FsBlobBackend> => FsBlobBackend.open(paths, await LocalSpoolArea.open(paths.spoolsDir));
  const backend = await open();
  return { backend, reopen: open, dispose: () => rm(dir, { recursive: true, force: true }) };
});

metadataStoreConformance('fs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-meta-'));
  const stores: Store[] = [await openStore({ storage: dir })];
  return {
    meta: stores[0].meta,
    another: async () => {
      const s = await openStore({ storage: dir });
      stores.push(s);
      return s.meta;
    },
    close: async () => {
      for (const s of stores) await s.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
