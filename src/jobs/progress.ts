// The progress port of the long jobs (sync, import, export, verify, gc): plain counts a job reports as it goes.
// How, or whether, they are shown is the caller's (the CLI draws a line on a terminal); nothing here knows terminals.

export interface JobProgress {
  /** What `done` and `total` count, plural: 'blobs', 'references', 'repositories'; '' when nothing is counted. */
  unit: string;
  done: number;
  total?: number;
  bytesDone: number;
  bytesTotal?: number;
  /** What is being worked on now: a reference, or a phase ("marking"). */
  current?: string;
}

export type ProgressPort = (p: JobProgress) => void;
