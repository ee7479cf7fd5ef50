/**
 * Boots one sandbox: guest assets → instance folder → copy-on-write device over the base image
 * or a checkpoint → our NBD server → QEMU → the guest agent. The result is a
 * {@linkcode BootedSandbox} whose `agent` runs processes and whose `stop()` powers the guest
 * off, optionally saves the disk as a checkpoint, and removes every trace of the instance.
 *
 * `shuru run`, `shuru checkpoint create` and the named-sandbox supervisor all use it.
 *
 * @module
 */

import { resolve } from "node:path";
import {
  checkInitrd,
  checkKernel,
  checkRootfs,
  ensureAssets,
  type GuestAssets,
  TOOLS_BUSYBOX,
} from "../assets/mod.ts";
import {
  ensureImage,
  type ImageProgress,
  type PreparedImage,
  registryResolver,
} from "../image/mod.ts";
import type { AssetProgress } from "../assets/mod.ts";
import { type GuestArch, type HomeLayout, hostArch } from "../host/mod.ts";
import type { SandboxSpec } from "../spec/mod.ts";
import type { NbdServer } from "../nbd/mod.ts";
import type { AgentConnection } from "../agent/mod.ts";
import {
  type BlockTable,
  type CowDevice,
  decodeManifest,
  type DeviceSource,
  fetchRemoteMemory,
  inspectRemoteCheckpoint,
  type MemoryImage,
  openRemoteCheckpoint,
  type RemoteSourceStats,
  Store,
  StoreError,
} from "../store/mod.ts";
import type { ImageMeta, ManifestMeta, SaveResult } from "../store/mod.ts";
import { looksLikeReference, RegistryError } from "../oci/mod.ts";
import {
  hostTscRate,
  type Instance,
  removeInstance,
  resolveAccel,
  type Vm,
  type VmExit,
} from "../vm/mod.ts";
import { RunnerError } from "./errors.ts";
import { type GuestNetwork, NetLog, type NetworkHooks } from "./network.ts";
import {
  bootGuest,
  type BootParts,
  type BootPath,
  type BootPlan,
  choosePath,
  isRestoreFailure,
} from "./boot.ts";
import { acquireReady, imageReadyRoot, mountTag, readyRoot } from "./ready.ts";
import { saveMemoryCheckpoint } from "./memory.ts";
import {
  defaultsFromMeta,
  imageMeta,
  NO_DEFAULTS,
  type RunDefaults,
  spawnDefaults,
} from "./image.ts";

export { RunnerError, type RunnerErrorCode } from "./errors.ts";
export { NO_DEFAULTS, type RunDefaults } from "./image.ts";
export { GUEST_BUNDLE_FILE, GUEST_CA_FILE } from "./secrets.ts";
export { type BootPath, choosePath, type PathChoice } from "./boot.ts";
export {
  acquireReady,
  type BootFiles,
  GUEST_NET,
  imageReadyRoot,
  MOUNT_SLOTS,
  pruneReady,
  READY_FORMAT,
  type ReadyLease,
  type ReadyOptions,
  type ReadyPruneResult,
  type ReadyRecord,
  readyRoot,
  type ReadyShape,
} from "./ready.ts";
export {
  buildPolicy,
  DEFAULT_GUEST_MTU,
  describeNetwork,
  GuestNetwork,
  type LinkTransport,
  NetLog,
  type NetworkHooks,
} from "./network.ts";

/** A registry checkpoint a sandbox started from lazily: its reference, digest and fetch counters. */
export interface RemoteStart {
  /** The reference as given. */
  ref: string;
  /** The manifest digest it resolved to. */
  digest: string;
  /** Live counters of what was fetched and what was read locally. */
  stats: RemoteSourceStats;
}

/** How to boot a {@linkcode SandboxSpec}: where, and where its reports go. */
export interface BootOptions {
  /** The data home layout (`homeLayout()`). */
  home: HomeLayout;
  /** Progress of an image's pull and conversion (`spec.image`). */
  onImageProgress?: (p: ImageProgress) => void;
  /** Called once a registry checkpoint is opened, with its digest and live fetch counters. */
  onRemote?: (remote: RemoteStart) => void;
  /** Instance folder name (a named sandbox's name); default `<pid>-<random>`. */
  instanceId?: string;
  /** The guest network's MTU and reports (`--allow-net`: blocked lines, records). */
  net?: NetworkHooks;
  /** Install missing host packages with apt-get when building assets. */
  installDeps?: boolean;
  /** Kernel messages on the console log. */
  verbose?: boolean;
  /** Called with asset-build progress and boot notices. */
  onProgress?: (event: AssetProgress) => void;
  /** Called with one-line notices (e.g. "using TCG"). */
  onNotice?: (line: string) => void;
  /** Called with each console line (for `-v`). */
  onConsoleLine?: (line: string) => void;
  /**
   * Milliseconds to wait for the agent after QEMU starts. @default 120000, or 600000 for a guest
   * of another architecture (emulated: several times slower)
   */
  agentTimeoutMs?: number;
  /** Aborting stops the boot and removes everything it made (Ctrl-C). */
  signal?: AbortSignal;
}

