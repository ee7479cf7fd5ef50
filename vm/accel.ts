/**
 * Choosing the accelerator: KVM (Linux), HVF (macOS) or TCG (emulation).
 *
 * A guest of another architecture than the host's always runs under TCG (with a notice). For
 * the host's own architecture, `auto` on macOS means HVF; on Linux it uses KVM only when it
 * works: `/dev/kvm` must open, and a probe boot (the real kernel and initramfs in probe mode,
 * which prints a marker from userspace and powers off) must finish under KVM. Nested hosts can
 * open `/dev/kvm` and still die mid-boot, so opening the device is not enough. The probe result
 * is cached, keyed by the host kernel, QEMU binary, CPU model and guest kernel, so it runs once
 * per host setup.
 *
 * @module
 */

import { join } from "node:path";
import { type GuestArch, hostArch } from "../host/mod.ts";
import { PROBE_MARKER } from "../proto/mod.ts";
import { kernelCmdline } from "./cmdline.ts";
import { VmError } from "./errors.ts";
import { machineFor } from "./machine.ts";
import { QemuBackend } from "./qemu.ts";
import type { Accel } from "./types.ts";

/** What the user may ask for (`hvf` comes with the VZ backend, never from a flag). */
export type AccelChoice = "kvm" | "tcg" | "auto";

/** Parses an accelerator name (`--accel`, `SHURU_ACCEL`, config `accel`). */
export function parseAccel(value: string): AccelChoice {
  if (value === "auto" || value === "kvm" || value === "tcg") return value;
  throw new VmError(
    "invalid_config",
    `Cannot use accelerator ${JSON.stringify(value)}: use kvm, tcg or auto`,
  );
}

/** The chosen accelerator and why. */
export interface AccelDecision {
  /** The accelerator to run with. */
  accel: Accel;
  /** One line for the user when `auto` chose TCG (otherwise empty). */
  notice: string;
  /** `true` when the decision came from the cache. */
  cached: boolean;
}

/** Options of {@linkcode resolveAccel}. */
export interface ResolveAccelOptions {
  /** The guest architecture (default: the host's). */
  arch?: GuestArch;
  /** Guest kernel (uncompressed ELF) for the probe boot. */
  kernel: string;
  /** Initramfs for the probe boot. */
  initrd: string;
  /** Cache file for the probe result. */
  cacheFile: string;
  /** Folder for the probe's temporary files. */
  workDir: string;
  /** QEMU program (default: found in the standard folders). */
  qemu?: string;
  /** The KVM device (default `/dev/kvm`). */
  kvmDevice?: string;
  /** Host TSC rate for the probe's kernel cmdline. */
  tscKhz?: number;
  /** Probe timeout in ms (default 15000; a working KVM boots in well under a second). */
  timeoutMs?: number;
}

interface ProbeCache {
  key: string;
  ok: boolean;
  detail: string;
}

/** Returns `undefined` when `device` opens read-write, else why not. */
export function kvmDeviceProblem(device: string): string | undefined {
  try {
    Deno.openSync(device, { read: true, write: true }).close();
    return undefined;
  } catch (err) {
    return `${device}: ${(err as Error).message}`;
  }
}

async function stamp(path: string): Promise<string> {
  try {
    const info = await Deno.stat(path);
    return `${info.size}:${info.mtime?.getTime() ?? 0}`;
  } catch {
    return "missing";
  }
}

async function cpuModel(): Promise<string> {
  try {
    return /^model name\s*:\s*(.*)$/m.exec(await Deno.readTextFile("/proc/cpuinfo"))?.[1] ?? "";
  } catch {
    return "";
  }
}

