// Sync windows as configured: parse the `windows:` list (and durations), and answer for any instant whether
// access is open, when the open window closes and when the next one opens. Pure; time zones via Intl only.

export type DayName = 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat' | 'sun';

/** One weekly window, validated. Minutes are local wall-clock minutes since midnight in `timezone`. */
export interface WindowSpec {
  /** Days on which the window starts; a window that wraps past midnight belongs to the day it starts. */
  days: DayName[];
  startMin: number;
  /** 1..1440; equal to startMin means a full 24 hours; less than startMin wraps past midnight. */
  endMin: number;
  timezone: string;
}

/** `'always'` and `'never'` are literal schedules; an empty list is normalised to `'never'`. */
export type Schedule = 'always' | 'never' | readonly WindowSpec[];

const DAYS: readonly DayName[] = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']; // index = Date#getUTCDay()
const FULL_DAYS = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];
const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
/** The keys of one window (the config's key tree lists them under `windows`). */
export const WINDOW_KEYS = ['days', 'start', 'end', 'timezone'] as const;
const KEYS = new Set<string>(WINDOW_KEYS);

export function parseWindows(value: unknown, path = 'windows'): { windows: Schedule; errors: string[] } {
  // A missing key is the config default, which is the safe one: no upstream access.
  if (value === undefined || value === null || value === 'never') return { windows: 'never', errors: [] };
  if (value === 'always') return { windows: 'always', errors: [] };
  if (!Array.isArray(value)) {
    const got = typeof value === 'string' ? JSON.stringify(value) : typeof value;
    return { windows: 'never', errors: [`${path}: must be "always", "never" or a list of windows; got ${got}`] };
  }
  const errors: string[] = [];
  const windows: WindowSpec[] = [];
  value.forEach((item: unknown, i) => {
    const spec = parseWindow(item, `${path}[${i}]`, errors);
    if (spec) windows.push(spec);
  });
  // On any error the schedule is closed: a half-understood config must not open upstream access.
  if (errors.length > 0 || windows.length === 0) return { windows: 'never', errors };
  return { windows, errors };
}

function parseWindow(item: unknown, path: string, errors: string[]): WindowSpec | null {
  if (typeof item !== 'object' || item === null || Array.isArray(item)) {
    errors.push(`${path}: must be a mapping like { days: [sat], start: "02:00", end: "06:00", timezone: UTC }`);
    return null;
  }
  const obj = item as Record<string, unknown>;
  const before = errors.length;
  for (const key of Object.keys(obj)) {
    if (!KEYS.has(key)) errors.push(`${path}.${key}: unknown key (expected days, start, end, timezone)`);
  }
  const days = parseDays(obj.days, `${path}.days`, errors);
  const startMin = parseClock(obj.start, `${path}.start`, false, errors);
  const endMin = parseClock(obj.end, `${path}.end`, true, errors);
  const timezone = parseTimezone(obj.timezone, `${path}.timezone`, errors);
  if (errors.length > before || days === null || startMin === null || endMin === null || timezone === null) return null;
  return { days, startMin, endMin, timezone };
}

function parseDays(value: unknown, path: string, errors: string[]): DayName[] | null {
  if (value === undefined) return ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
  if (!Array.isArray(value) || value.length === 0) {
    errors.push(`${path}: must be a non-empty list of mon, tue, wed, thu, fri, sat, sun (omit it for every day)`);
    return null;
  }
  const out = new Set<DayName>();
  value.forEach((d: unknown, i) => {
    const lower = typeof d === 'string' ? d.trim().toLowerCase() : '';
    const day = DAYS.find((name, idx) => name === lower || FULL_DAYS[idx] === lower);
    if (day) out.add(day);
    else errors.push(`${path}[${i}]: unknown day ${JSON.stringify(d)} (expected mon, tue, wed, thu, fri, sat, sun)`);
  });
  return out.size > 0 ? [...out] : null;
}

function parseClock(value: unknown, path: string, isEnd: boolean, errors: string[]): number | null {
  if (value === undefined) {
    errors.push(`${path}: required, a time "HH:MM"`);
    return null;
  }
  // YAML 1.1 tools read an unquoted 02:00 as the number 120; say how to fix it rather than guess.
  const m = typeof value === 'string' ? /^(\d{1,2}):(\d{2})$/.exec(value.trim()) : null;
  const hours = m ? Number(m[1]) : NaN;
  const minutes = m ? Number(m[2]) : NaN;
  const max = isEnd ? 24 : 23;
  if (!m || hours > max || minutes > 59 || (hours === 24 && minutes !== 0)) {
    const hint = typeof value === 'string' ? '' : ' (quote it in YAML)';
    errors.push(`${path}: must be a time "HH:MM" from 00:00 to ${isEnd ? '24:00' : '23:59'}; got ${JSON.stringify(value)}${hint}`);
    return null;
  }
  return hours * 60 + minutes;
}

