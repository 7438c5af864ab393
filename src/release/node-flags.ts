// The Node.js flags sluice runs under, wherever it is started: the release launcher, the image's entrypoint, and the
// test kit and bench that start `sluice serve` the way a host does.

/**
 * The young generation capped at Node 20's size. Node 24's V8 sizes it from the machine's memory — up to 2 × 64 MiB
 * semi-spaces on a host with 16 GiB or more — and under many connections grows it that far: ~100 MiB more resident
 * memory for no gain (the stress suite's 1,000 connections peaked at 528 MiB on Node 24 against 359 MiB on Node 20).
 * It must be given on the command line: V8 fixes the heap's layout when the process starts.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16'];
