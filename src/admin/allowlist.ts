// /api/v1/allowlist: list, add, remove and import rules. Every batch is all or nothing.
import type { FastifyPluginAsync } from 'fastify';
import { AllowlistFileError, ConfigRuleError, InvalidRulesError, parseImageList, type Allowlist } from '../policy/allowlist.js';
import { RegistryError } from '../oci/errors.js';
import { SCHEMAS } from './schemas.js';
import { API_PREFIX, badRequest, who } from './request.js';

/** The shapes the route schemas (schemas.ts) have already checked. */
interface RulesBody {
  rules: string[];
  note?: string;
}
type ImportBody = string | { text: string; note?: string };

/** Every invalid rule with its reason; nothing of the batch was applied. */
function invalidRules(err: InvalidRulesError): RegistryError {
  const invalid = err.errors.map((e) => ({ rule: e.input, reason: e.reason }));
  const list = invalid.map((i) => `${JSON.stringify(i.rule)}: ${i.reason}`).join('; ');
  return badRequest(`${invalid.length} invalid rule(s), nothing was changed: ${list}`, { invalid });
}

/** A hand-broken allowlist.json: not the client's fault, so a 409 naming the file, never a 500. */
function brokenFile(e: AllowlistFileError, allowlist: Allowlist): RegistryError {
  const message = `allowlist file ${e.file} is not usable: ${e.problem}; nothing was changed (fix the file; until then the last good ${allowlist.list().length} rule(s) stay in force)`;
  return new RegistryError('ALLOWLIST_FILE_INVALID', message, { file: e.file, problem: e.problem });
}

async function withRules<T>(allowlist: Allowlist, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof InvalidRulesError) throw invalidRules(e);
    if (e instanceof AllowlistFileError) throw brokenFile(e, allowlist);
    if (e instanceof ConfigRuleError) throw new RegistryError('RULE_FROM_CONFIG', e.message, { rules: e.rules, configFile: e.configFile });
    throw e;
  }
}

export const allowlistRoutes: FastifyPluginAsync<{ allowlist: Allowlist }> = async (app, { allowlist }) => {
  // A broken file is no reason to hide the rules in force: they are listed, with what is wrong with the file.
  app.get(`${API_PREFIX}/allowlist`, { schema: SCHEMAS.getNone }, async () => {
    const problem = await allowlist.refresh();
    return { rules: allowlist.listing(), allowlistError: problem ?? null };
  });
  app.post<{ Body: RulesBody }>(`${API_PREFIX}/allowlist`, { schema: SCHEMAS.addRules }, async (req) => {
    const { rules, note } = req.body;
    return withRules(allowlist, () => allowlist.add(rules, { by: who(req), note }));
  });
  app.delete<{ Body: RulesBody }>(`${API_PREFIX}/allowlist`, { schema: SCHEMAS.removeRules }, async (req) => {
    return withRules(allowlist, () => allowlist.remove(req.body.rules, { by: who(req) }));
  });
  app.post<{ Body: ImportBody; Querystring: { note?: string } }>(`${API_PREFIX}/allowlist/import`, { schema: SCHEMAS.importList }, async (req) => {
    const body = req.body;
    const text = typeof body === 'string' ? body : body.text;
    const note = (typeof body === 'string' ? undefined : body.note) ?? req.query.note;
    const { rules, errors } = parseImageList(text);
    if (errors.length > 0) {
      const list = errors.map((e) => `line ${e.line} ${JSON.stringify(e.text)}: ${e.reason}`).join('; ');
      throw badRequest(`${errors.length} invalid line(s), nothing was added: ${list}`, { invalid: errors });
    }
    if (rules.length === 0) throw badRequest('the image list holds no references');
    const result = await withRules(allowlist, () => allowlist.add(rules, { by: who(req), note }));
    return { rules, ...result };
  });
};
