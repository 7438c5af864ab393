// The YAML examples of the documents parse with the config validator and agree with config/sluice.yaml: each is
// read as an overlay on it, and the README's minimal config means exactly what config/sluice.yaml means.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { validateConfig } from '../../src/config/config.js';
import { CONFIG_FILE as FILE, configProblems } from '../helpers/config-problems.js';


const DOCUMENTS = ['README.md', 'config/README.md', ...readdirSync('config/guides').filter((f) => f.endsWith('.md')).map((f) => join('config/guides', f))];
const DEFAULT = parseYaml(readFileSync('config/sluice.yaml', 'utf8')) as Record<string, unknown>;

function yamlBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((m) => m[1] ?? '');
}

/** A Talos machine config or document, not a sluice config. */
function isTalos(doc: Record<string, unknown>): boolean {
  return 'machine' in doc || 'apiVersion' in doc || 'kind' in doc;
}


describe('the YAML examples of the documents', () => {
  for (const file of DOCUMENTS) {
    const blocks = yamlBlocks(readFileSync(file, 'utf8'));
    blocks.forEach((text, i) => {
      it(`${file}, example ${i + 1}: valid, laid over config/sluice.yaml`, () => {
        for (const part of parseAllDocuments(text)) {
          expect(part.errors, 'YAML errors').toEqual([]);
          const doc = part.toJS() as Record<string, unknown>;
          if (!isTalos(doc)) expect(configProblems({ ...DEFAULT, ...doc }, FILE)).toEqual([]);
        }
      });
    });
  }

  it("README's minimal config means exactly what config/sluice.yaml means", () => {
    const readme = readFileSync('README.md', 'utf8');
    const section = readme.split(/^## /m).find((s) => s.startsWith('A minimal config')) ?? '';
    const [minimal] = yamlBlocks(section);
    expect(minimal, 'README.md has a yaml block under "## A minimal config"').toBeDefined();
    expect(validateConfig(parseYaml(minimal ?? ''), FILE)).toEqual(validateConfig(DEFAULT, FILE));
  });

  it("config/README.md's full example, its comments taken away, is config/sluice.yaml", () => {
    const [full] = yamlBlocks(readFileSync('config/README.md', 'utf8'));
    expect(validateConfig(parseYaml(full ?? ''), FILE)).toEqual(validateConfig(DEFAULT, FILE));
  });
});
