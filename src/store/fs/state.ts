// The state documents beside an fs store, at the paths every release used: allowlist.json, denied.json and
// window.json in the storage root. Opening them does no I/O; each document reads and writes on demand.
import { join } from 'node:path';
import type { StateDocuments } from '../ports.js';
import { AllowlistFile, type FileLockOptions } from './allowlist-document.js';
import { DeniedFile } from './denied-document.js';
import { WindowFile } from './window-document.js';

export function fsStateDocuments(storage: string, lock: FileLockOptions = {}): StateDocuments {
  return {
    allowlist: new AllowlistFile(join(storage, 'allowlist.json'), lock),
    denied: new DeniedFile(join(storage, 'denied.json')),
    window: new WindowFile(join(storage, 'window.json')),
  };
}
