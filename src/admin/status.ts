// GET /api/v1/status: the report jobs/status.ts builds, with the allowlist re-read first; GET /api/v1/coverage:
// the readiness report (jobs/coverage.ts) of every rule.
import type { FastifyPluginAsync } from 'fastify';
import { coverageReport } from '../jobs/coverage.js';
import { statusReport, type StatusParts } from '../jobs/status.js';
import type { Allowlist } from '../policy/allowlist.js';
import { SCHEMAS } from './schemas.js';
import { API_PREFIX } from './request.js';

export type StatusRouteDeps = StatusParts & { allowlist: Allowlist };

export const statusRoutes: FastifyPluginAsync<StatusRouteDeps> = async (app, parts) => {
  app.get(`${API_PREFIX}/status`, { schema: SCHEMAS.getNone }, async () => {
    // The count and any file problem as of now; a database that fails leaves the rules in force (and status says why).
    await parts.allowlist.refresh().catch(() => undefined);
    return statusReport(parts);
  });
  app.get(`${API_PREFIX}/coverage`, { schema: SCHEMAS.getNone }, async () => {
    await parts.allowlist.refresh();
    return coverageReport(parts.store, ruleTexts(parts.allowlist), { platforms: parts.config.platforms, signer: parts.signer });
  });
};

export const ruleTexts = (allowlist: Pick<Allowlist, 'list'>): string[] => allowlist.list().map((r) => r.rule);
