// JSON schemas of every admin route's body and querystring, checked by fastify before a handler runs: strict
// types (the admin listener's ajv does not coerce), no unknown fields, required ones present. The message
// names the field at fault, e.g. `body.dryRun must be boolean` or `body has an unknown field "dryrun"`.
import type { FastifySchema } from 'fastify';

interface AjvError {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
}

const obj = (properties: Record<string, unknown>, required: string[] = []): Record<string, unknown> => ({
  type: 'object',
  properties,
  required,
  additionalProperties: false,
});
/** A route without a body still refuses one with fields in it; no body at all arrives as null. */
const NO_BODY = { type: ['object', 'null'], properties: {}, additionalProperties: false };
const NO_QUERY = obj({});
const STRING = { type: 'string' };
/** Every duration field is named `duration`, so describe() can say what one looks like. */
const DURATION = STRING;
const RULES = { type: 'array', items: STRING, minItems: 1 };

export const SCHEMAS = {
  none: { body: NO_BODY, querystring: NO_QUERY },
  getNone: { querystring: NO_QUERY },
  addRules: { body: obj({ rules: RULES, note: STRING }, ['rules']), querystring: NO_QUERY },
  removeRules: { body: obj({ rules: RULES }, ['rules']), querystring: NO_QUERY },
  importList: {
    body: {
      content: {
        'text/plain': { schema: STRING },
        'application/json': { schema: obj({ text: STRING, note: STRING }, ['text']) },
      },
    },
    querystring: obj({ note: STRING }),
  },
  denied: { querystring: obj({ format: { type: 'string', enum: ['json', 'commands'] } }) },
  openWindow: {
    // Text with a unit, as on the CLI ("2h"; checked by windowRequest): a bare number has no unit to trust.
    body: obj({ duration: DURATION, note: STRING }, ['duration', 'note']),
    querystring: NO_QUERY,
  },
  gc: {
    body: { ...obj({ dryRun: { type: 'boolean' } }), type: ['object', 'null'] },
    querystring: NO_QUERY,
  },
  sync: {
    body: { ...obj({ dryRun: { type: 'boolean' }, platforms: { type: 'array', items: STRING } }), type: ['object', 'null'] },
    querystring: NO_QUERY,
  },
} satisfies Record<string, FastifySchema>;

/** `/platforms/0` → `platforms[0]`. */
function fieldPath(where: string, instancePath: string): string {
  const parts = instancePath.split('/').filter((p) => p !== '');
  return parts.reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : `${acc}.${p}`), where);
}

function describe(e: AjvError, where: string): string {
  const at = fieldPath(where, e.instancePath);
  if (e.keyword === 'additionalProperties') return `${at} has an unknown field ${JSON.stringify(e.params.additionalProperty)}`;
  if (e.keyword === 'required') return `${at} is missing the required field ${JSON.stringify(e.params.missingProperty)}`;
  if (e.keyword === 'minItems') return `${at} must list at least ${String(e.params.limit)} item(s)`;
  if (e.keyword === 'type' && at.endsWith('.duration')) return `${at} must be a string with a unit, e.g. "45s", "90m", "2h" (a bare number is refused)`;
  if (e.keyword === 'enum' && Array.isArray(e.params.allowedValues)) return `${at} must be one of ${e.params.allowedValues.join(', ')}`;
  return `${at} ${e.message ?? 'is not valid'}`;
}

/** fastify's schemaErrorFormatter for the admin listener. */
export function formatSchemaErrors(errors: AjvError[], dataVar: string): Error {
  const text = errors.map((e) => describe(e, dataVar)).join('; ');
  return new Error(`invalid request: ${text}`);
}
