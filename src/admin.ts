// The admin API on its own listener: bearer-token auth, allowlist, denied log, windows, sync and status.
// (Being written: registration signature fixed here so app.ts can wire it.)
import type { FastifyInstance } from 'fastify';
import type { Allowlist } from './allowlist.js';
import type { Config } from './config.js';
import type { DeniedLog } from './denied.js';
import type { Mirror } from './mirror.js';
import type { Store } from './store.js';
import type { Syncer } from './sync.js';
import type { WindowState } from './window.js';

export interface AdminDeps {
  config: Config;
  allowlist: Allowlist;
  denied: DeniedLog;
  window: WindowState;
  syncer: Syncer;
  mirror: Mirror;
  store: Store;
}

export async function registerAdminRoutes(_app: FastifyInstance, _deps: AdminDeps): Promise<void> {
  // filled in by the admin API work
}
