/**
 * The device an NBD server exports. The server validates every request (range, flags,
 * read-only) before it calls a backend, so a backend may trust its arguments.
 *
 * Implementations: a raw file (`nbd/file_backend.ts`) and the copy-on-write device over a
 * base image or checkpoint (`store/`).
 *
 * @module
 */

/** One run of bytes with the same allocation state, for NBD_CMD_BLOCK_STATUS. */
export interface Extent {
  /** Length in bytes. */
  length: number;
  /** `true` when the run reads as zeros. */
  zero: boolean;
  /** `true` when the run has no storage behind it (a hole). */
  hole: boolean;
}

/** Options of a write-like request. */
export interface WriteOptions {
  /** Force Unit Access: the data must be durable when the promise resolves. */
  fua?: boolean;
}

/** A block device served over NBD. Offsets and lengths are in bytes. */
export interface BlockBackend {
  /** Device size in bytes. */
  readonly size: number;
  /** `true` when writes are refused. */
  readonly readOnly: boolean;
  /** `true` when every connection sees every completed write at once (CAN_MULTI_CONN). */
  readonly multiConn: boolean;
  /** Reads `length` bytes at `offset`. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Writes `data` at `offset`. */
  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /** Makes `length` bytes at `offset` read as zeros. */
  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** Discards `length` bytes at `offset` (they may then read as zeros). */
  trim(offset: number, length: number): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /** Describes allocation of `length` bytes at `offset`; optional. */
  blockStatus?(offset: number, length: number): Promise<Extent[]>;
  /** Releases resources. */
  close(): Promise<void>;
}
