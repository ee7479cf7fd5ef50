/**
 * shuru's NBD server: serves any {@linkcode BlockBackend} over a Unix socket to NBD clients
 * (QEMU, qemu-img, nbdcopy, nbdinfo). Protocol coverage and limits: docs/nbd.md.
 *
 * @example
 * ```ts
 * import { FileBackend, NbdServer } from "./mod.ts";
 *
 * const backend = await FileBackend.open("disk.img", { readOnly: true });
 * const server = await NbdServer.listen(backend, { socketPath: "/tmp/disk.sock" });
 * // a client: nbdinfo 'nbd+unix:///?socket=/tmp/disk.sock'
 * await server.close();
 * await backend.close();
 * ```
 *
 * @module
 */

export type { BlockBackend, BlockBackendErrorCode, Extent, WriteOptions } from "./backend.ts";
export { BlockBackendError } from "./backend.ts";
export { FileBackend, type FileBackendOptions } from "./file_backend.ts";
export { NbdServer, type NbdServerOptions, type NbdServerStats } from "./server.ts";
export type { NbdLogger } from "./transmission.ts";
export { NbdProtocolError, type NbdProtocolErrorCode } from "./errors.ts";
