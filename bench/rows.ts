// One row of the benchmark's result table, shared by the report and the storm report: a metric per target, the
// ratios against the baselines, and the pass/fail checks.
import type { TargetKey } from './cases.js';

export interface Check {
  target: string;
  pass: boolean;
}

export interface Row {
  case: string;
  metric: string;
  cells: Partial<Record<TargetKey, { value: number; text: string }>>;
  vsRegistry?: number;
  vsBare?: number;
  checks: Check[];
  note?: string;
}
