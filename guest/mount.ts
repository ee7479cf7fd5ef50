/**
 * Mounting host folders shared over virtio-9p (QEMU) or virtio-fs (Virtualization.framework)
 * inside the guest; the host says which (`transport` of the mount request).
 *
 * - `rw`: the share is mounted at the target; guest writes reach the host folder.
 * - `ro`: the share is mounted read-only at a private lower path, and an overlayfs whose upper and
 *   work directories live on a fresh tmpfs is mounted at the target. The guest sees a writable
 *   folder, its writes land in RAM and vanish with the VM, and the host folder is never written
 *   (QEMU's `-fsdev ...,readonly=on` and VZ's read-only `VZSharedDirectory` enforce the same on
 *   the host side).
 *
 * Mounts use mount(2) through FFI (`ffi/libc.ts`), so the agent needs no `mount` program.
 *
 * @module
 */

import { libc } from "../ffi/mod.ts";
import { AgentError, type MountTransport } from "../proto/mod.ts";

/** 9p options: the virtio transport, 9P2000.L, 512 KiB messages (fewer round trips). */
export const NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=524288";

/** Where read-only shares keep their lower mount and tmpfs, one folder per mount. */
export const DEFAULT_SCRATCH_ROOT = "/run/shuru/mounts";

/** Options for {@link mountShare}. */
export interface MountShareOptions {
  /** "ro" (tmpfs overlay, writes vanish) or "rw" (writes reach the host). */
  mode: "ro" | "rw";
  /** The share's device. @default "9p" */
  transport?: MountTransport;
  /** Folder for per-mount scratch space. @default DEFAULT_SCRATCH_ROOT */
  scratchRoot?: string;
  /** Size cap of the overlay tmpfs, e.g. "50%" of RAM. @default "50%" */
  tmpfsSize?: string;
}

const HINTS: Record<string, string> = {
  ENODEV: "the kernel lacks this filesystem (load the 9p, virtiofs or overlay modules)",
  ENOENT: "no such share tag or directory",
  EPERM: "the agent is not root",
  EBUSY: "already mounted",
};

function mountError(what: string, e: unknown): AgentError {
  if (e instanceof libc.LibcError) {
    const reason = `${e.code}${HINTS[e.code] ? `: ${HINTS[e.code]}` : ""}`;
    const code = e.errno === libc.ERRNO.ENOENT
      ? "not_found"
      : e.errno === libc.ERRNO.EPERM || e.errno === libc.ERRNO.EACCES
      ? "permission_denied"
      : e.errno === libc.ERRNO.EBUSY
      ? "busy"
      : e.errno === libc.ERRNO.ENODEV
      ? "unsupported"
      : "io";
    return new AgentError(code, `Cannot mount ${what}: ${reason}`, { cause: e });
  }
  if (e instanceof AgentError) return e;
  return new AgentError("io", `Cannot mount ${what}: ${(e as Error).message}`, { cause: e });
}

let nextScratch = 0;

function scratchDir(root: string): string {
  const dir = `${root}/${Date.now().toString(36)}-${Deno.pid}-${nextScratch++}`;
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/**
 * Mounts a writable overlay at `target`: reads come from `lowerDir`, writes go to a new tmpfs
 * under `scratchRoot` and are lost when it is unmounted. `lowerDir` is never written.
 */
export function mountOverlay(
  lowerDir: string,
  target: string,
  options: { scratchRoot?: string; scratchDir?: string; tmpfsSize?: string } = {},
): void {
  const scratch = options.scratchDir ?? scratchDir(options.scratchRoot ?? DEFAULT_SCRATCH_ROOT);
  const rw = `${scratch}/rw`;
  Deno.mkdirSync(rw);
  try {
    libc.mount("tmpfs", rw, {
      fstype: "tmpfs",
      data: `mode=0755,size=${options.tmpfsSize ?? "50%"}`,
    });
  } catch (e) {
    throw mountError(`tmpfs for the overlay of ${target}`, e);
  }
  try {
    Deno.mkdirSync(`${rw}/upper`);
    Deno.mkdirSync(`${rw}/work`);
    Deno.mkdirSync(target, { recursive: true });
    libc.mount("overlay", target, {
      fstype: "overlay",
      data: `lowerdir=${lowerDir},upperdir=${rw}/upper,workdir=${rw}/work`,
    });
  } catch (e) {
    try {
      libc.umount(rw, libc.LINUX.MNT_DETACH);
    } catch { /* best effort */ }
    throw mountError(`overlay at ${target}`, e);
  }
}

function checkOverlayPath(path: string): void {
  // overlayfs parses its options on ',' and ':'; such paths cannot be expressed safely.
  if (/[,:\\]/.test(path)) {
    throw new AgentError("invalid_argument", `Cannot mount at ${path}: path contains , : or \\`);
  }
}

/** mount(2)'s filesystem type and options for a share on `transport`. */
export function shareFilesystem(transport: MountTransport): { fstype: string; data?: string } {
  // virtio-fs takes the tag as its source and needs no options.
  return transport === "virtiofs" ? { fstype: "virtiofs" } : { fstype: "9p", data: NINEP_OPTIONS };
}

/**
 * Mounts the share `tag` (virtio-9p, or virtio-fs with `transport: "virtiofs"`) at `target`
 * (created if missing).
 *
 * @throws AgentError: `not_found` for an unknown tag (9p), `unsupported` without the filesystem
 * in the kernel, `permission_denied` when not root.
 */
export function mountShare(tag: string, target: string, options: MountShareOptions): void {
  if (!/^[A-Za-z0-9_.-]{1,31}$/.test(tag)) {
    throw new AgentError(
      "invalid_argument",
      `Cannot mount tag ${JSON.stringify(tag)}: tags are 1-31 of [A-Za-z0-9_.-]`,
    );
  }
  const transport = options.transport ?? "9p";
  const fs = shareFilesystem(transport);
  if (options.mode === "rw") {
    try {
      Deno.mkdirSync(target, { recursive: true });
      libc.mount(tag, target, fs);
    } catch (e) {
      throw mountError(`${transport} share ${tag} at ${target}`, e);
    }
    return;
  }
  checkOverlayPath(target);
  const scratch = scratchDir(options.scratchRoot ?? DEFAULT_SCRATCH_ROOT);
  const lower = `${scratch}/lower`;
  try {
    Deno.mkdirSync(lower);
    libc.mount(tag, lower, { ...fs, flags: libc.LINUX.MS_RDONLY });
  } catch (e) {
    throw mountError(`${transport} share ${tag} (read-only)`, e);
  }
  try {
    mountOverlay(lower, target, {
      scratchDir: scratch,
      ...(options.tmpfsSize === undefined ? {} : { tmpfsSize: options.tmpfsSize }),
    });
  } catch (e) {
    try {
      libc.umount(lower, libc.LINUX.MNT_DETACH);
    } catch { /* best effort */ }
    throw e;
  }
}
