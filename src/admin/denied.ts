// /api/v1/denied: the aggregated denied pulls, each with the command that would allow it; and clearing them.
import type { FastifyPluginAsync } from 'fastify';
import { suggestRule, type DeniedLog } from '../policy/denied.js';
import { SCHEMAS } from './schemas.js';
import { API_PREFIX } from './request.js';

export const deniedRoutes: FastifyPluginAsync<{ denied: DeniedLog }> = async (app, { denied }) => {
  app.get<{ Querystring: { format?: 'json' | 'commands' } }>(`${API_PREFIX}/denied`, { schema: SCHEMAS.denied }, async (req, reply) => {
    const entries = denied.list();
    if (req.query.format === 'commands') {
      reply.header('content-type', 'text/plain; charset=utf-8');
      return entries.map((e) => `${suggestRule(e)}\n`).join('');
    }
    return { entries: entries.map((e) => ({ ...e, command: suggestRule(e) })) };
  });
  app.delete(`${API_PREFIX}/denied`, { schema: SCHEMAS.none }, async () => {
    const cleared = denied.list().length;
    await denied.clear();
    return { cleared };
  });
};
