/**
 * The device an NBD server exports. The server validates every request (range, flags,
 * read-only) before it calls a backend, so a backend may trust its arguments.
 *
 * Implementations: a raw file (`nbd/file_backend.ts`) and the copy-on-write device over a
 * base image or checkpoint (`store/`).
 *
 * NOTE for the store helper (from the nbd/ owner), all additions are optional and backwards
 * compatible:
 * - `WriteOptions` gained `noHole` and `fastZero` (only ever set on `writeZeroes`). Without
 *   `noHole` a backend may deallocate the range (e.g. drop overlay blocks, mark them zero).
 * - `canFastZero?: boolean`: set it to `true` only if `writeZeroes(..., { fastZero: true })`
 *   is cheap (metadata only). When it is not `true`, the server answers NBD_CMD_FLAG_FAST_ZERO
 *   requests with ENOTSUP itself and never calls the backend for them.
 * - `BlockBackendError`: throw it (code "EIO", "ENOSPC", ...) to choose the NBD error a client
 *   sees; any other thrown error becomes EIO (host ENOSPC/EDQUOT/EFBIG → ENOSPC, EACCES/EROFS →
 *   EPERM). The server logs the message and `cause` before narrowing, so put the real reason
 *   there (e.g. "chunk ab12… failed verification").
 * - `readInto?(offset, target)`: optional fast path; when present the server reads straight into
 *   its reply buffer (one allocation, one socket write per READ) instead of calling `read`.
 *   It must fill all of `target` (zeros for holes).
 * - `read` must return a buffer the backend will not change afterwards (a fresh one is safest).
 * - `write(offset, data)`: `data` belongs to the server again once the returned promise settles
 *   (it is reused for the next request), so a backend that keeps bytes must copy them first.
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
  /** `writeZeroes` only: the range must stay allocated (NBD_CMD_FLAG_NO_HOLE). */
  noHole?: boolean;
  /**
   * `writeZeroes` only: fail with `BlockBackendError("ENOTSUP")` rather than do slow work
   * (NBD_CMD_FLAG_FAST_ZERO). Only passed when the backend sets `canFastZero`.
   */
  fastZero?: boolean;
}

/** NBD error names a backend may report (the protocol's error values). */
export type BlockBackendErrorCode =
  | "EPERM"
  | "EIO"
  | "ENOMEM"
  | "EINVAL"
  | "ENOSPC"
  | "EOVERFLOW"
  | "ENOTSUP"
  | "ESHUTDOWN";

/** A backend failure with the NBD error the client should see. */
export class BlockBackendError extends Error {
  /** The NBD error value sent to the client. */
  readonly code: BlockBackendErrorCode;

  /** Creates the error; the message is logged, the code goes on the wire. */
  constructor(code: BlockBackendErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BlockBackendError";
    this.code = code;
  }
}

/** A block device served over NBD. Offsets and lengths are in bytes. */
export interface BlockBackend {
  /** Device size in bytes. */
  readonly size: number;
  /** `true` when writes are refused. */
  readonly readOnly: boolean;
  /** `true` when every connection sees every completed write at once (CAN_MULTI_CONN). */
  readonly multiConn: boolean;
  /** `true` when `writeZeroes` with `fastZero` is cheap; see the module note. */
  readonly canFastZero?: boolean;
  /** Reads `length` bytes at `offset`. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Optional fast path of `read`: fills all of `target` with the bytes at `offset`. */
  readInto?(offset: number, target: Uint8Array): Promise<void>;
  /** Writes `data` at `offset`; `data` must not be used after the promise settles. */
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
