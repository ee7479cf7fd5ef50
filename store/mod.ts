/**
 * The content-addressed checkpoint store and the copy-on-write device served over NBD.
 *
 * A disk is a sequence of fixed-size blocks; each non-zero block is stored once as a chunk
 * named by its BLAKE3-256 hash; a checkpoint is a manifest mapping every block to a hash.
 * Format and design: `docs/store.md`.
 *
 * @example Open a device over a base image, write, save, reopen from the checkpoint
 * ```ts ignore
 * import { Store } from "./mod.ts";
 *
 * const store = await Store.open("/tmp/shuru-store");
 * const device = await store.openDevice({ base: "rootfs.ext4" }, { overlayDir: "/tmp/inst1" });
 * await device.write(0, new Uint8Array(4096).fill(1));
 * await device.save("with-ones");
 * await device.close();
 * const again = await store.openDevice({ checkpoint: "with-ones" }, { overlayDir: "/tmp/inst2" });
 * await again.close();
 * ```
 *
 * @module
 */

export {
  type CheckpointDetails,
  type CheckpointInfo,
  DEFAULT_BLOCK_SIZE,
  type DeviceSource,
  type GcOptions,
  type GcReport,
  type OpenDeviceOptions,
  Store,
  type StoreOpenOptions,
  validateName,
} from "./store.ts";
export {
  CowDevice,
  DeviceSnapshot,
  type FrozenState,
  type LowerLayer,
  type OverlayLayer,
  type SavedState,
  type SaveOptions,
  type SaveResult,
} from "./device.ts";
export type { ChunkStore, PutOptions } from "./chunk_store.ts";
export type { PositionalFile } from "./file_io.ts";
export type { BlockTable, ImageMeta } from "./manifest.ts";
export type { BlockBackend, Extent, WriteOptions } from "../nbd/backend.ts";
export { StoreError, type StoreErrorCode } from "./errors.ts";
export type { ChunkSource } from "./chunk_source.ts";
export type { RemoteDeviceSource } from "./store.ts";
export { type RemoteOptions, type TransferProgress } from "./remote.ts";
export { MEDIA as CHECKPOINT_MEDIA_TYPES } from "./remote_format.ts";
export { pushCheckpoint, type PushOptions, type PushResult } from "./remote_push.ts";
export {
  defaultPullName,
  pullCheckpoint,
  type PullOptions,
  type PullResult,
} from "./remote_pull.ts";
export {
  DEFAULT_READAHEAD,
  type OpenedRemote,
  openRemoteCheckpoint,
  RemoteChunkSource,
  type RemoteSourceStats,
} from "./remote_source.ts";
