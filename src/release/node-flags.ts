// The Node.js flags sluice runs under, wherever it is started: the release launcher, the image's entrypoint, and the
// test kit and bench that start `sluice serve` the way a host does.

/**
 * The young generation capped at Node 20's size (2 × 16 MiB semi-spaces). Node 24's V8 sizes it from the machine's
 * memory and, under the stress suite's 1,000 connections on a 24 GiB host, grew it to 128 MiB: up to ~100 MiB more
 * resident memory for no gain. It must be given on the command line: V8 fixes the heap's layout at start-up
 * (v8.setFlagsFromString afterwards changes nothing).
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16'];