/** Milliseconds from the start of {@linkcode bootSandbox} at which each phase ended. */
export interface BootTimings {
  assets: number;
  device: number;
  vmStarted: number;
  agentReady: number;
  mounted: number;
  /**
   * Every phase in order (ms from the start): assets, ready (the ready snapshot checked or
   * made), device, vmStarted (QEMU up; restored: state loaded), resumed, agentReady, identity
   * (made unique, network set), mounted, ports.
   */
  phases: Record<string, number>;
}

/** Options of {@link BootedSandbox.stop}. */
export interface StopOptions {
  /** Save the disk as this checkpoint after the guest powered off. */
  saveAs?: string;
  /** Milliseconds to wait for the guest to power off before killing it. @default 20000 */
  graceMs?: number;
  /**
   * The disk is thrown away: end QEMU at once instead of powering the guest off (a throwaway
   * `shuru run`). Host folders mounted read-write lose nothing: 9p writes reach the host
   * before the guest's write returns. Ignored with `saveAs`.
   */
  discard?: boolean;
}

/** What {@link BootedSandbox.checkpoint} did. */
export interface LiveCheckpointResult {
  /** The save. */
  saved: SaveResult;
  /**
   * Milliseconds the guest was held: its filesystem frozen (disk only), or the VM paused (with
   * memory).
   */
  pauseMs: number;
  /** Milliseconds from the request to the checkpoint being written. */
  totalMs: number;
}

/** Options of {@link BootedSandbox.checkpoint}. */
export interface LiveCheckpointOptions {
  /**
   * Save the memory and device state too (the processes go on after a resume): needs a sandbox
   * that started warm (QEMU, RAM in a file) without mounted folders.
   */
  memory?: boolean;
}

/** What {@link BootedSandbox.stop} did. */
export interface StopResult {
  /** How the VM ended. */
  exit: VmExit;
  /** The saved checkpoint, when `saveAs` was given. */
  saved?: SaveResult;
}

/** Freezes `/`, prints "frozen", thaws after a line on stdin (or 30 s), prints "thawed US". */
const FREEZE_PY = [
  "import os, sys, time, fcntl, select",
  "os.sync()",
  "fd = os.open('/', os.O_RDONLY)",
  "fcntl.ioctl(fd, 0xC0045877, 0)",
  "t0 = time.monotonic()",
  "sys.stdout.write('frozen\\n'); sys.stdout.flush()",
  "try: select.select([0], [], [], 30)",
  "finally: fcntl.ioctl(fd, 0xC0045878, 0)",
  "sys.stdout.write('thawed %d\\n' % ((time.monotonic() - t0) * 1e6)); sys.stdout.flush()",
].join("\n");

/**
 * Run by the tools disk's busybox, so it works in any root (an image may have no /bin/sh, no
 * fsfreeze): the image's python3 when it has one (freeze and thaw in one process), else the
 * busybox applets; the frozen time from /proc/uptime (hundredths of a second).
 */
const FREEZE_SCRIPT = 'if command -v python3 >/dev/null; then exec python3 -c "$0"; fi; ' +
  `bb=${TOOLS_BUSYBOX}; $bb sync; $bb fsfreeze --freeze / || exit 3; read -r a _ < /proc/uptime; ` +
  "echo frozen; $bb timeout 30 $bb head -n 1 >/dev/null; $bb fsfreeze --unfreeze / || exit 4; " +
  "read -r b _ < /proc/uptime; " +
  'echo "thawed $(( (${b%.*}${b#*.} - ${a%.*}${a#*.}) * 10000 ))"';

