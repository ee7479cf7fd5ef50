/**
 * The content-addressed checkpoint store and the copy-on-write device served over NBD.
 *
 * A disk is a sequence of fixed-size blocks; each non-zero block is stored once as a chunk
 * named by its BLAKE3-256 hash; a checkpoint is a manifest mapping every block to a hash.
 * Format and design: `docs/store.md`.
 *
 * @example Open a device over a base image, write, save, reopen from the checkpoint
 * ```ts
 * import { Store } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeFile(`${dir}/base.img`, new Uint8Array(1024 * 1024));
 * const store = await Store.open(`${dir}/store`);
 * const device = await store.openDevice({ base: `${dir}/base.img` }, {
 *   overlayDir: `${dir}/inst1`,
 * });
 * await device.write(0, new Uint8Array(4096).fill(1));
 * await device.save("with-ones");
 * await device.close();
 * const again = await store.openDevice({ checkpoint: "with-ones" }, {
 *   overlayDir: `${dir}/inst2`,
 * });
 * const head = await again.read(0, 4);
 * await again.close();
 * await Deno.remove(dir, { recursive: true });
 * if (head.join() !== "1,1,1,1") throw new Error(`read ${head}`);
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
  type MemoryImage,
  type MemoryInfo,
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
  type MemoryAttachment,
  type OverlayLayer,
  type SavedState,
  type SaveOptions,
  type SaveResult,
} from "./device.ts";
export type { ChunkStore, PutOptions } from "./chunk_store.ts";
export type { PositionalFile } from "./file_io.ts";
export {
  type BlockTable,
  decodeManifest,
  type ImageMeta,
  type Manifest,
  type ManifestMeta,
} from "./manifest.ts";
export { memoryImageId, type MemorySource } from "./memory.ts";
export { applyDelta, DELTA_FORMAT, type DeltaRun, type DiskDelta } from "./delta.ts";
export { blake3, initHasher, toHex } from "./hash.ts";
export type { BlockBackend, Extent, WriteOptions } from "../nbd/mod.ts";
export { StoreError, type StoreErrorCode } from "./errors.ts";
export type { ChunkSource } from "./chunk_source.ts";
export type { RemoteDeviceSource } from "./store.ts";
export {
  inspectRemoteCheckpoint,
  type RemoteCheckpointInfo,
  type RemoteOptions,
  type TransferProgress,
} from "./remote.ts";
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
  fetchRemoteMemory,
  type OpenedRemote,
  openRemoteCheckpoint,
  RemoteChunkSource,
  type RemoteSourceStats,
} from "./remote_source.ts";
