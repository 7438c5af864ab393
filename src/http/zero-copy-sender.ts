// Which blob sender serves committed blobs, and the zero-copy one: Linux sendfile(2) through the sluice-sendfile
// addon (./sendfile/), file pages straight to the socket. blob-sender.ts's buffers serve everything else.
import { close, read } from 'node:fs';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { sendFileRange, type GrowingFile } from './blob-sender.js';

interface SendfileAddon {
  send(socketFd: number, fileFd: number, offset: number, length: number, done: (errno: number, sentBytes: number) => void): number;
  cancel(id: number): void;
  ECANCELED: number;
}

export type BlobSenderKind = 'sendfile' | 'buffers';

export interface BlobSender {
  kind: BlobSenderKind;
  /** Why the buffered sender is in use (absent for sendfile). */
  reason?: string;
  /** Bytes [start, end] of `fd` (which it closes) to `res`, whose head is written; resolves to the bytes sent. */
  send(fd: number, start: number, end: number, res: ServerResponse, growing?: GrowingFile): Promise<number>;
}

/** Sent through Node first: its write callback says the head is in the kernel before sendfile's first byte. */
const FIRST_BYTES = 64 * 1024;
/**
 * Smaller ranges keep the buffers: the hand-over to the addon's thread costs more than it saves on a short body
 * (bench case 2, 1 MiB blobs: 0.55–0.65 CPU-s per GB with sendfile, 0.47–0.49 with buffers; 64 MiB: 0.13 against 0.41).
 */
export const ZERO_COPY_MIN = 4 * 1024 * 1024;

const BUFFERS: BlobSender = { kind: 'buffers', send: sendFileRange };

let addon: Promise<SendfileAddon | string> | undefined;

/** Loads the addon once per process; a string says why it is not there. */
function loadAddon(): Promise<SendfileAddon | string> {
  addon ??= import('sluice-sendfile').then(
    (m) => (m.default as SendfileAddon),
    (e: unknown) => `the sluice-sendfile addon did not load (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`,
  );
  return addon;
}

/**
 * The sender for this app: sendfile on Linux when the addon loaded and `zeroCopy` is on (SLUICE_SENDFILE=off turns
 * it off, for tests and the bench), else the buffered one, with the reason.
 */
export async function blobSender(zeroCopy = process.env.SLUICE_SENDFILE !== 'off'): Promise<BlobSender> {
  if (!zeroCopy) return { ...BUFFERS, reason: 'turned off (SLUICE_SENDFILE=off)' };
  if (process.platform !== 'linux') return { ...BUFFERS, reason: `sendfile(2) is Linux only (${process.platform})` };
  const a = await loadAddon();
  if (typeof a === 'string') return { ...BUFFERS, reason: a };
  return { kind: 'sendfile', send: (fd, start, end, res, growing) => (growing ? sendFileRange(fd, start, end, res, growing) : sendZeroCopy(a, fd, start, end, res)) };
}

/** The descriptor under a plain TCP socket; none for TLS (bytes must go through OpenSSL) or a closed socket. */
function plainFd(socket: Socket): number | undefined {
  if (socket instanceof TLSSocket || (socket as Socket & { encrypted?: boolean }).encrypted === true) return undefined;
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * The head and the first FIRST_BYTES through Node, the rest by sendfile. From the first write's callback until
 * res.end() nothing else writes to this socket (a pipelined response waits for this one's end), so the bytes stay
 * in order. A pipelined response still queued (res.socket unset), TLS, and ranges under ZERO_COPY_MIN take the buffered path.
 */
async function sendZeroCopy(a: SendfileAddon, fd: number, start: number, end: number, res: ServerResponse): Promise<number> {
  const socket = res.req.socket;
  if (end - start + 1 < ZERO_COPY_MIN || res.socket !== socket || plainFd(socket) === undefined) return sendFileRange(fd, start, end, res);
  res.flushHeaders();
  const first = await writeFirst(fd, start, socket, res).catch((e: unknown) => e as Error);
  if (first instanceof Error || first === 'gone') {
    close(fd, () => undefined);
    if (first instanceof Error) res.destroy(first);
    return 0;
  }
  const rest = start + FIRST_BYTES;
  const socketFd = plainFd(socket);
  // Defensive: something queued behind our write would be overtaken by sendfile's bytes; the buffers keep order.
  if (socketFd === undefined || socket.destroyed || socket.writableLength > 0) return FIRST_BYTES + (await sendFileRange(fd, rest, end, res));
  return FIRST_BYTES + (await sendRest(a, socketFd, fd, rest, end, res));
}

/** Reads and writes the first chunk; 'written' once the socket's write called back, 'gone' if the client left. */
async function writeFirst(fd: number, start: number, socket: Socket, res: ServerResponse): Promise<'written' | 'gone'> {
  const buf = Buffer.allocUnsafe(FIRST_BYTES);
  const n = await new Promise<number>((resolve, reject) => read(fd, buf, 0, FIRST_BYTES, start, (e, got) => (e ? reject(e) : resolve(got))));
  if (n < FIRST_BYTES) throw new Error('blob file is shorter than its recorded size');
  return new Promise((resolve) => {
    const gone = (): void => finish('gone');
    const finish = (how: 'written' | 'gone'): void => {
      socket.off('close', gone);
      res.off('close', gone);
      resolve(how);
    };
    socket.once('close', gone);
    res.once('close', gone);
    socket.write(buf, (e) => finish(e ? 'gone' : 'written'));
  });
}

/** Hands the rest to the addon's thread; a connection that closes cancels it (the thread then closes its duplicates). */
function sendRest(a: SendfileAddon, socketFd: number, fd: number, start: number, end: number, res: ServerResponse): Promise<number> {
  const socket = res.req.socket;
  return new Promise<number>((resolve) => {
    let id: number | undefined;
    const cancel = (): void => {
      if (id !== undefined) a.cancel(id);
    };
    const done = (errno: number, sent: number): void => {
      socket.off('close', cancel);
      res.off('close', cancel);
      close(fd, () => undefined);
      if (errno === 0) res.end();
      else if (errno !== a.ECANCELED) res.destroy(Object.assign(new Error(`sendfile failed (errno ${errno})`), { errno }));
      resolve(sent);
    };
    try {
      id = a.send(socketFd, fd, start, end - start + 1, done);
    } catch {
      resolve(sendFileRange(fd, start, end, res));
      return;
    }
    socket.once('close', cancel);
    res.once('close', cancel);
  });
}
