// Table tests for sync windows: parsing and validation, open/close/next across weeks, midnight and DST,
// parseDuration, and the manual window overlay.
import { describe, expect, it } from 'vitest';
import { currentEnd, isOpen, nextOpen, parseDuration, parseWindows, type Schedule } from '../../src/window/schedule.js';
import { WindowState, type ManualWindow } from '../../src/window/state.js';

function schedule(value: unknown): Schedule {
  const { windows, errors } = parseWindows(value);
  expect(errors).toEqual([]);
  return windows;
}

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

// 2024-03-29 is a Friday; 2024-03-31 and 2024-10-27 are the EU DST switch Sundays.
describe('schedule evaluation', () => {
  const weekend = [{ days: ['sat', 'sun'], start: '02:00', end: '06:00' }];
  const fridayNight = [{ days: ['fri'], start: '22:00', end: '02:00' }];
  const berlinSpring = [{ days: ['sun'], start: '01:00', end: '05:00', timezone: 'Europe/Berlin' }];
  const berlinGap = [{ days: ['sun'], start: '02:30', end: '04:00', timezone: 'Europe/Berlin' }];
  const berlinOverlap = [{ days: ['sun'], start: '02:30', end: '03:30', timezone: 'Europe/Berlin' }];
  const berlinOffice = [{ days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '09:00', end: '17:00', timezone: 'Europe/Berlin' }];
  const fullDayMonday = [{ days: ['mon'], start: '06:00', end: '06:00' }];
  const untilMidnight = [{ days: ['sat'], start: '22:00', end: '24:00' }];
  const chained = [
    { days: ['sat'], start: '20:00', end: '00:00' },
    { days: ['sun'], start: '00:00', end: '02:00' },
  ];
  const everyMinute = [{ start: '00:00', end: '00:00' }];
  const newYork = [{ days: ['Monday'], start: '23:00', end: '01:00', timezone: 'America/New_York' }];

  const cases: Array<[string, unknown, string, boolean, string | null, string | null]> = [
    // name, config, now, open, currentEnd, nextOpen
    ['weekend, inside', weekend, '2024-03-30T03:00:00Z', true, '2024-03-30T06:00:00.000Z', '2024-03-31T02:00:00.000Z'],
    ['weekend, at start (inclusive)', weekend, '2024-03-30T02:00:00Z', true, '2024-03-30T06:00:00.000Z', '2024-03-31T02:00:00.000Z'],
    ['weekend, at end (exclusive)', weekend, '2024-03-30T06:00:00Z', false, null, '2024-03-31T02:00:00.000Z'],
    ['weekend, friday', weekend, '2024-03-29T12:00:00Z', false, null, '2024-03-30T02:00:00.000Z'],
    ['weekend, sunday after', weekend, '2024-03-31T07:00:00Z', false, null, '2024-04-06T02:00:00.000Z'],
    ['wrap, friday evening', fridayNight, '2024-03-29T23:30:00Z', true, '2024-03-30T02:00:00.000Z', '2024-04-05T22:00:00.000Z'],
    ['wrap, saturday small hours belong to friday', fridayNight, '2024-03-30T01:00:00Z', true, '2024-03-30T02:00:00.000Z', '2024-04-05T22:00:00.000Z'],
    ['wrap, thursday night is not friday', fridayNight, '2024-03-28T23:00:00Z', false, null, '2024-03-29T22:00:00.000Z'],
    ['wrap, saturday night', fridayNight, '2024-03-30T22:30:00Z', false, null, '2024-04-05T22:00:00.000Z'],
    ['berlin spring forward: 01:00 CET..05:00 CEST is 3 h', berlinSpring, '2024-03-31T02:30:00Z', true, '2024-03-31T03:00:00.000Z', '2024-04-06T23:00:00.000Z'],
    ['berlin spring forward: closed at 05:00 CEST', berlinSpring, '2024-03-31T03:00:00Z', false, null, '2024-04-06T23:00:00.000Z'],
    ['berlin spring forward: opens 01:00 CET', berlinSpring, '2024-03-30T12:00:00Z', false, null, '2024-03-31T00:00:00.000Z'],
    ['berlin gap: 02:30 does not exist, opens 03:30 CEST', berlinGap, '2024-03-30T12:00:00Z', false, null, '2024-03-31T01:30:00.000Z'],
    ['berlin gap: closes 04:00 CEST', berlinGap, '2024-03-31T01:45:00Z', true, '2024-03-31T02:00:00.000Z', '2024-04-07T00:30:00.000Z'],
    ['berlin fall back: first 02:30 wins', berlinOverlap, '2024-10-26T12:00:00Z', false, null, '2024-10-27T00:30:00.000Z'],
    ['berlin fall back: 2 h long, ends 03:30 CET', berlinOverlap, '2024-10-27T02:00:00Z', true, '2024-10-27T02:30:00.000Z', '2024-11-03T01:30:00.000Z'],
    ['berlin summer office hours, 09:00 CEST', berlinOffice, '2024-07-01T07:00:00Z', true, '2024-07-01T15:00:00.000Z', '2024-07-02T07:00:00.000Z'],
    ['berlin summer office hours, 08:59 CEST', berlinOffice, '2024-07-01T06:59:00Z', false, null, '2024-07-01T07:00:00.000Z'],
    ['berlin winter office hours, friday evening', berlinOffice, '2024-01-05T17:00:00Z', false, null, '2024-01-08T08:00:00.000Z'],
    ['start == end is 24 h', fullDayMonday, '2024-04-02T05:59:00Z', true, '2024-04-02T06:00:00.000Z', '2024-04-08T06:00:00.000Z'],
    ['end 24:00 is next midnight', untilMidnight, '2024-03-30T23:59:00Z', true, '2024-03-31T00:00:00.000Z', '2024-04-06T22:00:00.000Z'],
    ['adjacent windows chain', chained, '2024-03-30T21:00:00Z', true, '2024-03-31T02:00:00.000Z', '2024-04-06T20:00:00.000Z'],
    ['every day all day never closes', everyMinute, '2024-03-30T21:00:00Z', true, null, null],
    ['new york, monday 23:00 EDT', newYork, '2024-04-02T03:30:00Z', true, '2024-04-02T05:00:00.000Z', '2024-04-09T03:00:00.000Z'],
    ['always', 'always', '2024-03-30T21:00:00Z', true, null, null],
    ['never', 'never', '2024-03-30T21:00:00Z', false, null, null],
    ['empty list is never', [], '2024-03-30T21:00:00Z', false, null, null],
  ];

  it.each(cases)('%s', (_name, config, now, open, end, next) => {
    const s = schedule(config);
    const at = new Date(now);
    expect(isOpen(s, at)).toBe(open);
    expect(iso(currentEnd(s, at))).toBe(end);
    expect(iso(nextOpen(s, at))).toBe(next);
  });

  it('normalises the forms', () => {
    expect(schedule([])).toBe('never');
    expect(schedule(undefined)).toBe('never');
    expect(schedule('always')).toBe('always');
    expect(schedule([{ start: '01:00', end: '02:00' }])).toEqual([
      { days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], startMin: 60, endMin: 120, timezone: 'UTC' },
    ]);
  });
});

