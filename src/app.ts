// Composition root: builds store, allowlist, denied log, upstreams, window state and mirror from a Config,
// and the fastify instances with the one error handler. Nothing here decides policy; it only wires.
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Allowlist } from './policy/allowlist.js';
import type { Server as HttpsServer } from 'node:https';
import type { Config, TlsConfig } from './config/config.js';
import { cutMidResponse, Htpasswd, httpsOptions, reloadCertificates } from './http/listener.js';
import { rememberUser } from './http/client-identity.js';
import { logRequests, type RequestLogEntry } from './http/request-log.js';
import { lazySerializers, lazyValidators } from './http/lazy-validation.js';
import { DeniedLog } from './policy/denied.js';
import { RegistryError } from './oci/errors.js';
import { Mirror } from './mirror/mirror.js';
import { AllowlistPolicy } from './mirror/decision.js';
import { UpstreamAccess } from './mirror/upstream-access.js';
import { abortWhenWindowCloses, windowGate } from './mirror/window-gate.js';
import { registerRegistryRoutes } from './http/routes.js';
import { blobSender } from './http/zero-copy-sender.js';
import type { Store } from './store/store.js';
import { openStore } from './store/open.js';
import { followManual } from './window/manual-store.js';
import { openWindowState } from './window/open-state.js';
import { Syncer } from './jobs/sync.js';
import type { SiteSigner } from './jobs/site-signer.js';
import { SiteKeyError } from './jobs/site-key.js';
import { GarbageCollector } from './jobs/gc.js';
import { registerAdminRoutes } from './admin/admin.js';
import type { UpstreamPool } from './upstream/pool.js';
import { upstreamPool } from './upstream/from-config.js';
import { syncWhenWindowOpens } from './jobs/auto-sync.js';
import { ConfigError, WILDCARD, type SigningConfig } from './config/config.js';
import { WindowState } from './window/state.js';
import { Metrics } from './metrics/metrics.js';
import { registerMetricsListener } from './admin/metrics.js';
import { cachedReadiness } from './jobs/readiness-source.js';
import { coverageReport } from './jobs/coverage.js';
import { ruleTexts } from './admin/status.js';

export interface BuildOptions {
  logger?: boolean;
  now?: () => Date;
  /** Where request log entries go when `requestLog` is on; default the registry listener's logger. */
  requestLog?: (entry: RequestLogEntry) => void;
  /** false: blobs go through the buffered sender even where sendfile(2) is there; default unless SLUICE_SENDFILE=off. */
  sendfile?: boolean;
}

export interface App {
  config: Config;
  registry: FastifyInstance;
  admin: FastifyInstance;
  syncer: Syncer;
  gc: GarbageCollector;
  /** The node credentials in force (swapped on SIGHUP). */
  htpasswd?: { current: Htpasswd };
  store: Store;
  /** With `signing:` configured: signs admitted images with the site key. */
  signer?: SiteSigner;
  allowlist: Allowlist;
  denied: DeniedLog;
  mirror: Mirror;
  window: WindowState;
  upstreams: UpstreamPool;
  metrics: Metrics;
  /** The `metrics.listen` listener (only /metrics, no token), when configured. */
  metricsListener?: FastifyInstance;
  /**
   * Closes the listeners (waiting for their requests), then lets blob downloads finish until `deadlineMs`
   * (epoch ms; default now) and cancels the rest; the store's temp folder goes only after every one has ended.
   */
  close(deadlineMs?: number): Promise<void>;
}

