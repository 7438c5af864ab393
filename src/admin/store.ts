// POST /api/v1/store/refresh: `sluice import` (another process) wrote tags and manifests; forget what was
// memoised about them.
import type { FastifyPluginAsync } from 'fastify';
import type { Store } from '../store/store.js';
import { SCHEMAS } from './schemas.js';
import { API_PREFIX } from './request.js';

export const storeRoutes: FastifyPluginAsync<{ store: Store }> = async (app, { store }) => {
  app.post(`${API_PREFIX}/store/refresh`, { schema: SCHEMAS.none }, async () => {
    store.invalidate();
    return { refreshed: true };
  });
};