describe('parseWindows validation', () => {
  const cases: Array<[string, unknown, string[]]> = [
    ['unknown word', 'sometimes', ['windows: must be "always", "never" or a list of windows; got "sometimes"']],
    ['number', 5, ['windows: must be "always", "never" or a list of windows; got number']],
    ['mapping instead of list', { start: '01:00' }, ['windows: must be "always", "never" or a list of windows; got object']],
    ['item not a mapping', ['02:00-06:00'], ['windows[0]: must be a mapping like { days: [sat], start: "02:00", end: "06:00", timezone: UTC }']],
    ['unknown key', [{ start: '01:00', end: '02:00', timzone: 'UTC' }], ['windows[0].timzone: unknown key (expected days, start, end, timezone)']],
    ['days not a list', [{ days: 'sat', start: '01:00', end: '02:00' }], ['windows[0].days: must be a non-empty list of mon, tue, wed, thu, fri, sat, sun (omit it for every day)']],
    ['days empty', [{ days: [], start: '01:00', end: '02:00' }], ['windows[0].days: must be a non-empty list of mon, tue, wed, thu, fri, sat, sun (omit it for every day)']],
    ['unknown day', [{ days: ['sat', 'caturday'], start: '01:00', end: '02:00' }], ['windows[0].days[1]: unknown day "caturday" (expected mon, tue, wed, thu, fri, sat, sun)']],
    ['start missing', [{ end: '02:00' }], ['windows[0].start: required, a time "HH:MM"']],
    ['end missing', [{ start: '02:00' }], ['windows[0].end: required, a time "HH:MM"']],
    ['start hour too big', [{ start: '24:00', end: '02:00' }], ['windows[0].start: must be a time "HH:MM" from 00:00 to 23:59; got "24:00"']],
    ['end past 24:00', [{ start: '01:00', end: '24:30' }], ['windows[0].end: must be a time "HH:MM" from 00:00 to 24:00; got "24:30"']],
    ['minutes too big', [{ start: '01:60', end: '02:00' }], ['windows[0].start: must be a time "HH:MM" from 00:00 to 23:59; got "01:60"']],
    ['YAML 1.1 sexagesimal', [{ start: 120, end: '04:00' }], ['windows[0].start: must be a time "HH:MM" from 00:00 to 23:59; got 120 (quote it in YAML)']],
    ['unknown time zone', [{ start: '01:00', end: '02:00', timezone: 'Mars/Base' }], ['windows[0].timezone: unknown time zone "Mars/Base"']],
    ['time zone not a string', [{ start: '01:00', end: '02:00', timezone: 1 }], ['windows[0].timezone: must be an IANA time zone name such as "Europe/Berlin"']],
    [
      'all problems at once',
      [{ start: '01:00', end: '02:00' }, { days: ['xyz'], start: 'noon', timezone: 'Mars/Base' }],
      [
        'windows[1].days[0]: unknown day "xyz" (expected mon, tue, wed, thu, fri, sat, sun)',
        'windows[1].start: must be a time "HH:MM" from 00:00 to 23:59; got "noon"',
        'windows[1].end: required, a time "HH:MM"',
        'windows[1].timezone: unknown time zone "Mars/Base"',
      ],
    ],
  ];

  it.each(cases)('%s', (_name, value, errors) => {
    const result = parseWindows(value);
    expect(result.errors).toEqual(errors);
    // Never half-open: an invalid config closes upstream access.
    expect(result.windows).toBe('never');
  });

  it('uses the given key path', () => {
    expect(parseWindows([{ start: 'x', end: '01:00' }], 'sync.windows').errors).toEqual([
      'sync.windows[0].start: must be a time "HH:MM" from 00:00 to 23:59; got "x"',
    ]);
  });
});