export async function buildApp(config: Config, opts: BuildOptions = {}): Promise<App> {
  const { store, allowlist, denied, window, windowWritten, windowRecorded, stopFollowing } = await openState(config, opts.now);
  const signer = config.signing ? await openSigner(store, config.signing, config.file) : undefined;
  const metrics = observedMetrics(config, { store, allowlist, denied, window, signer }, opts.now);
  const life = { stopping: false };
  // Redirects to sluice's own listeners are refused: where they are bound is read when a redirect comes.
  const servers: FastifyInstance[] = [];
  const upstreams = upstreamPool(config, windowGate(window, life, store), metrics, () => listenerAddresses(config, servers));
  const stopAborts = abortWhenWindowCloses(window, upstreams);
  const registry = newFastify(opts.logger ?? false, config.tls);
  if (config.requestLog) logRequests(registry, opts.requestLog ?? ((entry) => registry.log.info(entry, 'request')));
  const htpasswd = config.auth ? { current: Htpasswd.load(config.auth.htpasswd) } : undefined;
  if (htpasswd) requireBasicAuth(registry, htpasswd);
  const log = (msg: string, fields?: Record<string, unknown>): void => registry.log.info(fields ?? {}, msg);
  // Hand edits of allowlist.json are enforced as they land; a broken file keeps the last good rules.
  await allowlist.watch((level, msg, fields) => registry.log[level](fields, msg));
  // Upstream access first, then the two that use it: no object is handed back to what built it.
  const access = new UpstreamAccess({ store, window, upstreams, tagTtlMs: config.tagTtlMs, log, ingestMetrics: metrics.ingest });
  const policy = new AllowlistPolicy(allowlist, store, access, denied);
  const mirror = new Mirror({ store, policy, access, ingestTimeoutMs: config.ingestTimeoutMs, log, ingestMetrics: metrics.ingest });
  const sender = await blobSender(opts.sendfile);
  metrics.blobSender(sender.kind);
  if (sender.reason) registry.log.warn({ blobSender: sender.kind, reason: sender.reason }, 'blobs are sent through buffers, not sendfile');
  else registry.log.info({ blobSender: sender.kind }, 'blobs are sent with sendfile');
  registerRegistryRoutes(registry, { mirror, hosts: hostTable(config), metrics: metrics.requests, sender });
  const syncer = new Syncer(mirror, allowlist, store, window, config.platforms, config.upstreamTimeouts.syncMs, metrics.sync);
  if (signer) syncer.useSigner((host, name, digest) => signer.signImage(host, name, digest));
  const gc = new GarbageCollector(store, allowlist, { keep: config.gc.keep, graceMs: config.gcGraceMs }, metrics.gc);
  const admin = newFastify(opts.logger ?? false, config.admin.tls, 'admin');
  await registerAdminRoutes(admin, { config, allowlist, denied, window, syncer, store, metrics, gc, signer, windowRecorded });
  const metricsListener = config.metrics ? newFastify(opts.logger ?? false, undefined, 'admin') : undefined;
  if (metricsListener) await registerMetricsListener(metricsListener, metrics);
  servers.push(registry, admin, ...(metricsListener ? [metricsListener] : []));
  const stopAutoSync = config.syncOnOpen ? syncWhenWindowOpens(window, syncer, log) : () => undefined;
  const stopGcSchedule = config.gc.everyMs ? gc.schedule(config.gc.everyMs, log) : () => undefined;
  if (denied.recoveredFrom) log('denied log was unreadable and has been set aside', { file: denied.recoveredFrom });
  const app = { config, registry, admin, syncer, gc, signer, htpasswd, store, allowlist, denied, mirror, window, upstreams, metrics, metricsListener };
  const stopWatching = (): void => {
    stopFollowing();
    stopAutoSync();
    stopGcSchedule();
    allowlist.close();
    stopAborts();
  };
  return { ...app, close: (deadlineMs = Date.now()) => closeApp(app, life, stopWatching, windowWritten, deadlineMs) };
}

/** The configured listen addresses and, once listening, the bound ones (a port 0 becomes a real port). */
function listenerAddresses(config: Config, servers: FastifyInstance[]): Array<{ host: string; port: number }> {
  const configured = [config.listen, config.admin.listen, ...(config.metrics ? [config.metrics.listen] : [])];
  const bound = servers.flatMap((s) => {
    const a = s.server.address();
    return a && typeof a === 'object' ? [{ host: a.address, port: a.port }] : [];
  });
  return [...configured, ...bound];
}

