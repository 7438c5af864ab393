// Reading the Prometheus text exposition in tests.

/** The value of one series (labels in the order prom-client writes them), or 0 when it is absent. */
export function sample(text: string, series: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    if (line.slice(0, at) === series) return Number(line.slice(at + 1));
  }
  return 0;
}