/** A booted sandbox. Dispose (or `stop()`) to end it; nothing stays behind either way. */
export class BootedSandbox implements AsyncDisposable {
  /** The connection to the guest agent. */
  readonly agent: AgentConnection;
  /** The VM process (its exit, console tail and boot phases). */
  readonly vm: Vm;
  /** The instance folder and its sockets. */
  readonly instance: Instance;
  /** The guest assets it booted. */
  readonly assets: GuestAssets;
  /** Phase timings. */
  readonly timings: BootTimings;
  /** How it started: resumed from the ready snapshot, from a memory checkpoint, or cold. */
  readonly path: BootPath;
  /** Why it booted cold, when it did. */
  readonly coldReason: string | undefined;
  /** What the image (`--image`, or the checkpoint's image) gives user commands. */
  readonly defaults: RunDefaults;
  /** The image the disk descends from, recorded in checkpoints saved from it. */
  readonly image: ImageMeta | undefined;
  #device: CowDevice;
  #mountCount: number;
  #ramBase: { file: string; table?: BlockTable } | undefined;
  #server: NbdServer;
  #store: Store;
  #network: GuestNetwork | undefined;
  #netLog: NetLog | undefined;
  #checkpoints: Promise<unknown> = Promise.resolve();
  #stopped: Promise<StopResult> | undefined;

  /** @internal Use {@linkcode bootSandbox}. */
  constructor(parts: {
    agent: AgentConnection;
    vm: Vm;
    instance: Instance;
    assets: GuestAssets;
    timings: BootTimings;
    device: CowDevice;
    server: NbdServer;
    store: Store;
    path: BootPath;
    coldReason?: string;
    mountCount: number;
    ramBase?: { file: string; table?: BlockTable };
    network?: GuestNetwork;
    netLog?: NetLog;
    defaults?: RunDefaults;
    image?: ImageMeta;
  }) {
    this.agent = parts.agent;
    this.vm = parts.vm;
    this.instance = parts.instance;
    this.assets = parts.assets;
    this.timings = parts.timings;
    this.path = parts.path;
    this.coldReason = parts.coldReason;
    this.#mountCount = parts.mountCount;
    this.#ramBase = parts.ramBase;
    this.defaults = parts.defaults ?? NO_DEFAULTS;
    this.image = parts.image;
    this.#device = parts.device;
    this.#server = parts.server;
    this.#store = parts.store;
    this.#network = parts.network;
    this.#netLog = parts.netLog;
  }

  /** The guest network, when the sandbox has one. */
  get network(): GuestNetwork | undefined {
    return this.#network;
  }

  /**
   * Powers the guest off (sync first), waits for QEMU to exit, saves the disk if asked, and
   * removes the instance. Safe to call more than once (later calls return the first result).
   */
  stop(options: StopOptions = {}): Promise<StopResult> {
    this.#stopped ??= this.#stop(options);
    return this.#stopped;
  }