function parseTimezone(value: unknown, path: string, errors: string[]): string | null {
  if (value === undefined) return 'UTC';
  if (typeof value !== 'string' || value.trim() === '') {
    errors.push(`${path}: must be an IANA time zone name such as "Europe/Berlin"`);
    return null;
  }
  try {
    return formatter(value.trim()).resolvedOptions().timeZone;
  } catch {
    errors.push(`${path}: unknown time zone ${JSON.stringify(value)}`);
    return null;
  }
}

/** '90m', '2h', '1h30m', '45s', '1d', '500ms' → milliseconds. Units in descending order, each at most once. */
export function parseDuration(text: string): number {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/.exec(String(text).trim());
  if (!m || m.slice(1).every((g) => g === undefined)) {
    throw new Error(`invalid duration ${JSON.stringify(text)}: use a number with a unit, e.g. 45s, 90m, 2h, 1h30m, 1d`);
  }
  const [d, h, min, s, ms] = m.slice(1).map((g) => Number(g ?? 0));
  return (((d * 24 + h) * 60 + min) * 60 + s) * 1000 + ms;
}

// ---------------------------------------------------------------------------------------------------------------
// Time zone arithmetic with Intl only

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The wall clock in `timeZone` at instant `t`, expressed as if it were UTC (ms). */
function wallClock(t: number, timeZone: string): number {
  const p: Record<string, number> = {};
  for (const part of formatter(timeZone).formatToParts(new Date(t))) p[part.type] = Number(part.value);
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
}

/**
 * The instant at which the wall clock in `timeZone` reads `wall` (a UTC-encoded civil time).
 * Like Temporal's 'compatible' disambiguation: in a DST gap the time moves forward by the gap
 * (02:30 on a spring-forward day becomes 03:30), in an overlap the earlier instant wins.
 */
function instantOf(wall: number, timeZone: string): number {
  const before = wallClock(wall - DAY_MS, timeZone) - (wall - DAY_MS);
  const after = wallClock(wall + DAY_MS, timeZone) - (wall + DAY_MS);
  const valid = [wall - before, wall - after].filter((t) => wallClock(t, timeZone) === wall);
  return valid.length > 0 ? Math.min(...valid) : wall - before;
}

interface Interval {
  start: number;
  end: number;
}

/** Every occurrence of the schedule's windows overlapping [from, to], merged where they touch. */
function occurrences(windows: readonly WindowSpec[], from: number, to: number): Interval[] {
  const list: Interval[] = [];
  for (const w of windows) {
    // Start one local day early so a window that began yesterday and wraps past midnight is seen.
    const first = Math.floor(wallClock(from, w.timezone) / DAY_MS) * DAY_MS - DAY_MS;
    for (let day = first; ; day += DAY_MS) {
      if (!w.days.includes(DAYS[new Date(day).getUTCDay()])) continue;
      const start = instantOf(day + w.startMin * MINUTE_MS, w.timezone);
      if (start > to) break;
      const endDay = w.endMin <= w.startMin ? day + DAY_MS : day;
      const end = instantOf(endDay + w.endMin * MINUTE_MS, w.timezone);
      if (end > from) list.push({ start, end });
    }
  }
  list.sort((a, b) => a.start - b.start);
  const merged: Interval[] = [];
  for (const iv of list) {
    const last = merged[merged.length - 1];
    if (last && iv.start <= last.end) last.end = Math.max(last.end, iv.end);
    else merged.push({ ...iv });
  }
  return merged;
}

// A weekly schedule repeats every 7 local days, so a run of adjacent windows that has a gap at all ends
// within 8 days (7 + one 24 h window); a run longer than that covers the whole week and never closes.
// 16 days of lookahead covers such a run followed by the next opening, with room for DST shifts.
const HORIZON_MS = 16 * DAY_MS;
const NEVER_CLOSES_MS = 8 * DAY_MS;

function containing(windows: readonly WindowSpec[], t: number): Interval | undefined {
  return occurrences(windows, t, t + HORIZON_MS).find((iv) => iv.start <= t && t < iv.end);
}

export function isOpen(schedule: Schedule, now: Date): boolean {
  if (schedule === 'always') return true;
  if (schedule === 'never') return false;
  return containing(schedule, now.getTime()) !== undefined;
}

/**
 * When the window open at `now` closes (adjacent windows count as one); null when closed, for 'always',
 * and for a list of windows that covers the whole week (it never closes).
 */
export function currentEnd(schedule: Schedule, now: Date): Date | null {
  if (schedule === 'always' || schedule === 'never') return null;
  const iv = containing(schedule, now.getTime());
  if (!iv || iv.end - now.getTime() > NEVER_CLOSES_MS) return null;
  return new Date(iv.end);
}

/**
 * The next moment access opens: if closed at `now`, the start of the next window; if open, the start
 * of the first window after the current one closes. Null for 'never', 'always' and a never-closing list.
 */
export function nextOpen(schedule: Schedule, now: Date): Date | null {
  if (schedule === 'always' || schedule === 'never') return null;
  let t = now.getTime();
  if (containing(schedule, t)) {
    const end = currentEnd(schedule, now);
    if (!end) return null;
    t = end.getTime();
  }
  const next = occurrences(schedule, t, t + HORIZON_MS).find((iv) => iv.start >= t);
  return next ? new Date(next.start) : null;
}
