// The admin API on its own listener: bearer-token auth (token file created 0600 on first start) and one
// plugin per resource: the allowlist, the denied log, the operator's window, sync (NDJSON progress), status
// and the store; and the status page (/ui, its own login). The error handler is newFastify's (app.ts), shared with the registry listener.
import type { FastifyInstance } from 'fastify';
import { formatSchemaErrors } from './schemas.js';
import type { Allowlist } from '../policy/allowlist.js';
import type { Config } from '../config/config.js';
import type { DeniedLog } from '../policy/denied.js';
import { RegistryError } from '../oci/errors.js';
import type { Store } from '../store/store.js';
import type { Syncer } from '../jobs/sync.js';
import type { WindowState } from '../window/state.js';
import { authorized, digestOf, ensureAdminToken } from './token.js';
import { allowlistRoutes } from './allowlist.js';
import { deniedRoutes } from './denied.js';
import { windowRoutes } from './window.js';
import { syncRoutes } from './sync.js';
import { statusRoutes } from './status.js';
import { storeRoutes } from './store.js';
import { metricsRoutes, type MetricsSource } from './metrics.js';
import { gcRoutes } from './gc.js';
import type { GarbageCollector } from '../jobs/gc.js';
import type { SiteSigner } from '../jobs/site-signer.js';
import { isPagePath, statusPageRoutes } from './page.js';

export interface AdminDeps {
  config: Config;
  allowlist: Allowlist;
  denied: DeniedLog;
  window: WindowState;
  syncer: Syncer;
  store: Store;
  metrics: MetricsSource;
  gc: GarbageCollector;
  signer?: SiteSigner;
  /** Settles once the latest manual-window change is recorded (shared by every replica); rejects naming why not. */
  windowRecorded?: () => Promise<void>;
}

export async function registerAdminRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const token = await ensureAdminToken(deps.config.admin.tokenFile, deps.config.file);
  const expected = digestOf(token);
  app.setSchemaErrorFormatter(formatSchemaErrors);
  // Added before the plugins are registered, so it guards every route in them.
  app.addHook('onRequest', async (req) => {
    if (isPagePath(req.url)) return; // the status page has its own login (a session cookie), see page.ts
    if (!authorized(req.headers.authorization, expected)) {
      throw new RegistryError('UNAUTHORIZED', 'admin API: missing or wrong bearer token', null, {
        'www-authenticate': 'Bearer realm="sluice-admin"',
      });
    }
  });
  await app.register(allowlistRoutes, { allowlist: deps.allowlist });
  await app.register(deniedRoutes, { denied: deps.denied });
  await app.register(windowRoutes, { window: deps.window, recorded: deps.windowRecorded ?? (async () => undefined) });
  await app.register(syncRoutes, { syncer: deps.syncer, window: deps.window });
  await app.register(statusRoutes, deps);
  await app.register(storeRoutes, { store: deps.store });
  await app.register(metricsRoutes, { metrics: deps.metrics });
  await app.register(gcRoutes, { gc: deps.gc });
  await app.register(statusPageRoutes, { ...deps, expected, secure: deps.config.admin.tls !== undefined });
}
