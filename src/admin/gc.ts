// POST /api/v1/gc: garbage collection in the running server (which keeps serving meanwhile); `{dryRun: true}`
// reports what would go and changes nothing. The answer is the run's report.
import type { FastifyPluginAsync } from 'fastify';
import type { GarbageCollector } from '../jobs/gc.js';
import { SCHEMAS } from './schemas.js';
import { API_PREFIX } from './request.js';

export const gcRoutes: FastifyPluginAsync<{ gc: GarbageCollector }> = async (app, { gc }) => {
  app.post<{ Body: { dryRun?: boolean } | null }>(`${API_PREFIX}/gc`, { schema: SCHEMAS.gc }, async (req) => {
    return gc.run({ dryRun: req.body?.dryRun === true });
  });
};
