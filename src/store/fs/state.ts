// The state documents beside an fs store, at the paths every release used (layout.ts): allowlist.json,
// denied.json and window.json in the storage root. Opening them does no I/O; each reads and writes on demand.
import type { StateDocuments } from '../ports.js';
import { AllowlistFile, type FileLockOptions } from './allowlist-document.js';
import { DeniedFile } from './denied-document.js';
import { WindowFile } from './window-document.js';
import type { FsLayout } from './layout.js';

export function fsStateDocuments(paths: FsLayout, lock: FileLockOptions = {}): StateDocuments {
  return {
    allowlist: new AllowlistFile(paths.allowlist, lock),
    denied: new DeniedFile(paths.denied),
    window: new WindowFile(paths.window),
  };
}
