// POST /api/v1/sync: runs (or joins) a sync and streams its progress as NDJSON, ending with the summary.
import { PassThrough } from 'node:stream';
import type { FastifyPluginAsync } from 'fastify';
import { RegistryError } from '../oci/errors.js';
import { windowClosedUntil } from '../mirror/access.js';
import { SyncClosedError, type SyncEvent, type Syncer } from '../jobs/sync.js';
import type { WindowState } from '../window/state.js';
import { SCHEMAS } from './schemas.js';
import { API_PREFIX, badRequest } from './request.js';

type SyncBody = { dryRun?: boolean; platforms?: string[] } | null;

export interface SyncRouteDeps {
  syncer: Syncer;
  window: WindowState;
}

export const syncRoutes: FastifyPluginAsync<SyncRouteDeps> = async (app, { syncer, window }) => {
  app.post<{ Body: SyncBody }>(`${API_PREFIX}/sync`, { schema: SCHEMAS.sync }, async (req, reply) => {
    const body = req.body ?? {};
    const dryRun = body.dryRun === true;
    const platforms = syncPlatforms(body.platforms);
    if (!dryRun && !window.isOpen()) {
      const detail = { nextOpen: window.status().nextOpen?.toISOString() ?? null };
      throw new RegistryError('WINDOW_CLOSED', syncClosedMessage(windowClosedUntil(window)), detail);
    }
    const out = new PassThrough();
    out.on('error', () => undefined); // the client went away; the sync carries on without it
    const write = (line: unknown): void => {
      if (!out.writableEnded && !out.destroyed) out.write(`${JSON.stringify(line)}\n`);
    };
    if (syncer.busy) write({ type: 'info', message: 'a sync is already running; waiting for its report' });
    // The sync belongs to the server: a client that disconnects stops reading, not fetching.
    syncer.run({ dryRun, platforms, onEvent: (e: SyncEvent) => write(e) }).then(
      (report) => write({ type: 'summary', report }),
      (e: unknown) => write({ type: 'error', message: e instanceof SyncClosedError ? syncClosedMessage(windowClosedUntil(window)) : String(e instanceof Error ? e.message : e) }),
    ).finally(() => out.end());
    return reply.header('content-type', 'application/x-ndjson').header('cache-control', 'no-store').send(out);
  });
};

export function syncClosedMessage(closedUntil: string): string {
  return `sync needs upstream access, which is ${closedUntil}; open a window now with "sluice window open DURATION --note TEXT"`;
}

/** `["linux/amd64", "linux/arm/v7"]`; a string "a,b" is accepted too. */
export function syncPlatforms(v: unknown): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  const list = typeof v === 'string' ? v.split(',') : Array.isArray(v) ? v : undefined;
  if (!list || !list.every((p) => typeof p === 'string')) throw badRequest('"platforms" must be a list like ["linux/amd64"]');
  const platforms = (list as string[]).map((p) => p.trim()).filter((p) => p !== '');
  const bad = platforms.filter((p) => !/^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/.test(p));
  if (bad.length > 0) throw badRequest(`invalid platform(s) ${bad.join(', ')}: use os/arch[/variant], e.g. linux/amd64`);
  return platforms.length > 0 ? platforms : undefined;
}