/** Boots the guest kernel under KVM in probe mode; returns whether it reached userspace. */
export async function probeKvm(
  options: ResolveAccelOptions,
): Promise<{ ok: boolean; detail: string }> {
  const dir = await Deno.makeTempDir({ dir: options.workDir, prefix: "kvm-probe-" });
  let seen = false;
  let markerSeen: () => void = () => {};
  const marker = new Promise<void>((resolve) => (markerSeen = resolve));
  const backend = new QemuBackend({
    qemu: options.qemu,
    onConsoleLine: (line) => {
      if (line.includes(PROBE_MARKER)) {
        seen = true;
        markerSeen();
      }
    },
  });
  try {
    const started = performance.now();
    const vm = await backend.start({
      ...(options.arch ? { arch: options.arch } : {}),
      kernel: options.kernel,
      initrd: options.initrd,
      cmdline: kernelCmdline({
        ...(options.arch ? { arch: options.arch } : {}),
        ...(options.tscKhz !== undefined ? { tscKhz: options.tscKhz } : {}),
        probe: true,
      }),
      cpus: 1,
      memoryMiB: 256,
      accel: "kvm",
      agentSocket: join(dir, "agent.sock"),
      consoleLog: join(dir, "console.log"),
    });
    const timeoutMs = options.timeoutMs ?? 15_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      marker.then(() => "marker"),
      vm.exited.then(() => "exit"),
      new Promise<string>((resolve) => (timer = setTimeout(() => resolve("timeout"), timeoutMs))),
    ]);
    clearTimeout(timer);
    const ms = Math.round(performance.now() - started);
    vm.kill();
    const exit = await vm.exited;
    (await vm.agent.catch(() => undefined))?.close();
    if (seen) return { ok: true, detail: `probe boot reached userspace in ${ms} ms` };
    if (outcome === "timeout") {
      return { ok: false, detail: `probe boot did not finish in ${timeoutMs} ms` };
    }
    const why = exit.stderr.split("\n").find((l) => l.trim()) ??
      exit.consoleTail.split("\n").at(-1);
    return {
      ok: false,
      detail: `probe boot failed (QEMU status ${exit.code}): ${why ?? ""}`.trim(),
    };
  } catch (err) {
    return { ok: false, detail: `probe boot failed: ${(err as Error).message.split("\n")[0]}` };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Resolves `choice` to an accelerator; `auto` probes KVM (cached) and falls back to TCG.
 *
 * @throws {VmError} `invalid_config` when `kvm` or `hvf` is asked for a guest this host cannot
 *   run natively (another architecture, or the wrong OS).
 */
export async function resolveAccel(
  choice: AccelChoice,
  options: ResolveAccelOptions,
): Promise<AccelDecision> {
  const machine = machineFor(options.arch);
  const native = machine.nativeAccel({ os: Deno.build.os, arch: Deno.build.arch });
  // Said even when TCG was asked for: the user asked for an architecture, and it will be slow.
  const emulated = native === undefined
    ? `shuru: running an ${machine.arch} guest on this ${hostArch()} host by emulation ` +
      "(TCG, slow)"
    : "";
  if (choice === "tcg") return { accel: "tcg", notice: emulated, cached: false };
  if (choice !== "auto") {
    if (choice !== native) {
      throw new VmError(
        "invalid_config",
        `Cannot use ${choice} for an ${machine.arch} guest on this ${Deno.build.os} ` +
          `${hostArch()} host: ${
            native ? `use ${native} or tcg` : "another architecture runs only emulated (tcg)"
          }`,
      );
    }
    return { accel: choice, notice: "", cached: false };
  }
  if (native === undefined) return { accel: "tcg", notice: emulated, cached: false };
  if (native === "hvf") return { accel: "hvf", notice: "", cached: false };
  const device = options.kvmDevice ?? "/dev/kvm";
  const problem = kvmDeviceProblem(device);
  if (problem) {
    return {
      accel: "tcg",
      notice: `shuru: KVM unavailable (${problem}); using TCG emulation (slow)`,
      cached: false,
    };
  }
  const key = JSON.stringify({
    host: Deno.osRelease(),
    qemu: `${options.qemu ?? "default"}:${await stamp(options.qemu ?? `/usr/bin/${machine.qemu}`)}`,
    cpu: await cpuModel(),
    kernel: await stamp(options.kernel),
  });
  let cache: ProbeCache | undefined;
  try {
    const parsed = JSON.parse(await Deno.readTextFile(options.cacheFile));
    if (parsed?.key === key && typeof parsed.ok === "boolean") cache = parsed;
  } catch { /* no cache yet */ }
  const cached = cache !== undefined;
  if (!cache) {
    const result = await probeKvm(options);
    cache = { key, ...result };
    const tmp = `${options.cacheFile}.${Deno.pid}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(cache) + "\n");
    await Deno.rename(tmp, options.cacheFile);
  }
  if (cache.ok) return { accel: "kvm", notice: "", cached };
  return {
    accel: "tcg",
    notice:
      `shuru: KVM does not work on this host (${cache.detail}); using TCG emulation (slow). ` +
      "Set SHURU_ACCEL=kvm to force KVM.",
    cached,
  };
}
