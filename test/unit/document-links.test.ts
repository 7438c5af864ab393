// Every relative link in the repository's documents leads somewhere: the file exists and, with a #fragment, the
// file has a heading of that slug (GitHub's rule). Sections moved between documents stay one click away.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { describe, expect, it } from 'vitest';

const DOCUMENTS = [
  'README.md', 'config/README.md', 'src/README.md', 'src/cli/README.md', 'test/README.md', 'bench/README.md',
  ...readdirSync('config/guides').filter((f) => f.endsWith('.md')).map((f) => join('config/guides', f)),
];

/** GitHub's heading anchor: lower case, punctuation dropped (hyphens and underscores kept), spaces to hyphens. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/ /g, '-');
}

function anchorsOf(markdown: string): Set<string> {
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = fenced ? null : /^#{1,6} (.+)$/.exec(line);
    if (m) out.add(slug(m[1] ?? ''));
  }
  return out;
}

/** Relative links outside code: `[text](target)`. */
function linksOf(markdown: string): string[] {
  const prose = markdown.replace(/^```[\s\S]*?^```$/gm, '');
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1] ?? '').filter((t) => !/^[a-z]+:/.test(t));
}

describe('document links', () => {
  for (const doc of DOCUMENTS) {
    it(`${doc}: every relative link names an existing file and heading`, () => {
      const broken: string[] = [];
      for (const link of linksOf(readFileSync(doc, 'utf8'))) {
        const [path = '', fragment] = link.split('#');
        const target = path === '' ? doc : normalize(join(dirname(doc), path));
        if (!existsSync(target)) {
          broken.push(`${link}: no file ${target}`);
          continue;
        }
        if (fragment !== undefined && target.endsWith('.md') && !anchorsOf(readFileSync(target, 'utf8')).has(fragment)) {
          broken.push(`${link}: no heading #${fragment} in ${target}`);
        }
      }
      expect(broken).toEqual([]);
    });
  }
});

describe('README.md as a front page', () => {
  const readme = readFileSync('README.md', 'utf8');

  it('is at most 350 lines', () => {
    expect(readme.split('\n').length).toBeLessThanOrEqual(350);
  });

  it('links every one of its sections from its contents', () => {
    const contents = readme.split(/^## /m).find((s) => s.startsWith('Contents')) ?? '';
    const sections = [...readme.matchAll(/^##+ (.+)$/gm)].map((m) => slug(m[1] ?? '')).filter((s) => s !== 'contents');
    expect(sections.filter((s) => !contents.includes(`(#${s})`))).toEqual([]);
  });

  it('names no test file in operator text (README and the operator guides)', () => {
    const operatorDocs = DOCUMENTS.filter((d) => d === 'README.md' || d.startsWith('config/'));
    const named = operatorDocs.flatMap((d) => [...readFileSync(d, 'utf8').matchAll(/[\w/.-]+\.test\.ts/g)].map((m) => `${d}: ${m[0]}`));
    expect(named).toEqual([]);
  });
});
