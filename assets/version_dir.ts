/**
 * One asset version folder (`v<format>-<arch>-<hash>/`) as the rest of shuru reads it: the
 * format its files follow, and its `manifest.json`. A folder whose manifest is of this format is
 * complete (builds and bundle installs rename it into place last).
 *
 * @module
 */

import { join } from "node:path";
import type { GuestArch } from "../host/mod.ts";

/**
 * Bumped when the layout or meaning of the asset files changes. 2: the agent, Deno and the
 * guest's init moved from the root filesystem to the tools disk (`tools.ext4`). 3: one set per
 * guest architecture (`v3-<arch>-<hash>`, the arch in the manifest; arm64's kernel is `Image`),
 * the tools disk's loader also as `lib/ld.so`. 4: the initramfs loads the virtio transport the
 * command line names (`shuru.modules=mmio,…` or `pci,…`), follows a virtio console (`hvc0`),
 * has virtio-fs; the guest announces its power-off on the console (what VZ guests need).
 */
export const ASSET_FORMAT = 4;

/** A version folder's `manifest.json`. */
export interface AssetsManifest {
  /** {@linkcode ASSET_FORMAT} of the builder. */
  format: number;
  /** Guest architecture. */
  arch: GuestArch;
  /** Size of `rootfs.ext4`: the smallest disk a VM can use. */
  rootfsBytes: number;
  /** The kernel's release. */
  kernelRelease: string;
  /** When it was built (ISO 8601). */
  builtAt: string;
  /** Milliseconds per build step. */
  timings: Record<string, number>;
}

/** The manifest of the version folder `dir`, or undefined when missing or of another format. */
export async function readManifest(dir: string): Promise<AssetsManifest | undefined> {
  try {
    const manifest = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
    if (manifest?.format === ASSET_FORMAT && typeof manifest.rootfsBytes === "number") {
      return manifest as AssetsManifest;
    }
  } catch {
    // missing or unreadable: not current
  }
  return undefined;
}
