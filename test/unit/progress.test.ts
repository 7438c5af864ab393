// The progress line of long commands: what it says (done of total, bytes, rate, time left), that it is drawn only
// on a terminal (and not with --json), redrawn at most ten times a second, and cleared at the end.
import { describe, expect, it } from 'vitest';
import { formatDuration, progressLine, ProgressReporter, type ProgressStream } from '../../src/cli/progress.js';

const MiB = 1024 * 1024;

function fakeStream(isTTY: boolean): ProgressStream & { written: string[] } {
  const written: string[] = [];
  return { isTTY, columns: 80, written, write: (t: string) => written.push(t) };
}

describe('progressLine', () => {
  it('shows items done of total, bytes of total, the rate and the time left', () => {
    const line = progressLine('verify', { unit: 'blobs', done: 10, total: 40, bytesDone: 20 * MiB, bytesTotal: 80 * MiB, current: 'sha256:abc' }, 10_000, 200);
    expect(line).toBe('verify  10/40 blobs  20.0 MiB of 80.0 MiB  2.0 MiB/s  0:30 left  sha256:abc');
  });

  it('without a byte total the time left comes from the items; without any total, the time so far', () => {
    expect(progressLine('sync', { unit: 'references', done: 1, total: 4, bytesDone: 0 }, 5_000, 200)).toBe('sync  1/4 references  0:15 left');
    expect(progressLine('gc', { unit: '', done: 0, bytesDone: 0, current: 'running on the server' }, 65_000, 200)).toBe('gc  1:05 so far  running on the server');
  });

  it('is cut to the width', () => {
    const line = progressLine('import', { unit: 'blobs', done: 1, total: 2, bytesDone: 5, bytesTotal: 10, current: 'x'.repeat(300) }, 0, 60);
    expect(line.length).toBe(60);
    expect(line.endsWith('…')).toBe(true);
  });

  it('formats hours', () => {
    expect(formatDuration(3_725_000)).toBe('1:02:05');
    expect(formatDuration(59_400)).toBe('0:59');
  });
});

describe('ProgressReporter', () => {
  it('writes nothing when stderr is no terminal, or when quiet (--json)', () => {
    for (const [stream, quiet] of [[fakeStream(false), false], [fakeStream(true), true]] as const) {
      const r = new ProgressReporter('verify', stream, { quiet });
      r.update({ unit: 'blobs', done: 1, total: 1, bytesDone: 1 });
      r.done();
      expect(stream.written).toEqual([]);
      expect(r.enabled).toBe(false);
    }
  });

  it('on a terminal redraws in place at most every 100 ms, always draws the last step, and clears the line at the end', () => {
    let nowMs = 0;
    const stream = fakeStream(true);
    const r = new ProgressReporter('export', stream, { now: () => nowMs });
    const step = (done: number): void => r.update({ unit: 'blobs', done, total: 3, bytesDone: done, bytesTotal: 3 });
    step(0);
    nowMs = 50;
    step(1); // within 100 ms of the last draw: skipped
    nowMs = 150;
    step(2);
    nowMs = 160;
    step(3); // the last one: drawn whatever the time
    r.done();
    expect(stream.written.map((w) => w.replace('\r\x1b[K', '')).filter((w) => w !== '').map((w) => w.split('  ')[1])).toEqual(['0/3 blobs', '2/3 blobs', '3/3 blobs']);
    expect(stream.written.every((w) => w.startsWith('\r\x1b[K'))).toBe(true);
    expect(stream.written.at(-1)).toBe('\r\x1b[K');
  });
});