/** The site key must be readable before anything listens: a missing or wrong key is a config error (exit 2). */
async function openSigner(store: Store, signing: SigningConfig, file: string): Promise<SiteSigner> {
  // Loaded only with `signing:` configured: sigstore's verifier costs start-up time an unsigned mirror never needs.
  const { SiteSigner } = await import('./jobs/site-signer.js');
  try {
    return await SiteSigner.open(store, signing);
  } catch (e) {
    if (e instanceof SiteKeyError) throw new ConfigError([e.message], file);
    throw e;
  }
}

/** The metrics registry, its gauges reading the state opened for this app. */
function observedMetrics(config: Config, s: Pick<App, 'store' | 'allowlist' | 'denied' | 'window' | 'signer'>, now?: () => Date): Metrics {
  const metrics = new Metrics();
  metrics.observe({
    window: () => s.window.status(),
    usage: () => s.store.usage(),
    maxBytes: config.storageMaxBytes,
    deniedEntries: () => s.denied.size,
    allowlistRules: () => s.allowlist.list().length,
    ...(config.postgres ? { sharedStateConfirmed: () => s.store.unconfirmed() === undefined } : {}),
    now: now ? () => now().getTime() : undefined,
    readiness: cachedReadiness(() => coverageReport(s.store, ruleTexts(s.allowlist), { platforms: config.platforms, signer: s.signer })),
  });
  return metrics;
}

/** The store and the state documents kept beside it: allowlist, denied log, the operator's window. */
async function openState(
  config: Config,
  now?: () => Date,
): Promise<Pick<App, 'store' | 'allowlist' | 'denied' | 'window'> & { windowWritten: () => Promise<void>; windowRecorded: () => Promise<void>; stopFollowing: () => void }> {
  const store = await openStore(config);
  const documents = store.meta.state;
  const allowlist = await Allowlist.open(documents.allowlist, config.allowlist, { configFile: config.file });
  const denied = await DeniedLog.open(documents.denied);
  const { window, written, recorded } = await openWindowState(config.windows, documents.window, now);
  // Another replica's (or the CLI's) manual window applies here at once, on a store that can tell.
  const stopFollowing = followManual(window, documents.window);
  return { store, allowlist, denied, window, windowWritten: written, windowRecorded: recorded, stopFollowing };
}

/** See App.close. */
async function closeApp(
  app: Omit<App, 'close'>,
  life: { stopping: boolean },
  stopWatching: () => void,
  windowWritten: () => Promise<void>,
  deadlineMs: number,
): Promise<void> {
  const { upstreams } = app;
  stopWatching();
  await Promise.all([app.registry.close(), app.admin.close(), app.metricsListener?.close()]);
  // What is left is detached work (a sync, downloads whose clients left): no new upstream request for it.
  life.stopping = true;
  for (const u of upstreams.values()) u.abortInFlight(new RegistryError('UPSTREAM_FAILED', 'sluice is shutting down'));
  await app.mirror.drain(deadlineMs);
  await app.gc.settled();
  await windowWritten(); // the last manual-window change is on disk before the store folder may go
  await app.denied.close();
  await app.store.close();
  await Promise.all([...upstreams.values()].map((u) => u.close()));
}

export function hostTable(config: Config): { has(host: string): boolean; defaultHost: string } {
  return { has: (h) => config.upstreams.has(h) || config.upstreams.has(WILDCARD), defaultHost: config.defaultUpstream };
}

/** Every registry request needs valid basic-auth credentials (checked before anything else). */
function requireBasicAuth(app: FastifyInstance, htpasswd: { current: Htpasswd }): void {
  app.addHook('onRequest', async (req) => {
    rememberUser(req.raw, await htpasswd.current.check(req.headers.authorization));
  });
}

/**
 * SIGHUP: re-reads both listeners' certificates and the htpasswd file; open connections are not dropped.
 * Everything is loaded before anything is swapped, so a broken file leaves the previous set in force.
 */
