/**
 * shuru's NBD server: serves any {@linkcode BlockBackend} over a Unix socket to NBD clients
 * (QEMU, qemu-img, nbdcopy, nbdinfo). Protocol coverage and limits: docs/nbd.md.
 *
 * @example Serve a raw image read-only and read it back over NBD
 * ```ts
 * import { FileBackend, NbdServer } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeFile(`${dir}/disk.img`, new Uint8Array(1 << 20));
 * const backend = await FileBackend.open(`${dir}/disk.img`, { readOnly: true });
 * const server = await NbdServer.listen(backend, { socketPath: `${dir}/disk.sock` });
 * // Any NBD client can now connect, e.g. nbdinfo 'nbd+unix:///?socket=DIR/disk.sock'
 * if (server.activeConnections !== 0) throw new Error("no client yet");
 * await server.close();
 * await backend.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */

export type { BlockBackend, BlockBackendErrorCode, Extent, WriteOptions } from "./backend.ts";
export { BlockBackendError } from "./backend.ts";
export { FileBackend, type FileBackendOptions } from "./file_backend.ts";
export { NbdServer, type NbdServerOptions, type NbdServerStats } from "./server.ts";
export type { NbdLogger, TransmissionStats } from "./transmission.ts";
export { NbdProtocolError, type NbdProtocolErrorCode } from "./errors.ts";
export { ClientFlag, Magic, Option, OptionReply, optionReplyName, ReplyType } from "./wire.ts";
export { encodeRequest } from "./request.ts";
