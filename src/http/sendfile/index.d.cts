/** Called once per transfer: errno 0 when every byte went to the socket; ECANCELED after cancel(). */
export type Done = (errno: number, sentBytes: number) => void;
/**
 * Sends `length` bytes of `fileFd` from `offset` to `socketFd` on the addon's own thread. Both descriptors are
 * duplicated first (the caller may close its own at any time); returns the transfer's id for cancel().
 */
export declare function send(socketFd: number, fileFd: number, offset: number, length: number, done: Done): number;
/** Stops a transfer: its descriptors are closed and `done` gets ECANCELED (unless it already finished). */
export declare function cancel(id: number): void;
/** ECANCELED on this system, to tell a cancel from a failure. */
export declare const ECANCELED: number;
