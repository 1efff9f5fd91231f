/**
 * Raw HTTP/2 (RFC 9113) over a plain TCP socket, for tests of peers that do
 * what node:http2 will not: ignore the server's SETTINGS, open more streams
 * than allowed, or never send a request at all.
 *
 * Only what such tests need: frames out, HPACK literals without Huffman
 * coding out (RFC 7541 §6.2.2), and frames in, unparsed but for their header.
 */
import net from "node:net";

/** The client connection preface. */
export const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** Frame types (RFC 9113 §6). */
export const FrameType = {
  data: 0x0,
  headers: 0x1,
  rstStream: 0x3,
  settings: 0x4,
  ping: 0x6,
  goaway: 0x7,
  windowUpdate: 0x8,
} as const;

/** SETTINGS identifiers (RFC 9113 §6.5.2). */
export const Setting = { maxConcurrentStreams: 0x3, initialWindowSize: 0x4 } as const;

/** Error codes (RFC 9113 §7). */
export const H2Error = {
  noError: 0x0,
  protocolError: 0x1,
  refusedStream: 0x7,
  cancel: 0x8,
} as const;

/** Frame flags (RFC 9113 §6). */
export const FrameFlag = { ack: 0x1, endStream: 0x1, endHeaders: 0x4 } as const;

/** One frame as read: its header fields and payload. */
export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
}

/** Encodes one frame. */
export function frame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array = new Uint8Array(0),
): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId & 0x7fff_ffff, 5);
  return Buffer.concat([header, payload]);
}

/** A SETTINGS frame (RFC 9113 §6.5) with the given identifier/value pairs. */
export function settingsFrame(settings: readonly [id: number, value: number][] = []): Buffer {
  const payload = Buffer.alloc(6 * settings.length);
  settings.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, 6 * i);
    payload.writeUInt32BE(value, 6 * i + 2);
  });
  return frame(FrameType.settings, 0, 0, payload);
}

/** The acknowledgement of the peer's SETTINGS. */
export const settingsAck = (): Buffer => frame(FrameType.settings, FrameFlag.ack, 0);

/** The identifier/value pairs of a SETTINGS frame's payload. */
export function settingsOf(f: Frame): Map<number, number> {
  const out = new Map<number, number>();
  for (let i = 0; i + 6 <= f.payload.length; i += 6) {
    out.set(f.payload.readUInt16BE(i), f.payload.readUInt32BE(i + 2));
  }
  return out;
}

/** The error code of a RST_STREAM frame, or of a GOAWAY frame with its last stream id. */
export function errorOf(f: Frame): { code: number; lastStreamId?: number } {
  if (f.type === FrameType.goaway) {
    return {
      lastStreamId: f.payload.readUInt32BE(0) & 0x7fff_ffff,
      code: f.payload.readUInt32BE(4),
    };
  }
  return { code: f.payload.readUInt32BE(0) };
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1); the first byte's high bits are 0. */
function hpackInteger(value: number, prefixBits: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [value];
  const out = [max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A header block of literal fields without indexing, names and values as-is. */
export function headerBlock(headers: readonly [name: string, value: string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, "latin1");
    const v = Buffer.from(value, "latin1");
    parts.push(Buffer.from([0x00, ...hpackInteger(n.length, 7)]), n);
    parts.push(Buffer.from(hpackInteger(v.length, 7)), v);
  }
  return Buffer.concat(parts);
}

/** A raw HTTP/2 connection: what it received, and when it closed. */
export interface RawConnection {
  readonly socket: net.Socket;
  readonly frames: Frame[];
  /** Resolves with the first received frame `match` accepts (rejects after `timeoutMs`). */
  next(match: (f: Frame) => boolean, timeoutMs: number): Promise<Frame>;
  /** Resolves once the socket has closed. */
  readonly closed: Promise<void>;
}

/** Opens a TCP connection to `port` on 127.0.0.1 and parses what arrives as HTTP/2 frames. */
export async function connectRaw(port: number): Promise<RawConnection> {
  const socket = net.connect(port, "127.0.0.1");
  // A reset by the server is an outcome the tests look at, not a failure.
  socket.on("error", () => {});
  const frames: Frame[] = [];
  const waiters = new Set<() => void>();
  let buffered = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 9) {
      const length = buffered.readUIntBE(0, 3);
      if (buffered.length < 9 + length) break;
      frames.push({
        type: buffered[3] as number,
        flags: buffered[4] as number,
        streamId: buffered.readUInt32BE(5) & 0x7fff_ffff,
        payload: Buffer.from(buffered.subarray(9, 9 + length)),
      });
      buffered = buffered.subarray(9 + length);
    }
    for (const wake of waiters) wake();
  });
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return {
    socket,
    frames,
    closed,
    next(match, timeoutMs) {
      return new Promise((resolve, reject) => {
        let seen = 0;
        const check = () => {
          for (; seen < frames.length; seen++) {
            const f = frames[seen] as Frame;
            if (match(f)) {
              finish();
              resolve(f);
              return;
            }
          }
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`no such frame within ${timeoutMs} ms; got ${describe(frames)}`));
        }, timeoutMs);
        const onClose = () => {
          check();
          finish();
          reject(new Error(`the connection closed without such a frame; got ${describe(frames)}`));
        };
        const finish = () => {
          clearTimeout(timer);
          waiters.delete(check);
          socket.off("close", onClose);
        };
        waiters.add(check);
        socket.once("close", onClose);
        if (socket.closed) onClose();
        else check();
      });
    },
  };
}

function describe(frames: readonly Frame[]): string {
  const names = Object.fromEntries(Object.entries(FrameType).map(([k, v]) => [v, k]));
  return `[${frames.map((f) => `${names[f.type] ?? f.type}@${f.streamId}`).join(", ")}]`;
}