export function reloadListeners(app: App): void {
  const htpasswd = app.config.auth ? Htpasswd.load(app.config.auth.htpasswd) : undefined;
  if (app.config.tls) reloadCertificates(app.registry.server as HttpsServer, app.config.tls);
  if (app.config.admin.tls) reloadCertificates(app.admin.server as HttpsServer, app.config.admin.tls);
  if (htpasswd && app.htpasswd) app.htpasswd.current = htpasswd;
}

/**
 * Connection limits for both listeners. Node checks headersTimeout/requestTimeout only every
 * connectionsCheckingInterval (default 30 s), so without it a slowloris client is cut after 30 s, not 10 s.
 * fastify hands `http` to http.createServer only, so an https listener needs the same limits in its options.
 */
const CONNECTION_LIMITS = { maxHeaderSize: 16 * 1024, headersTimeout: 10_000, connectionsCheckingInterval: 1_000 };

/**
 * A fastify instance with sluice's limits and the one error handler every listener shares.
 * `api` names the listener in its not-found answer; the admin listener also validates bodies strictly (no type
 * coercion, unknown fields refused rather than dropped) and answers a bad request with its own code.
 */
export function newFastify(logger: boolean, tls?: TlsConfig, api: 'registry' | 'admin' = 'registry'): FastifyInstance {
  const badRequest = api === 'admin' ? 'ADMIN_INVALID_REQUEST' : 'BAD_REQUEST';
  const app = Fastify({
    ...(api === 'admin' ? { ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allowUnionTypes: true } } } : {}),
    // Ajv is loaded, and schemas compiled, when a route first uses them: not at start (http/lazy-validation.ts).
    schemaController: { compilersFactory: { buildValidator: lazyValidators, buildSerializer: lazySerializers } },
    ...(tls ? { https: { ...httpsOptions(tls), ...CONNECTION_LIMITS } } : {}),
    logger: logger ? { level: 'info' } : false,
    // Per-request log lines would cost more than serving a cached manifest; policy events are logged instead.
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    bodyLimit: 1024 * 1024,
    connectionTimeout: 0,
    requestTimeout: 60_000,
    keepAliveTimeout: 65_000,
    return503OnClosing: false,
    http: CONNECTION_LIMITS,
    frameworkErrors: (err, req, reply) => {
      sendError(new RegistryError(badRequest, 'malformed request', { reason: err.message }), req, reply);
    },
  });
  cutMidResponse(app.server);
  // Every answer, errors included, says which API it speaks (distribution-spec "API version check").
  app.addHook('onRequest', async (_req, reply) => {
    reply.header('docker-distribution-api-version', 'registry/2.0');
  });
  app.setErrorHandler(errorHandler(badRequest));
  app.setNotFoundHandler((req, reply) => {
    sendError(new RegistryError('NOT_FOUND', `no such route in the ${api} API`), req, reply);
  });
  return app;
}

type BadRequestKind = 'ADMIN_INVALID_REQUEST' | 'BAD_REQUEST';

/** RegistryErrors as they are; other 4xx as the listener's bad request; anything else a logged 500. */
function errorHandler(badRequest: BadRequestKind): (err: FastifyError | RegistryError, req: FastifyRequest, reply: FastifyReply) => void {
  return (err, req, reply) => {
    if (err instanceof RegistryError) {
      sendError(err, req, reply);
      return;
    }
    const status = typeof err.statusCode === 'number' ? err.statusCode : 500;
    if (status >= 400 && status < 500) {
      sendError(new RegistryError(badRequest, err.message), req, reply, status);
      return;
    }
    req.log.error({ err }, 'internal error');
    reply.code(500).header('content-type', 'application/json')
      .send({ errors: [{ code: 'UNKNOWN', message: 'internal error', detail: null }] });
  };
}

export function sendError(err: RegistryError, req: FastifyRequest, reply: FastifyReply, status = err.status): void {
  reply.code(status).headers(err.headers);
  if (req.method === 'HEAD') {
    reply.send();
    return;
  }
  reply.header('content-type', 'application/json').send(JSON.stringify(err.toBody()));
}
