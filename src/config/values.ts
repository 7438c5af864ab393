// The small value parsers of the configuration: each checks one value, pushes any problem with its key path
// onto `p`, and returns a usable stand-in when the value is wrong.
import { parseDuration } from '../window/schedule.js';

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };

/** A byte count: a number, or "500GiB", "2TB", "750 MB". */
export function size(v: unknown, at: string, p: string[]): number | undefined {
  if (typeof v === 'number' && Number.isInteger(v) && v > 0) return v;
  const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v) : null;
  const unit = m ? SIZE_UNITS[(m[2] ?? '').toLowerCase()] : undefined;
  if (!m || unit === undefined || !(Number(m[1]) > 0)) {
    p.push(`${at}: must be a size such as 500GiB, 2TB or a number of bytes; got ${JSON.stringify(v)}`);
    return undefined;
  }
  return Math.floor(Number(m[1]) * unit);
}

export function address(v: unknown, at: string, p: string[]): { host: string; port: number } {
  const s = typeof v === 'number' ? `0.0.0.0:${v}` : str(v, at, p);
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    if (s) p.push(`${at}: must be HOST:PORT (e.g. 0.0.0.0:6000), got "${s}"`);
    return { host: '127.0.0.1', port: 0 };
  }
  const host = (m[1] ?? '').replace(/^\[|\]$/g, '') || '0.0.0.0';
  return { host, port };
}

export function duration(v: unknown, at: string, p: string[]): number {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v * 1000;
  try {
    return parseDuration(str(v, at, p));
  } catch (e) {
    p.push(`${at}: ${(e as Error).message}`);
    return 0;
  }
}

export function str(v: unknown, at: string, p: string[]): string {
  if (typeof v === 'string' && v.length > 0) return v;
  p.push(`${at}: ${v === undefined ? 'is required' : 'must be a non-empty string'}`);
  return '';
}

export function bool(v: unknown, at: string, p: string[]): boolean {
  if (typeof v === 'boolean') return v;
  p.push(`${at}: must be true or false`);
  return false;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
