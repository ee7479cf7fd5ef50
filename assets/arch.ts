/**
 * What the asset build needs to know about each guest architecture (the one table; the names
 * and the host's are in `host/arch.ts`, the QEMU machine of each in `vm/machine.ts`).
 *
 * A guest of the host's own architecture is built from the host's Debian packages (its kernel in
 * `/boot`, its busybox, the Deno binary running shuru, and for the tools disk its tini, setpriv,
 * resize2fs and their libraries). A foreign one is built from packages of that architecture: the
 * kernel and busybox downloaded into the assets cache (apt with a private state folder), Deno
 * from npm, its root filesystem by mmdebstrap with the maintainer scripts run by qemu-user, and
 * the tools disk's programs and libraries taken from that root filesystem's Debian packages.
 *
 * @module
 */

import type { GuestArch, HostTool } from "../host/mod.ts";

/** The build facts of one architecture. */
export interface ArchSpec {
  /** The architecture. */
  arch: GuestArch;
  /** Debian's name (`dpkg --print-architecture`, `mmdebstrap --architectures`). */
  debian: string;
  /** Debian's multiarch triplet: the folder of its libraries (`/usr/lib/<triplet>`). */
  triplet: string;
  /** The dynamic loader's path in a Debian root (the `PT_INTERP` of its programs). */
  loader: string;
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
}

/** The table: everything the build knows about each architecture. */
export const ARCH_SPECS: Readonly<Record<GuestArch, ArchSpec>> = {
  x86_64: {
    arch: "x86_64",
    debian: "amd64",
    triplet: "x86_64-linux-gnu",
    loader: "/lib64/ld-linux-x86-64.so.2",
    kernelPackage: "linux-image-amd64",
    kernelFormat: "bzimage-pvh",
    kernelFile: "vmlinux",
    denoNpmPackage: "@deno/linux-x64-glibc",
    qemuUser: "qemu-x86_64-static",
    binfmtName: "qemu-x86_64",
    elfMachine: 0x3e,
  },
  arm64: {
    arch: "arm64",
    debian: "arm64",
    triplet: "aarch64-linux-gnu",
    loader: "/lib/ld-linux-aarch64.so.1",
    kernelPackage: "linux-image-arm64",
    kernelFormat: "image",
    kernelFile: "Image",
    denoNpmPackage: "@deno/linux-arm64-glibc",
    qemuUser: "qemu-aarch64-static",
    binfmtName: "qemu-aarch64",
    elfMachine: 0xb7,
  },
};

/** Extra host tools a build for a foreign architecture needs (its packages are downloaded). */
export function foreignAssetTools(arch: GuestArch): HostTool[] {
  return [
    { command: "dpkg-deb", package: "dpkg", purpose: "unpacks the downloaded packages" },
    { command: "depmod", package: "kmod", purpose: "indexes the kernel's modules" },
    { command: "npm", package: "npm", purpose: `fetches Deno for ${arch}` },
    {
      command: ARCH_SPECS[arch].qemuUser,
      package: "qemu-user-static",
      purpose: `runs ${arch} programs while building`,
    },
  ];
}