  async #stop(options: StopOptions): Promise<StopResult> {
    const graceMs = options.graceMs ?? 20_000;
    try {
      if (options.discard && options.saveAs === undefined) {
        this.vm.kill();
        const exit = await this.vm.exited;
        await this.agent.close().catch(() => {});
        return { exit };
      }
      // The agent syncs the guest's filesystems before powering off, so the disk the NBD
      // server holds is consistent once QEMU exits. A broken connection just means we go
      // straight to stopping QEMU.
      await withTimeout(this.agent.shutdown(), graceMs).catch(() => {});
      let exit = await withTimeout(this.vm.exited, graceMs).catch(() => undefined);
      exit ??= await this.vm.stop(2_000);
      await this.agent.close().catch(() => {});
      let saved: SaveResult | undefined;
      if (options.saveAs !== undefined) {
        if (!exit.poweredOff) {
          throw new RunnerError(
            "save_failed",
            `Cannot save checkpoint ${options.saveAs}: the guest did not shut down cleanly, ` +
              "so its disk may be inconsistent",
          );
        }
        saved = await this.#device.save(options.saveAs, this.image ? { image: this.image } : {})
          .catch((err) => {
            throw storeFailure(err, "save_failed");
          });
      }
      return { exit, ...(saved ? { saved } : {}) };
    } finally {
      this.vm.kill();
      await this.#network?.close().catch(() => {});
      this.#netLog?.close();
      await this.#server.close().catch(() => {});
      await this.#device.close().catch(() => {});
      await removeInstance(this.instance).catch(() => {});
    }
  }

  /**
   * Saves the disk of the running guest as checkpoint `name`; the guest keeps running.
   *
   * The guest's root filesystem is quiesced (`sync`, then `fsfreeze -f /`, which also flushes
   * the ext4 journal), the device's copy-on-write snapshot is taken, the filesystem is thawed,
   * and only then are the chunks hashed and written, while the guest goes on. A guest-side
   * watchdog thaws by itself after 30 s should the host never say so.
   *
   * Live checkpoints of one sandbox run one at a time, in the order asked.
   *
   * @throws {RunnerError} `save_failed` when the guest cannot be frozen or the save fails.
   */
  checkpoint(name: string, options: LiveCheckpointOptions = {}): Promise<LiveCheckpointResult> {
    const run = this.#checkpoints.then(() =>
      options.memory ? this.#memoryCheckpoint(name) : this.#checkpoint(name)
    ).catch((err) => {
      throw storeFailure(err, "save_failed");
    });
    this.#checkpoints = run.catch(() => {});
    return run;
  }

  async #memoryCheckpoint(name: string): Promise<LiveCheckpointResult> {
    if (this.#stopped) {
      throw new RunnerError("save_failed", `Cannot save checkpoint ${name}: the sandbox stopped`);
    }
    if (await this.#store.has(name)) {
      throw new RunnerError(
        "save_failed",
        `Cannot save checkpoint ${name}: it already exists (delete it first with ` +
          `\`shuru checkpoint delete ${name}\`)`,
      );
    }
    if (!this.#ramBase) {
      throw new RunnerError(
        "save_failed",
        `Cannot save the memory of this sandbox: it booted cold (${
          this.coldReason ?? "no RAM file"
        }); save its disk only (without --memory), or start it warm`,
      );
    }
    if (this.#mountCount > 0) {
      throw new RunnerError(
        "save_failed",
        `Cannot save the memory of this sandbox: it has ${this.#mountCount} host folder(s) ` +
          "mounted, whose 9p state QEMU cannot save; save its disk only (without --memory)",
      );
    }
    return await saveMemoryCheckpoint({
      name,
      agent: this.agent,
      vm: this.vm,
      device: this.#device,
      instance: this.instance,
      ramBase: this.#ramBase,
      ...(this.image ? { image: this.image } : {}),
    });
  }

  async #checkpoint(name: string): Promise<LiveCheckpointResult> {
    if (this.#stopped) {
      throw new RunnerError("save_failed", `Cannot save checkpoint ${name}: the sandbox stopped`);
    }
    // Refuse before freezing the guest for nothing.
    if (await this.#store.has(name)) {
      throw new RunnerError(
        "save_failed",
        `Cannot save checkpoint ${name}: it already exists (delete it first with ` +
          `\`shuru checkpoint delete ${name}\`)`,
      );
    }
    const t0 = performance.now();
    const snapshot = await this.#quiesced(name, () => this.#device.snapshot());
    const pauseMs = snapshot.pauseMs;
    const saved = await snapshot.value.save(name, this.image ? { image: this.image } : {});
    return { saved, pauseMs, totalMs: performance.now() - t0 };
  }

  /**
   * Runs `fn` while the guest's root filesystem is frozen. `pauseMs` is the frozen time as the
   * guest's clock saw it (freeze done → thaw done).
   */
  async #quiesced<T>(name: string, fn: () => Promise<T>): Promise<{ value: T; pauseMs: number }> {
    // One guest process freezes, reports, waits for our word (or 30 s), then thaws, so a host
    // that dies mid-way never leaves the guest frozen. Python does it with the FIFREEZE/FITHAW
    // ioctls in one process (no program to start while frozen, which costs ~100s of ms under
    // emulation); without python3, the tools disk's busybox does it.
    const proc = this.agent.spawn([TOOLS_BUSYBOX, "sh", "-c", FREEZE_SCRIPT, FREEZE_PY], {
      stdin: "piped",
    });
    const errText = new Response(proc.stderr).text();
    const decoder = new TextDecoder();
    const reader = proc.stdout.getReader();
    const writer = proc.stdin.getWriter();
    let seen = "";
    const readUntil = async (marker: RegExp) => {
      while (!marker.test(seen)) {
        const { value, done } = await reader.read();
        if (done) return false;
        seen += decoder.decode(value, { stream: true });
      }
      return true;
    };
    let thawAsked = false;
    const thaw = async () => {
      if (thawAsked) return;
      thawAsked = true;
      await writer.write(new TextEncoder().encode("thaw\n")).catch(() => {});
      await writer.close().catch(() => {});
    };
    const failure = async (what: string) => {
      const status = await proc.wait();
      return new RunnerError(
        "save_failed",
        `Cannot save checkpoint ${name}: ${what} (exit ${status.exitCode}: ` +
          `${(await errText).trim() || "no message"})`,
      );
    };
    try {
      if (!(await readUntil(/frozen\n/))) {
        throw await failure(
          "the guest could not freeze its filesystem (needs python3 or the tools disk's fsfreeze)",
        );
      }
      const frozenAt = performance.now();
      const value = await fn();
      await thaw();
      const thawed = await readUntil(/thawed (\d+)\n/);
      const hostPause = performance.now() - frozenAt;
      if (!thawed) throw await failure("thawing the guest filesystem failed");
      await proc.wait();
      const guestUs = Number(/thawed (\d+)\n/.exec(seen)![1]);
      return { value, pauseMs: Number.isFinite(guestUs) ? guestUs / 1000 : hostPause };
    } finally {
      await thaw();
      reader.releaseLock();
    }
  }

  /** Kills everything at once (no save). */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#stopped) {
      this.vm.kill();
      this.#stopped = this.stop({ graceMs: 1 });
    }
    await this.#stopped.catch(() => {});
  }
}