describe('parseDuration', () => {
  it.each([
    ['90m', 90 * 60_000],
    ['2h', 2 * 3_600_000],
    ['1h30m', 90 * 60_000],
    ['45s', 45_000],
    ['1d', 86_400_000],
    ['1d2h3m4s5ms', 93_784_005],
    ['500ms', 500],
    [' 10m ', 600_000],
  ])('%s → %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', '90', 'm', '1.5h', '30m1h', '-5m', '2 hours', '1h 30m', '5x'])('rejects %j', (text) => {
    expect(() => parseDuration(text)).toThrow(`invalid duration ${JSON.stringify(text)}: use a number with a unit`);
  });
});

describe('WindowState', () => {
  const weekend = schedule([{ days: ['sat', 'sun'], start: '02:00', end: '06:00' }]);

  function clockAt(iso: string): { now: () => Date; set: (iso: string) => void } {
    let t = new Date(iso);
    return { now: () => t, set: (v) => (t = new Date(v)) };
  }

  it('reports the schedule when no manual window is open', () => {
    const clock = clockAt('2024-03-29T12:00:00Z');
    const state = new WindowState(weekend, clock.now);
    expect(state.status()).toEqual({ open: false, until: null, nextOpen: new Date('2024-03-30T02:00:00Z'), source: null });
    clock.set('2024-03-30T03:00:00Z');
    expect(state.status()).toEqual({
      open: true,
      until: new Date('2024-03-30T06:00:00Z'),
      nextOpen: new Date('2024-03-31T02:00:00Z'),
      source: 'schedule',
    });
  });

  it('opens a bounded manual window, notifies, and closes it', () => {
    const clock = clockAt('2024-03-29T12:00:00Z');
    const state = new WindowState(weekend, clock.now);
    const seen: Array<ManualWindow | null> = [];
    state.onChange((m) => seen.push(m));
    const m = state.open(parseDuration('2h'), 'patch tuesday', 'alice');
    expect(m).toEqual({ openedAt: '2024-03-29T12:00:00.000Z', until: '2024-03-29T14:00:00.000Z', note: 'patch tuesday', who: 'alice' });
    expect(state.isOpen()).toBe(true);
    expect(state.status()).toEqual({
      open: true,
      until: new Date('2024-03-29T14:00:00Z'),
      nextOpen: new Date('2024-03-30T02:00:00Z'),
      source: 'manual',
      manual: m,
    });
    state.close();
    expect(state.isOpen()).toBe(false);
    expect(seen).toEqual([m, null]);
  });

  it('lets a manual window expire on its own', () => {
    const clock = clockAt('2024-03-29T12:00:00Z');
    const state = new WindowState('never', clock.now);
    state.open(60_000, '', 'bob');
    clock.set('2024-03-29T12:01:00Z');
    expect(state.status()).toEqual({ open: false, until: null, nextOpen: null, source: null });
  });

  it('chains a manual window into a scheduled one', () => {
    const clock = clockAt('2024-03-30T01:00:00Z');
    const state = new WindowState(weekend, clock.now);
    state.open(parseDuration('90m'), 'early', 'carol');
    expect(state.status().until).toEqual(new Date('2024-03-30T06:00:00Z'));
    expect(state.status().source).toBe('manual');
    clock.set('2024-03-30T05:00:00Z');
    state.open(parseDuration('3h'), 'late', 'carol');
    const s = state.status();
    expect([s.source, iso(s.until), iso(s.nextOpen)]).toEqual(['schedule', '2024-03-30T08:00:00.000Z', '2024-03-31T02:00:00.000Z']);
  });

  it('restores without notifying and reports always', () => {
    const state = new WindowState('always', () => new Date('2024-03-29T12:00:00Z'));
    let calls = 0;
    const off = state.onChange(() => calls++);
    const m: ManualWindow = { openedAt: '2024-03-29T11:00:00.000Z', until: '2024-03-29T13:00:00.000Z', note: 'n', who: 'w' };
    state.restore(m);
    expect(state.status()).toEqual({ open: true, until: null, nextOpen: null, source: 'always', manual: m });
    off();
    state.close();
    expect(calls).toBe(0);
  });

  it('refuses a non-positive duration', () => {
    const state = new WindowState('never');
    expect(() => state.open(0, '', 'x')).toThrow('window duration must be a positive number of milliseconds; got 0');
    expect(() => state.open(Number.NaN, '', 'x')).toThrow('positive');
  });
});
