// The allowlist file's content checked as a whole: every problem is reported at once, so an operator
// fixing a hand-edited file sees all of them.
import { parseRule, RuleError, type RuleSpec } from './rules.js';

export interface RuleRecord {
  /** Canonical rule text (RuleSpec.text). */
  rule: string;
  note?: string;
  addedBy: string;
  /** ISO 8601. */
  addedAt: string;
}

/** Every rule of a batch that does not parse; nothing of the batch was applied. */
export class InvalidRulesError extends Error {
  constructor(readonly errors: RuleError[]) {
    super(errors.map((e) => e.message).join('; '));
    this.name = 'InvalidRulesError';
  }
}

/**
 * Rules the config's `allowlist:` seeds come back at every start, so removing one here would be a lie: the batch
 * is refused, nothing of it removed, and the operator told to edit the config instead.
 */
export class ConfigRuleError extends Error {
  constructor(
    readonly rules: string[],
    readonly configFile: string,
  ) {
    const where = configFile === '' ? "the config's allowlist:" : `allowlist: in ${configFile}`;
    super(`${rules.join(', ')} ${rules.length === 1 ? 'comes' : 'come'} from ${where} and would be back at the next start; remove ${rules.length === 1 ? 'it' : 'them'} there and restart sluice (nothing was removed)`);
    this.name = 'ConfigRuleError';
  }
}

/** The store file cannot be used as it is; sluice must not start with an empty or partial list. */
export class AllowlistFileError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`allowlist file ${file} is not usable: ${problem} (fix or move it; sluice will not run with a partial list)`);
    this.name = 'AllowlistFileError';
  }
}

export function parseAll(rules: string[]): RuleSpec[] {
  const errors: RuleError[] = [];
  const specs: RuleSpec[] = [];
  for (const text of rules) {
    try {
      specs.push(parseRule(text));
    } catch (err) {
      if (!(err instanceof RuleError)) throw err;
      errors.push(err);
    }
  }
  if (errors.length > 0) throw new InvalidRulesError(errors);
  return specs;
}

export interface Entry {
  spec: RuleSpec;
  record: RuleRecord;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Checks the whole file; reports every problem at once. Duplicate keys keep the first record. */
export function validate(raw: unknown): { entries: Entry[]; problems: string[] } {
  if (!isObject(raw)) return { entries: [], problems: ['expected a JSON object {"version":1,"rules":[...]}'] };
  const problems: string[] = [];
  if (raw.version !== undefined && raw.version !== 1) problems.push(`unsupported version ${JSON.stringify(raw.version)}`);
  if (!Array.isArray(raw.rules)) return { entries: [], problems: [...problems, '"rules" must be an array'] };
  const entries: Entry[] = [];
  const keys = new Set<string>();
  raw.rules.forEach((item: unknown, i) => {
    const where = `rules[${i}]`;
    if (!isObject(item)) return problems.push(`${where}: expected an object`);
    const { rule, note, addedBy, addedAt } = item;
    if (typeof rule !== 'string') return problems.push(`${where}.rule: expected a string`);
    if (typeof addedBy !== 'string') return problems.push(`${where}.addedBy: expected a string`);
    if (typeof addedAt !== 'string' || Number.isNaN(Date.parse(addedAt))) {
      return problems.push(`${where}.addedAt: expected an ISO date`);
    }
    if (note !== undefined && typeof note !== 'string') return problems.push(`${where}.note: expected a string`);
    let spec: RuleSpec;
    try {
      spec = parseRule(rule);
    } catch (err) {
      if (!(err instanceof RuleError)) throw err;
      return problems.push(`${where}.rule ${JSON.stringify(rule)}: ${err.reason}`);
    }
    if (keys.has(spec.key)) return;
    keys.add(spec.key);
    const record: RuleRecord = { rule: spec.text, addedBy, addedAt, ...(note === undefined ? {} : { note }) };
    entries.push({ spec, record });
  });
  return { entries, problems };
}

