// The readiness report as the metrics see it: rule counts by state, from a report at most `maxAgeMs` old, so a
// scrape every 15 s does not walk the whole store each time; concurrent scrapes share one report.
import type { ReadinessSource } from '../metrics/ports.js';
import type { CoverageReport } from './coverage.js';

export function cachedReadiness(report: () => Promise<CoverageReport>, maxAgeMs = 60_000, now: () => number = Date.now): ReadinessSource {
  let last: { at: number; summary: CoverageReport['summary'] } | undefined;
  let pending: Promise<CoverageReport['summary']> | undefined;
  return async () => {
    if (!last || now() - last.at >= maxAgeMs) {
      pending ??= report().then((r) => {
        last = { at: now(), summary: r.summary };
        return r.summary;
      }).finally(() => {
        pending = undefined;
      });
      // A report under way for a scrape that has an older answer: the older one, rather than waiting.
      if (!last) await pending;
      else pending.catch(() => undefined);
    }
    const s = last?.summary ?? { complete: 0, incomplete: 0, missing: 0, empty: 0 };
    return { complete: s.complete, incomplete: s.incomplete, missing: s.missing, empty: s.empty };
  };
}
