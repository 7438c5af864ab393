// What config validation says is wrong with a document: its ConfigError's problems (none for a valid document).
import { ConfigError, validateConfig } from '../../src/config/config.js';

export const CONFIG_FILE = '/etc/sluice/sluice.yaml';

export function configProblems(doc: unknown, file = CONFIG_FILE): string[] {
  try {
    validateConfig(doc, file);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}
