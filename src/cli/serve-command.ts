// `sluice serve`: builds the app, listens on the registry, admin (and metrics) listeners, reloads TLS on SIGHUP
// and stops gracefully on SIGTERM/SIGINT within SLUICE_SHUTDOWN_GRACE_MS.
import type { App } from '../app.js';
import type { Config } from '../config/config.js';
import { UsageError, type ParsedArgs } from './args.js';
import { enableCompileCache, flushCompileCache } from './compile-cache.js';

/** How long SIGTERM waits for in-flight downloads before closing their connections. */
const SHUTDOWN_GRACE_MS = Number(process.env.SLUICE_SHUTDOWN_GRACE_MS ?? 30_000);

export async function serve(args: ParsedArgs, config: () => Config): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError('serve takes no arguments');
  const cfg = config();
  // Before the app's modules load, so that they are compiled from the cache of the last start.
  enableCompileCache(cfg.storage);
  // Loaded here so that the other subcommands start without fastify and friends.
  const { buildApp, reloadListeners } = await import('../app.js');
  const app = await buildApp(cfg, { logger: true });
  await listen(app);
  flushCompileCache();
  const reload = (): void => {
    try {
      reloadListeners(app);
      app.registry.log.info('TLS certificates reloaded');
    } catch (e) {
      app.registry.log.error({ err: e }, 'TLS reload failed; keeping the previous certificates');
    }
  };
  process.on('SIGHUP', reload);
  // `on`, not `once`: a second SIGTERM during the graceful stop (a supervisor repeating itself) must not kill the
  // process mid-drain through the default action; the grace deadline bounds the stop instead. (One arriving while
  // Node tears down, after the drain, still ends the process by the signal: Node uninstalls its handlers first.)
  const stopping = new Promise<void>((resolveStop) => {
    process.on('SIGTERM', resolveStop);
    process.on('SIGINT', resolveStop);
  });
  await stopping;
  process.off('SIGHUP', reload);
  await shutdown(app);
  return 0;
}

/**
 * Graceful stop within SLUICE_SHUTDOWN_GRACE_MS: no new connections; in-flight requests and detached blob
 * downloads may finish until the deadline, then connections are cut and downloads cancelled (nothing committed).
 */
async function shutdown(app: App): Promise<void> {
  app.registry.log.info({ graceMs: SHUTDOWN_GRACE_MS }, 'shutting down: finishing in-flight requests');
  const deadlineMs = Date.now() + SHUTDOWN_GRACE_MS;
  const cut = setTimeout(() => {
    app.registry.log.warn('grace period over: closing remaining connections and cancelling downloads');
    app.registry.server.closeAllConnections();
    app.admin.server.closeAllConnections();
    app.metricsListener?.server.closeAllConnections();
  }, SHUTDOWN_GRACE_MS);
  cut.unref();
  await app.close(deadlineMs);
  clearTimeout(cut);
}

/** Both listeners or neither: if one cannot listen (port in use), the other is closed so the process can exit. */
async function listen(app: App): Promise<void> {
  try {
    const { host, port } = app.config.listen;
    const address = await app.registry.listen({ host, port });
    app.registry.log.info({ address }, 'registry listening');
    const admin = app.config.admin.listen;
    const adminAddress = await app.admin.listen({ host: admin.host, port: admin.port });
    app.registry.log.info({ address: adminAddress }, 'admin API listening');
    if (app.metricsListener && app.config.metrics) {
      const m = app.config.metrics.listen;
      const metricsAddress = await app.metricsListener.listen({ host: m.host, port: m.port });
      app.registry.log.info({ address: metricsAddress }, 'metrics listening (GET /metrics, no token)');
    }
  } catch (e) {
    await app.close();
    throw e;
  }
}

