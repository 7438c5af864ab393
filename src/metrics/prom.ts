// The parts of prom-client sluice loads, and when: the registry and the two metric kinds at start, the default
// metrics (process_*, nodejs_*) only when first scraped. prom-client's index loads every part at once.
import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';

// prom-client's index also requires the default metrics (which pull in @opentelemetry/api, ~50 modules), the
// Pushgateway (http, https, zlib) and the cluster aggregator: ~40 ms of start-up that no listener needs.
// Its files are CommonJS without an exports map; test/unit/prom.test.ts checks they are the index's own classes.
const load = createRequire(import.meta.url);

export const Registry = load('prom-client/lib/registry.js') as typeof PromClient.Registry;
export type Registry = PromClient.Registry;
export const Counter = load('prom-client/lib/counter.js') as typeof PromClient.Counter;
export type Counter<T extends string = string> = PromClient.Counter<T>;
export const Gauge = load('prom-client/lib/gauge.js') as typeof PromClient.Gauge;
export type Gauge<T extends string = string> = PromClient.Gauge<T>;
export type LabelValues<T extends string> = PromClient.LabelValues<T>;

/** prom-client's collectDefaultMetrics, loaded on first use. */
export function collectDefaultMetrics(config: PromClient.DefaultMetricsCollectorConfiguration<PromClient.RegistryContentType>): void {
  (load('prom-client/lib/defaultMetrics.js') as typeof PromClient.collectDefaultMetrics)(config);
}
