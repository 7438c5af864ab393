// src/metrics/prom.ts loads prom-client's files one by one (its index loads the default metrics and more at once):
// they must be the very classes the index exports, and the default metrics must appear with the first scrape.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import type * as PromClient from 'prom-client';
import { Counter, Gauge, Registry } from '../../src/metrics/prom.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { sample } from '../helpers/metrics-text.js';

describe('prom-client, part by part', () => {
  it('gives the index’s own Registry, Counter and Gauge (a prom-client that moved its files fails here)', () => {
    const index = createRequire(import.meta.url)('prom-client') as typeof PromClient;
    expect(Registry).toBe(index.Registry);
    expect(Counter).toBe(index.Counter);
    expect(Gauge).toBe(index.Gauge);
  });

  it('registers the process_* and nodejs_* series at the first scrape, without the counter-named gauges', async () => {
    const metrics = new Metrics();
    const text = await metrics.render();
    expect(text).toContain('# TYPE process_cpu_seconds_total counter');
    expect(text).toContain('# TYPE nodejs_eventloop_lag_seconds gauge');
    expect(text).toContain('# TYPE nodejs_gc_duration_seconds histogram');
    expect(sample(text, 'process_start_time_seconds')).toBeGreaterThan(0);
    expect(text).not.toContain('nodejs_active_handles_total');
    // A second scrape registers nothing twice (prom-client would throw on a duplicate name).
    expect(await metrics.render()).toContain('process_cpu_seconds_total');
  });

  it('registers none of them when told not to', async () => {
    expect(await new Metrics({ defaultMetrics: false }).render()).not.toContain('process_cpu_seconds_total');
  });
});