/** A store or registry error as the runner's (`code`), with its message; anything else as is. */
function storeFailure(err: unknown, code: "boot_failed" | "save_failed"): unknown {
  if (!(err instanceof StoreError) && !(err instanceof RegistryError)) return err;
  return new RunnerError(code, err.message, { cause: err });
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Opens the `--net-log` file for appending. */
async function openNetLog(path: string): Promise<NetLog> {
  try {
    return await NetLog.open(path);
  } catch (err) {
    throw new RunnerError(
      "invalid_config",
      `Cannot open --net-log ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/**
 * Boots the sandbox `spec` describes and returns once its agent answers, the mounts are in place
 * and its ports are forwarded. The spec's command, environment and working directory are the
 * caller's to use.
 *
 * @throws {RunnerError} when the guest fails to boot (with the console's last lines).
 */
export async function bootSandbox(
  spec: SandboxSpec,
  options: BootOptions,
): Promise<BootedSandbox> {
  const t0 = performance.now();
  const since = () => Math.round(performance.now() - t0);
  const notice = options.onNotice ?? (() => {});
  const netLog = spec.network?.netLog !== undefined
    ? await openNetLog(spec.network.netLog)
    : undefined;
  try {
    return await boot(spec, options, { since, notice, netLog });
  } catch (err) {
    netLog?.close();
    throw storeFailure(err, "boot_failed");
  }
}

/** Options of {@linkcode prepareReady}. */
export interface PrepareReadyOptions {
  /** The data home. */
  home: HomeLayout;
  /** One-line notices (making it: about a boot's time). */
  onNotice?: (line: string) => void;
}

/**
 * Makes sure the ready snapshot `spec` would resume exists (made now, with a notice, if not):
 * `shuru init` and `shuru start` call it so the first start's wait is on the user's terminal,
 * not in a supervisor's log. Resolves with `made`, `current`, or `cold` when `spec` boots cold
 * anyway.
 */
export async function prepareReady(
  spec: SandboxSpec,
  options: PrepareReadyOptions,
): Promise<"made" | "current" | "cold"> {
  const own = ownBootFiles(spec);
  const choice = choosePath(spec, {
    memory: false,
    ...(spec.from !== undefined
      ? { coldReason: "from a checkpoint" }
      : own !== undefined
      ? { coldReason: own }
      : {}),
  });
  if (choice.path !== "ready") return "cold";
  const arch = spec.arch ?? hostArch();
  const assets = await ensureAssets({ assetsDir: options.home.assets, arch });
  let rootfs = assets.rootfs;
  let root = readyRoot(options.home);
  if (spec.image !== undefined) {
    rootfs = (await prepareImage(options.home, { ...spec, arch })).rootfs;
    root = imageReadyRoot(rootfs);
  }
  const tsc = await hostTscRate();
  const decision = await resolveAccel(spec.accel, {
    arch,
    kernel: assets.kernel,
    initrd: assets.initramfs,
    cacheFile: resolve(options.home.root, "kvm-probe.json"),
    workDir: options.home.instances,
    ...(tsc ? { tscKhz: tsc.khz } : {}),
  });
  const lease = await acquireReady({
    home: options.home,
    root,
    boot: { kernel: assets.kernel, initramfs: assets.initramfs, tools: assets.tools, arch },
    rootfs,
    shape: {
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      diskSizeMiB: spec.diskSizeMiB,
      accel: decision.accel,
    },
    ...(tsc ? { tscKhz: tsc.khz } : {}),
    ...(options.onNotice ? { onNotice: options.onNotice } : {}),
    // A guest of another architecture boots emulated, several times slower.
    ...(arch !== hostArch() ? { agentTimeoutMs: 600_000 } : {}),
  });
  lease.release();
  return lease.built ? "made" : "current";
}

async function boot(
  spec: SandboxSpec,
  options: BootOptions,
  ctx: {
    since: () => number;
    notice: (line: string) => void;
    netLog: NetLog | undefined;
  },
): Promise<BootedSandbox> {
  const { since, notice, netLog } = ctx;
  const store = await Store.open(options.home.store);
  // The checkpoint first: it must exist, and it decides the architecture and the image's settings.
  const from = spec.from !== undefined ? await openFrom(store, spec, options, notice) : undefined;
  const arch = from
    ? checkpointArch(spec.from!, from.meta.arch, spec.arch)
    : spec.arch ?? hostArch();
  const assets = await ensureAssets({
    assetsDir: options.home.assets,
    arch,
    ...(options.installDeps !== undefined ? { installDeps: options.installDeps } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const diskBytes = spec.diskSizeMiB * 1024 * 1024;
  // The user's boot files, checked before anything starts (one line each when wrong).
  const bootFiles = {
    kernel: assets.kernel,
    initramfs: assets.initramfs,
    tools: assets.tools,
    arch,
  };
  if (spec.kernel !== undefined) {
    bootFiles.kernel = await checkKernel(spec.kernel, {
      arch,
      cacheDir: resolve(options.home.assets, "cache", "kernels"),
    });
  }
  if (spec.initrd !== undefined) {
    await checkInitrd(spec.initrd);
    bootFiles.initramfs = spec.initrd;
  }
  let source: DeviceSource = from?.source ?? { base: assets.rootfs };
  let image = from?.meta.image;
  let defaults = NO_DEFAULTS;
  if (image) {
    // A checkpoint of an image keeps the image's settings.
    const settings = defaultsFromMeta(image);
    if (settings) defaults = spawnDefaults(settings, image.ref);
  }
  // Where the ready snapshots of this root filesystem live: beside it.
  let readyDir = readyRoot(options.home);
  if (spec.image !== undefined) {
    const prepared = await prepareImage(options.home, { ...spec, arch }, {
      onRetry: notice,
      ...(options.onImageProgress ? { onProgress: options.onImageProgress } : {}),
    });
    source = { base: prepared.rootfs };
    image = imageMeta(prepared);
    defaults = spawnDefaults(prepared.defaults, spec.image);
    readyDir = imageReadyRoot(prepared.rootfs);
  } else if (spec.rootfs !== undefined) {
    const bytes = await checkRootfs(spec.rootfs);
    if (diskBytes < bytes) {
      throw new RunnerError(
        "invalid_config",
        `Cannot use a ${spec.diskSizeMiB} MiB disk: ${spec.rootfs} is ` +
          `${Math.ceil(bytes / 1048576)} MiB (--disk-size ${Math.ceil(bytes / 1048576)} or more)`,
      );
    }
    source = { base: spec.rootfs };
  } else if (!from && diskBytes < assets.rootfsBytes) {
    throw new RunnerError(
      "invalid_config",
      `Cannot use a ${spec.diskSizeMiB} MiB disk: the guest's root filesystem needs at ` +
        `least ${Math.ceil(assets.rootfsBytes / 1048576)} MiB (--disk-size)`,
    );
  }
  let memory: MemoryImage | undefined;
  let coldReason = ownBootFiles(spec);
  if (from && !from.memory) coldReason ??= `checkpoint ${spec.from} has no memory (disk only)`;
  else if (from?.memory && !spec.cold) memory = await from.readMemory();
  const tAssets = since();
  options.signal?.throwIfAborted();
  const tsc = spec.backend === "qemu" ? await hostTscRate() : undefined;
  // VZ runs on Apple's Hypervisor.framework; there is nothing to choose or probe.
  const decision = spec.backend === "vz"
    ? { accel: "hvf" as const, notice: "" }
    : await resolveAccel(spec.accel, {
      arch,
      kernel: bootFiles.kernel,
      initrd: bootFiles.initramfs,
      cacheFile: resolve(options.home.root, "kvm-probe.json"),
      workDir: options.home.instances,
      ...(tsc ? { tscKhz: tsc.khz } : {}),
    });
  if (decision.notice) notice(decision.notice);
  const choice = choosePath(spec, {
    memory: memory !== undefined,
    ...(coldReason ? { coldReason } : {}),
  });
  if (choice.notice) notice(choice.notice);
  const plan: BootPlan = {
    spec,
    home: options.home,
    boot: bootFiles,
    readyDir,
    store,
    source,
    diskBytes,
    accel: decision.accel,
    ...(tsc ? { tscKhz: tsc.khz } : {}),
    ...(memory ? { memory } : {}),
    ...(options.instanceId !== undefined ? { instanceId: options.instanceId } : {}),
    ...(options.net ? { net: options.net } : {}),
    ...(netLog ? { netLog } : {}),
    ...(options.verbose ? { verbose: true } : {}),
    ...(options.onConsoleLine ? { onConsoleLine: options.onConsoleLine } : {}),
    notice,
    agentTimeoutMs: options.agentTimeoutMs ?? (arch === hostArch() ? 120_000 : 600_000),
    ...(options.signal ? { signal: options.signal } : {}),
  };
  let parts: BootParts;
  try {
    parts = await bootGuest(plan, choice.path, { since });
  } catch (err) {
    // A ready snapshot that does not restore (another QEMU, damaged bytes) is made again once.
    if (choice.path !== "ready" || !isRestoreFailure(err)) throw err;
    parts = await bootGuest(plan, "ready", { since, rebuild: (err as Error).message });
  }
  const { agent, vm, instance, device, server, network } = parts;
  try {
    await parts.secrets?.installInGuest(agent);
    for (const [i, m] of spec.mounts.entries()) {
      options.signal?.throwIfAborted();
      await agent.mount(mountTag(i), m.guest, {
        mode: m.readOnly ? "ro" : "rw",
        transport: parts.mountTransport,
      });
    }
    const tMounted = since();
    for (const p of spec.ports) {
      try {
        await agent.forward(p.host, p.guest);
      } catch (err) {
        throw new RunnerError(
          "invalid_config",
          `Cannot forward 127.0.0.1:${p.host}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
    return new BootedSandbox({
      agent,
      vm,
      instance,
      assets,
      device,
      server,
      store,
      path: choice.path,
      ...(choice.reason ? { coldReason: choice.reason } : {}),
      mountCount: spec.mounts.length,
      ...(parts.ramBase ? { ramBase: parts.ramBase } : {}),
      ...(network ? { network } : {}),
      ...(netLog ? { netLog } : {}),
      defaults,
      ...(image ? { image } : {}),
      timings: {
        assets: tAssets,
        device: parts.phases.device ?? 0,
        vmStarted: parts.phases.vmStarted ?? 0,
        agentReady: parts.phases.agentReady ?? 0,
        mounted: tMounted,
        phases: { assets: tAssets, ...parts.phases, mounted: tMounted, ports: since() },
      },
    });
  } catch (err) {
    await parts.unwind();
    throw err;
  }
}

/** Why `spec` boots cold because of boot files of the user's own, if it does. */
function ownBootFiles(spec: SandboxSpec): string | undefined {
  if (spec.kernel !== undefined) return "a kernel of your own (--kernel)";
  if (spec.initrd !== undefined) return "an initramfs of your own (--initrd)";
  if (spec.rootfs !== undefined) return "a root filesystem of your own (--rootfs)";
  return undefined;
}

/** Options of {@linkcode prepareImage}. */
export interface PrepareImageOptions {
  /** Progress lines. */
  onProgress?: (p: ImageProgress) => void;
  /** Called before a registry request is retried. */
  onRetry?: (line: string) => void;
}

/**
 * Converts the spec's image for its disk size and architecture (or finds it cached): what `bootSandbox` does for
 * `image`, callable ahead of time (`shuru start` shows the progress on its terminal before the
 * supervisor boots). Like shuru's own base image, the result is ingested into the store by the
 * first checkpoint saved from it (once: later saves reuse its cached table), not here: a run
 * that saves nothing should not pay for hashing and writing every block.
 */
export async function prepareImage(
  home: HomeLayout,
  spec: Pick<SandboxSpec, "image" | "diskSizeMiB" | "insecureRegistries" | "arch">,
  options: PrepareImageOptions = {},
): Promise<PreparedImage> {
  if (spec.image === undefined) throw new TypeError("prepareImage: the spec names no image");
  return await ensureImage(spec.image, {
    imagesDir: home.images,
    diskBytes: spec.diskSizeMiB * 1048576,
    arch: spec.arch ?? hostArch(),
    registry: registryResolver({
      insecureRegistries: spec.insecureRegistries ?? [],
      ...(options.onRetry ? { onRetry: options.onRetry } : {}),
    }),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
}

/**
 * The architecture `spec` boots on, as far as it is known before booting: the checkpoint's
 * (a local one's manifest, or a registry one's `.idx`, read without its chunks; a different
 * `spec.arch` is refused), else `spec.arch`, else the host's. `shuru start` builds that
 * architecture's assets with progress on its terminal first.
 *
 * @throws {RunnerError} `invalid_config` when the checkpoint holds another architecture.
 */
export async function specArch(home: HomeLayout, spec: SandboxSpec): Promise<GuestArch> {
  if (spec.from === undefined) return spec.arch ?? hostArch();
  const store = await Store.open(home.store);
  const recorded = looksLikeReference(spec.from)
    ? (await inspectRemoteCheckpoint(store, spec.from, {
      insecureRegistries: spec.insecureRegistries ?? [],
    })).meta.arch
    : (await store.inspect(spec.from)).arch;
  return checkpointArch(spec.from, recorded, spec.arch);
}

/**
 * The architecture to boot checkpoint `name` on: the one it recorded (x86_64 when it recorded
 * none: it predates arm64 guests). A different `asked` one is refused: the disk holds that
 * architecture's programs.
 */
export function checkpointArch(
  name: string,
  recorded: string | undefined,
  asked: GuestArch | undefined,
): GuestArch {
  const saved = recorded ?? "x86_64";
  if (saved !== "x86_64" && saved !== "arm64") {
    throw new RunnerError(
      "invalid_config",
      `Cannot boot checkpoint ${name}: it was saved from an unknown architecture ${saved}`,
    );
  }
  if (asked !== undefined && asked !== saved) {
    throw new RunnerError(
      "invalid_config",
      `Cannot boot checkpoint ${name} as ${asked}: it holds an ${saved} guest's disk ` +
        `(drop --arch or use --arch ${saved})`,
    );
  }
  return saved;
}

/** A checkpoint to boot from, opened: its device source and what its manifest records. */
interface OpenedFrom {
  source: DeviceSource;
  meta: ManifestMeta;
  /** A registry checkpoint (its disk read lazily). */
  remote: boolean;
  /** It holds memory (a memory checkpoint, local or in a registry). */
  memory: boolean;
  /**
   * Its memory image, ready to materialize (a registry one's RAM chunks fetched and verified
   * first). Only when `memory`.
   */
  readMemory: () => Promise<MemoryImage>;
}

/**
 * Opens `spec.from`: a registry reference lazily (its artifact resolved and validated, small
 * blobs only), a local checkpoint by reading its manifest (it must exist). Nothing is booted yet.
 */
async function openFrom(
  store: Store,
  spec: SandboxSpec,
  options: BootOptions,
  notice: (line: string) => void,
): Promise<OpenedFrom> {
  const from = spec.from!;
  if (looksLikeReference(from)) {
    const opened = await openRemoteCheckpoint(store, from, {
      insecureRegistries: spec.insecureRegistries ?? [],
      log: notice,
    });
    options.onRemote?.({
      ref: opened.remote.refText,
      digest: opened.remote.digest,
      stats: opened.chunks.stats,
    });
    return {
      source: opened.source,
      meta: decodeManifest(opened.remote.idxBytes).meta,
      remote: true,
      memory: opened.remote.idx.memory !== undefined,
      readMemory: () => fetchRemoteMemory(opened),
    };
  }
  let info;
  try {
    info = await store.inspect(from);
  } catch (err) {
    // A damaged manifest names the checkpoint (a missing one already does).
    if (err instanceof StoreError && err.code === "bad_manifest") {
      throw new StoreError(
        "bad_manifest",
        `Cannot start from checkpoint ${from}: ${
          err.message.replace(/^Cannot read/, "cannot read")
        }`,
        { cause: err },
      );
    }
    throw err;
  }
  return {
    source: { checkpoint: from },
    meta: {
      ...(info.arch !== undefined ? { arch: info.arch } : {}),
      ...(info.image !== undefined ? { image: info.image } : {}),
    },
    remote: false,
    memory: info.memory !== undefined,
    readMemory: () => store.readMemory(from),
  };
}
