// The help renderer and the "did you mean" rule, in process: every help fits the width it is given (a narrow
// terminal stacks the columns), and a typo of a command or option finds its nearest name while unrelated words find none.
import { describe, expect, it } from 'vitest';
import { closest, editDistance } from '../../src/cli/args.js';
import { COMMANDS, INTRO } from '../../src/cli/command-table.js';
import { helpText, helpWidth, leaves, wrap } from '../../src/cli/help.js';

describe('help text', () => {
  const paths = [[], ...Object.keys(COMMANDS).filter((n) => !COMMANDS[n]?.hidden).map((n) => [n]), ...leaves(COMMANDS).map(([p]) => p)];

  it.each([40, 60, 80, 100])('every help fits in %i columns', (width) => {
    for (const path of paths) {
      for (const line of helpText(COMMANDS, path, width, INTRO).split('\n')) expect(line.length, `${path.join(' ')}: "${line}"`).toBeLessThanOrEqual(width);
    }
  });

  it('the width is the terminal\'s, at most 100; 100 when not a terminal', () => {
    expect(helpWidth({ isTTY: false, columns: 300 })).toBe(100);
    expect(helpWidth({})).toBe(100);
    expect(helpWidth({ isTTY: true, columns: 72 })).toBe(72);
    expect(helpWidth({ isTTY: true, columns: 250 })).toBe(100);
    expect(helpWidth({ isTTY: true, columns: 20 })).toBe(40);
  });

  it('wrap breaks between words only', () => {
    expect(wrap('aaa bbb ccc ddd', 7)).toEqual(['aaa bbb', 'ccc ddd']);
    expect(wrap('averyveryverylongword x', 5)).toEqual(['averyveryverylongword', 'x']);
  });
});

describe('did you mean', () => {
  const commands = Object.keys(COMMANDS);

  it.each([
    ['stauts', 'status'], ['sycn', 'sync'], ['exprot', 'export'], ['verfy', 'verify'], ['alow', 'allow'], ['windw', 'window'],
  ])('%s → %s', (typo, meant) => {
    expect(closest(typo, commands)).toBe(meant);
  });

  it('options: --jsno → json, --dryrun → dry-run, --plat → platform', () => {
    expect(closest('jsno', ['json', 'dry-run', 'platform'])).toBe('json');
    expect(closest('dryrun', ['json', 'dry-run', 'platform'])).toBe('dry-run');
    expect(closest('plat', ['json', 'dry-run', 'platform'])).toBe('platform');
  });

  it('nothing close, no suggestion', () => {
    expect(closest('frobnicate', commands)).toBeUndefined();
    expect(closest('x', ['json', 'repair'])).toBeUndefined();
  });

  it('edit distance counts a swap of neighbours as one edit', () => {
    expect(editDistance('stauts', 'status')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('kitten', 'sitting')).toBe(3);
  });
});
