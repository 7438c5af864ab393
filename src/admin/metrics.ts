// GET /metrics: the Prometheus text exposition of this instance's registry; on the admin listener behind its
// token, or on the optional `metrics.listen` listener without one (what a scraper on a private network wants).
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';

export interface MetricsSource {
  contentType: string;
  render(): Promise<string>;
}

export const metricsRoutes: FastifyPluginAsync<{ metrics: MetricsSource }> = async (app, { metrics }) => {
  app.get('/metrics', async (_req, reply) => reply.header('cache-control', 'no-store').type(metrics.contentType).send(await metrics.render()));
};

/** The bare metrics listener: /metrics and nothing else (everything else is the shared not-found answer). */
export async function registerMetricsListener(app: FastifyInstance, metrics: MetricsSource): Promise<void> {
  await app.register(metricsRoutes, { metrics });
}
