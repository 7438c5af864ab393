// The in-memory backend (store/memory/) passes all three conformance suites, so the unit tests of what sits
// above the store (policy, gc, coverage, the mirror) can use it instead of folders or hand-rolled fakes.
import { MemoryBlobBackend, MemoryBlobs } from '../../src/store/memory/blobs.js';
import { MemoryLeases, type MemoryLeaseTable } from '../../src/store/memory/leases.js';
import { MemoryMetadata, MemoryMetadataStore } from '../../src/store/memory/metadata.js';
import { blobBackendConformance } from '../helpers/conformance/blob-backend.js';
import { flightLeasesConformance } from '../helpers/conformance/flight-leases.js';
import { metadataStoreConformance } from '../helpers/conformance/metadata-store.js';

blobBackendConformance('memory', async () => {
  const data = new MemoryBlobs();
  return { backend: new MemoryBlobBackend(data), reopen: async () => new MemoryBlobBackend(data), dispose: async () => undefined };
});

metadataStoreConformance('memory', async () => {
  const data = new MemoryMetadata();
  return { meta: new MemoryMetadataStore(data), another: async () => new MemoryMetadataStore(data), close: async () => undefined };
});

flightLeasesConformance('memory', async () => {
  const table: MemoryLeaseTable = new Map();
  return {
    a: new MemoryLeases(table),
    b: new MemoryLeases(table),
    settled: () => new Promise<void>((resolve) => setImmediate(resolve)),
    close: async () => undefined,
  };
});
