// What every admin resource shares: the path prefix, who made a change, and the 400 answer.
import type { FastifyRequest } from 'fastify';
import { RegistryError } from '../oci/errors.js';

export const API_PREFIX = '/api/v1';
export const USER_HEADER = 'x-sluice-user';

/** Who made a change: the X-Sluice-User header (the CLI sends the login name) or 'admin-api'. */
export function who(req: FastifyRequest): string {
  const v = req.headers[USER_HEADER];
  const s = typeof v === 'string' ? v.trim() : '';
  return s !== '' && s.length <= 100 && /^[\x20-\x7e]+$/.test(s) ? s : 'admin-api';
}

export function badRequest(message: string, detail?: unknown): RegistryError {
  return new RegistryError('ADMIN_INVALID_REQUEST', message, detail);
}
