// The progress line of long commands: done of total, bytes, rate and time left, redrawn in place on stderr when
// stderr is a terminal (as skopeo and talosctl do) and silent otherwise, so pipes and logs get only the result.
import type { JobProgress } from '../jobs/progress.js';
import { formatBytes } from './commands.js';

export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

const REDRAW_MS = 100;


/** `m:ss` (or `h:mm:ss`) for a time left. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const [h, m, sec] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const two = (n: number): string => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}

/** The line for `p`, `elapsedMs` into the job: `verify  12/40 blobs  1.2 GiB of 3.0 GiB  85.0 MiB/s  0:21 left  …`. */
export function progressLine(label: string, p: JobProgress, elapsedMs: number, width: number): string {
  const parts = [label, ...(p.unit ? [`${p.done}${p.total === undefined ? '' : `/${p.total}`} ${p.unit}`] : [])];
  if (p.bytesDone > 0 || p.bytesTotal) parts.push(p.bytesTotal ? `${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}` : formatBytes(p.bytesDone));
  const seconds = elapsedMs / 1000;
  const rate = seconds >= 0.5 ? p.bytesDone / seconds : 0;
  if (rate > 0) parts.push(`${formatBytes(rate)}/s`);
  let leftMs: number | undefined;
  if (p.bytesTotal && rate > 0) leftMs = ((p.bytesTotal - p.bytesDone) / rate) * 1000;
  else if (p.total && p.done > 0 && seconds >= 0.5) leftMs = (elapsedMs * (p.total - p.done)) / p.done;
  if (leftMs !== undefined) parts.push(`${formatDuration(leftMs)} left`);
  else if (seconds >= 1) parts.push(`${formatDuration(elapsedMs)} so far`);
  if (p.current) parts.push(p.current);
  const line = parts.join('  ');
  return line.length > width ? `${line.slice(0, Math.max(0, width - 1))}…` : line;
}

/** One job's line: `update` as the job reports, `done` when it ends (clears the line). */
export class ProgressReporter {
  private readonly startMs: number;
  private lastDrawMs = -Infinity;
  private drawn = false;
  readonly enabled: boolean;

  constructor(
    private readonly label: string,
    private readonly stream: ProgressStream = process.stderr,
    opts: { quiet?: boolean; now?: () => number } = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.startMs = this.now();
    this.enabled = stream.isTTY === true && opts.quiet !== true;
  }

  private readonly now: () => number;

  readonly update = (p: JobProgress): void => {
    if (!this.enabled) return;
    const nowMs = this.now();
    const last = p.total !== undefined && p.done >= p.total;
    if (!last && nowMs - this.lastDrawMs < REDRAW_MS) return;
    this.lastDrawMs = nowMs;
    this.drawn = true;
    this.stream.write(`\r\x1b[K${progressLine(this.label, p, nowMs - this.startMs, (this.stream.columns || 80) - 1)}`);
  };

  done(): void {
    if (this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }
}
