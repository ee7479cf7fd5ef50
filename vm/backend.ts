/**
 * Which VM backend runs guests: `vz` (Apple's Virtualization.framework, in this process) on
 * macOS, `qemu` elsewhere; `--backend` (or `SHURU_BACKEND`) picks one explicitly.
 *
 * @module
 */

import { VmError } from "./errors.ts";
import { QemuBackend } from "./qemu.ts";
import type { VmBackend } from "./types.ts";
import { VzBackend } from "./vz.ts";

/** The backends shuru has. */
export type BackendName = "qemu" | "vz";

/** The default backend on `os`: VZ on macOS, QEMU elsewhere. */
export function defaultBackend(os: string = Deno.build.os): BackendName {
  return os === "darwin" ? "vz" : "qemu";
}

/**
 * Parses `--backend` (`undefined`: the default on `os`).
 *
 * @throws {VmError} `invalid_config` for an unknown name, `unsupported_host` for `vz` off macOS.
 */
export function parseBackend(value: string | undefined, os: string = Deno.build.os): BackendName {
  if (value === undefined || value === "") return defaultBackend(os);
  if (value !== "qemu" && value !== "vz") {
    throw new VmError(
      "invalid_config",
      `Cannot use backend ${JSON.stringify(value)}: use vz or qemu`,
    );
  }
  if (value === "vz" && os !== "darwin") {
    throw new VmError(
      "unsupported_host",
      `Cannot use --backend vz: it needs macOS (Apple's Virtualization.framework); this host runs ${os}`,
    );
  }
  return value;
}

/** Options of {@linkcode createBackend}. */
export interface CreateBackendOptions {
  /** Called with each serial console line. */
  onConsoleLine?: (line: string) => void;
  /** Called with one-line notices. */
  onNotice?: (line: string) => void;
}

/** A new backend named `name`. */
export function createBackend(name: BackendName, options: CreateBackendOptions = {}): VmBackend {
  const onConsoleLine = options.onConsoleLine ? { onConsoleLine: options.onConsoleLine } : {};
  if (name === "vz") {
    return new VzBackend({
      ...onConsoleLine,
      ...(options.onNotice ? { onNotice: options.onNotice } : {}),
    });
  }
  return new QemuBackend(onConsoleLine);
}
