/**
 * A pcap writer (the classic libpcap format, LINKTYPE_ETHERNET), so any run's frames can be
 * opened in Wireshark or tcpdump: wrap a link with `TracingLink` and call `write` per frame.
 *
 * @module
 */

const PCAP_MAGIC = 0xa1b2c3d4;
const LINKTYPE_ETHERNET = 1;
/** Frames are cut to this many bytes in the capture. */
export const PCAP_SNAPLEN = 65535 + 4096;

/** Writes frames to a pcap file synchronously (a debugging aid, not a hot path). */
export class PcapWriter implements Disposable {
  readonly #file: Deno.FsFile;

  /** Creates (truncates) `path` and writes the global header. */
  constructor(path: string) {
    this.#file = Deno.openSync(path, { write: true, create: true, truncate: true });
    const h = new DataView(new ArrayBuffer(24));
    h.setUint32(0, PCAP_MAGIC, true);
    h.setUint16(4, 2, true);
    h.setUint16(6, 4, true);
    h.setUint32(16, PCAP_SNAPLEN, true);
    h.setUint32(20, LINKTYPE_ETHERNET, true);
    this.#writeAll(new Uint8Array(h.buffer));
  }

  /** Appends one frame with a wall-clock timestamp in milliseconds. */
  write(frame: Uint8Array, timeMs: number = Date.now()): void {
    const len = Math.min(frame.length, PCAP_SNAPLEN);
    const rec = new Uint8Array(16 + len);
    const v = new DataView(rec.buffer);
    v.setUint32(0, Math.floor(timeMs / 1000), true);
    v.setUint32(4, Math.floor((timeMs % 1000) * 1000), true);
    v.setUint32(8, len, true);
    v.setUint32(12, frame.length, true);
    rec.set(frame.subarray(0, len), 16);
    this.#writeAll(rec);
  }

  #writeAll(bytes: Uint8Array): void {
    let off = 0;
    while (off < bytes.length) off += this.#file.writeSync(bytes.subarray(off));
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }

  /** Closes the file (`using`). */
  [Symbol.dispose](): void {
    this.close();
  }
}
