/**
 * Guest CPU architectures: what the asset build needs to know about each (the one table; the
 * QEMU machine of each is in `vm/machine.ts`).
 *
 * A guest of the host's own architecture is built from the host's Debian packages (its kernel in
 * `/boot`, its busybox, the Deno binary running shuru). A foreign one is built from packages of
 * that architecture downloaded into the assets cache (apt with a private state folder, npm for
 * Deno), its root filesystem by mmdebstrap with the maintainer scripts run by qemu-user.
 *
 * @module
 */

import { AssetError } from "./errors.ts";

/** A guest CPU architecture. Names follow `uname -m`, except `arm64` (Debian's and Apple's). */
export type GuestArch = "x86_64" | "arm64";

/** Every architecture shuru can build and boot guests for. */
export const GUEST_ARCHES: readonly GuestArch[] = ["x86_64", "arm64"];

/** How virtio devices reach the guest: memory-mapped (no PCI) or on a PCI bus. */
export type VirtioTransport = "mmio" | "pci";

/** The build facts of one architecture. */
export interface ArchSpec {
  /** The architecture. */
  arch: GuestArch;
  /** Debian's name (`dpkg --print-architecture`, `mmdebstrap --architectures`). */
  debian: string;
  /** Debian's kernel metapackage; its dependency is the versioned kernel package. */
  kernelPackage: string;
  /**
   * What the kernel package's `/boot/vmlinuz-*` is, and what we boot: `bzimage-pvh` is an x86
   * bzImage whose xz payload is extracted as an ELF booted through its PVH entry; `image` is an
   * arm64 `Image` (uncompressed in Debian's package), booted as is.
   */
  kernelFormat: "bzimage-pvh" | "image";
  /** File name of the kernel in an asset folder. */
  kernelFile: string;
  /** The npm package holding Deno for this architecture (`npm install deno` picks it). */
  denoNpmPackage: string;
  /** The qemu-user program that runs this architecture's binaries on another host. */
  qemuUser: string;
  /** The `binfmt_misc` entry (and `/usr/lib/binfmt.d/<name>.conf`) of that program. */
  binfmtName: string;
  /** ELF `e_machine` of this architecture's binaries. */
  elfMachine: number;
  /** The virtio transport of the machine we boot it on (it decides the initramfs's modules). */
  virtio: VirtioTransport;
  /** The QEMU system emulator for this architecture and its Debian package. */
  qemuSystem: { program: string; package: string };
}

/** The table: everything the build knows about each architecture. */
export const ARCH_SPECS: Readonly<Record<GuestArch, ArchSpec>> = {
  x86_64: {
    arch: "x86_64",
    debian: "amd64",
    kernelPackage: "linux-image-amd64",
    kernelFormat: "bzimage-pvh",
    kernelFile: "vmlinux",
    denoNpmPackage: "@deno/linux-x64-glibc",
    qemuUser: "qemu-x86_64-static",
    binfmtName: "qemu-x86_64",
    elfMachine: 0x3e,
    virtio: "mmio",
    qemuSystem: { program: "qemu-system-x86_64", package: "qemu-system-x86" },
  },
  arm64: {
    arch: "arm64",
    debian: "arm64",
    kernelPackage: "linux-image-arm64",
    kernelFormat: "image",
    kernelFile: "Image",
    denoNpmPackage: "@deno/linux-arm64-glibc",
    qemuUser: "qemu-aarch64-static",
    binfmtName: "qemu-aarch64",
    elfMachine: 0xb7,
    virtio: "mmio",
    qemuSystem: { program: "qemu-system-aarch64", package: "qemu-system-arm" },
  },
};

/** The architecture of the host (`x86_64` or `arm64`); throws on any other. */
export function hostArch(): GuestArch {
  return archFromUname(Deno.build.arch);
}

/** Maps a `uname -m` style name (`x86_64`, `aarch64`) to a {@linkcode GuestArch}. */
export function archFromUname(machine: string): GuestArch {
  if (machine === "x86_64") return "x86_64";
  if (machine === "aarch64" || machine === "arm64") return "arm64";
  throw new AssetError(
    "unsupported_arch",
    `Cannot run guests on a ${machine} host: shuru supports x86_64 and arm64`,
  );
}

/**
 * Parses an architecture name given by a user (`--arch`): `x86_64` (or `amd64`), `arm64` (or
 * `aarch64`).
 *
 * @throws AssetError `unsupported_arch` naming the accepted values.
 */
export function parseArch(value: string): GuestArch {
  const v = value.trim().toLowerCase();
  if (v === "x86_64" || v === "amd64" || v === "x64") return "x86_64";
  if (v === "arm64" || v === "aarch64") return "arm64";
  throw new AssetError(
    "unsupported_arch",
    `Cannot use architecture ${JSON.stringify(value)}: use x86_64 or arm64`,
  );
}
