// /api/v1/window: the operator opens upstream access now for a bounded time (with a note), or closes it.
import type { FastifyPluginAsync } from 'fastify';
import { RegistryError } from '../oci/errors.js';
import { parseDuration } from '../window/schedule.js';
import type { WindowState } from '../window/state.js';
import { windowReport } from '../jobs/status.js';
import { SCHEMAS } from './schemas.js';
import { API_PREFIX, badRequest, who } from './request.js';

/** A manual window is bounded: an operator opens one for a maintenance task, not for good. */
export const MAX_MANUAL_WINDOW_MS = 30 * 24 * 3600 * 1000;

interface WindowBody {
  duration: string;
  note: string;
}

/**
 * A change answers only once it is recorded where every replica reads it. A close that cannot be recorded stays
 * in force here (upstream access closed) and is written as soon as the database answers; the operator is told.
 */
export const windowRoutes: FastifyPluginAsync<{ window: WindowState; recorded: () => Promise<void> }> = async (app, { window, recorded }) => {
  app.post<{ Body: WindowBody }>(`${API_PREFIX}/window`, { schema: SCHEMAS.openWindow }, async (req) => {
    const { durationMs, note } = windowRequest(req.body.duration, req.body.note);
    window.open(durationMs, note, who(req));
    await recorded().catch((e: unknown) => {
      throw notRecorded(e, 'the window is open on this replica only');
    });
    return { window: windowReport(window) };
  });
  app.delete(`${API_PREFIX}/window`, { schema: SCHEMAS.none }, async () => {
    window.close();
    await recorded().catch((e: unknown) => {
      throw notRecorded(e, 'upstream access is closed on this replica, and the close is written as soon as the database answers');
    });
    return { window: windowReport(window) };
  });
};

function notRecorded(e: unknown, state: string): unknown {
  if (!(e instanceof RegistryError)) return e;
  return new RegistryError(e.kind, `${e.message} (${state})`, e.detail, e.headers);
}

/** Validates `{duration: "2h", note: "why"}` for opening a window now. */
export function windowRequest(duration: unknown, note: unknown): { durationMs: number; note: string } {
  if (typeof duration !== 'string') {
    throw badRequest('"duration" must be a string with a unit, e.g. {"duration": "2h", "note": "why"}');
  }
  let durationMs: number;
  try {
    durationMs = parseDuration(duration);
  } catch (e) {
    throw badRequest((e as Error).message);
  }
  if (!(durationMs > 0) || durationMs > MAX_MANUAL_WINDOW_MS) {
    throw badRequest(`a window must last more than 0 and at most 30d; got ${JSON.stringify(duration)}`);
  }
  if (typeof note !== 'string' || note.trim() === '') throw badRequest('"note" is required: say why upstream access is opened');
  return { durationMs, note: note.trim() };
}
