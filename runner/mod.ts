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
import { NbdServer } from "../nbd/mod.ts";
import { AgentConnection } from "../agent/mod.ts";
import {
  type CowDevice,
  decodeManifest,
  type DeviceSource,
  inspectRemoteCheckpoint,
  openRemoteCheckpoint,
  type RemoteSourceStats,
  Store,
  StoreError,
} from "../store/mod.ts";
import type { ImageMeta, ManifestMeta, SaveResult } from "../store/mod.ts";
import { looksLikeReference, RegistryError } from "../oci/mod.ts";
import {
  createBackend,
  createInstance,
  hostTscRate,
  type Instance,
  launchGuest,
  removeInstance,
  resolveAccel,
  type Vm,
  type VmExit,
} from "../vm/mod.ts";
import { RunnerError } from "./errors.ts";
import { GuestNetwork, NetLog, type NetworkHooks } from "./network.ts";
import { RunSecrets } from "./secrets.ts";
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
}

/** Options of {@link BootedSandbox.stop}. */
export interface StopOptions {
  /** Save the disk as this checkpoint after the guest powered off. */
  saveAs?: string;
  /** Milliseconds to wait for the guest to power off before killing it. @default 20000 */
  graceMs?: number;
}

/** What {@link BootedSandbox.checkpoint} did. */
export interface LiveCheckpointResult {
  /** The save. */
  saved: SaveResult;
  /** Milliseconds the guest filesystem was frozen (writes blocked). */
  pauseMs: number;
  /** Milliseconds from the request to the checkpoint being written. */
  totalMs: number;
}

/** What {@link BootedSandbox.stop} did. */
export interface StopResult {
  /** How the VM ended. */
  exit: VmExit;
  /** The saved checkpoint, when `saveAs` was given. */
  saved?: SaveResult;
}

const EXPORT_NAME = "root";

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
  /** What the image (`--image`, or the checkpoint's image) gives user commands. */
  readonly defaults: RunDefaults;
  /** The image the disk descends from, recorded in checkpoints saved from it. */
  readonly image: ImageMeta | undefined;
  #device: CowDevice;
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
  checkpoint(name: string): Promise<LiveCheckpointResult> {
    const run = this.#checkpoints.then(() => this.#checkpoint(name)).catch((err) => {
      throw storeFailure(err, "save_failed");
    });
    this.#checkpoints = run.catch(() => {});
    return run;
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

/** The share tag of mount number `i` (9p tags are limited to 31 characters, virtio-fs's to 36). */
function mountTag(i: number): string {
  return `shuru${i}`;
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
  if (spec.image !== undefined) {
    const prepared = await prepareImage(options.home, { ...spec, arch }, {
      onRetry: notice,
      ...(options.onImageProgress ? { onProgress: options.onImageProgress } : {}),
    });
    source = { base: prepared.rootfs };
    image = imageMeta(prepared);
    defaults = spawnDefaults(prepared.defaults, spec.image);
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
  const tAssets = since();
  options.signal?.throwIfAborted();
  const instance = await createInstance(
    options.home.instances,
    options.instanceId !== undefined ? { id: options.instanceId } : {},
  );
  const cleanup: (() => Promise<void>)[] = [() => removeInstance(instance)];
  const unwind = async () => {
    for (const fn of cleanup.reverse()) await fn().catch(() => {});
  };
  try {
    const device = await store.openDevice(source, {
      size: diskBytes,
      overlayDir: instance.dir,
      arch,
    });
    cleanup.push(() => device.close());
    const server = await NbdServer.listen(device, {
      socketPath: instance.nbdSocket,
      exportName: EXPORT_NAME,
    });
    cleanup.push(() => server.close());
    const tDevice = since();

    const tsc = spec.backend === "qemu" ? await hostTscRate() : undefined;
    // VZ runs on Apple's Hypervisor.framework; there is nothing to choose or probe.
    const decision = spec.backend === "vz"
      ? { accel: "hvf" as const, notice: "" }
      : await resolveAccel(spec.accel, {
        arch,
        kernel: bootFiles.kernel,
        initrd: bootFiles.initramfs,
        cacheFile: resolve(options.home.root, "kvm-probe.json"),
        workDir: instance.dir,
        ...(tsc ? { tscKhz: tsc.khz } : {}),
      });
    if (decision.notice) notice(decision.notice);
    const mounts = spec.mounts.map((m, i) => ({
      tag: mountTag(i),
      hostPath: resolve(m.host),
      readOnly: m.readOnly,
      guest: m.guest,
    }));
    const backend = createBackend(spec.backend, {
      ...(options.onConsoleLine ? { onConsoleLine: options.onConsoleLine } : {}),
      onNotice: notice,
    });
    let network: GuestNetwork | undefined;
    let secrets: RunSecrets | undefined;
    if (spec.network) {
      // Listen before QEMU starts: its stream client connects at start-up.
      const { secrets: secretSettings, ...settings } = spec.network;
      if (secretSettings && secretSettings.length > 0) {
        secrets = await RunSecrets.create(secretSettings, { onError: notice });
      }
      const terminator = secrets?.terminator;
      const hooks = options.net ?? {};
      network = GuestNetwork.listen(instance.netSocket, {
        ...settings,
        ...hooks,
        ...(netLog || hooks.onConnection
          ? {
            onConnection: (r) => {
              netLog?.write(r);
              hooks.onConnection?.(r);
            },
          }
          : {}),
        vmSocket: instance.netVmSocket,
        // VZ takes the NIC's host end as a file handle: one end of a socket pair.
        ...(backend.netTransport === "pair" ? { link: "pair" as const } : {}),
        onError: notice,
        ...(terminator
          ? { dial: (t) => terminator.dial(t), inspect: (n) => terminator.handles(n) }
          : {}),
      });
      const n = network;
      cleanup.push(() => n.close());
    }
    const vm = await launchGuest({
      assets: bootFiles,
      instance,
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      accel: decision.accel,
      disk: { kind: "nbd", socket: instance.nbdSocket, exportName: EXPORT_NAME },
      mounts: mounts.map(({ tag, hostPath, readOnly }) => ({ tag, hostPath, readOnly })),
      ...(network ? { net: network.net } : {}),
      ...(options.verbose ? { verbose: true } : {}),
      ...(tsc ? { tscKhz: tsc.khz } : {}),
      backend,
    });
    cleanup.push(async () => {
      vm.kill();
      await vm.exited;
    });
    const tVm = since();

    const timeout = AbortSignal.timeout(
      options.agentTimeoutMs ?? (arch === hostArch() ? 120_000 : 600_000),
    );
    const agent = await connectAgent(
      vm,
      options.signal ? AbortSignal.any([timeout, options.signal]) : timeout,
    );
    cleanup.push(() => agent.close());
    const tAgent = since();
    await secrets?.installInGuest(agent);
    for (const m of mounts) {
      options.signal?.throwIfAborted();
      await agent.mount(m.tag, m.guest, {
        mode: m.readOnly ? "ro" : "rw",
        transport: backend.mountTransport ?? "9p",
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
      ...(network ? { network } : {}),
      ...(netLog ? { netLog } : {}),
      defaults,
      ...(image ? { image } : {}),
      timings: {
        assets: tAssets,
        device: tDevice,
        vmStarted: tVm,
        agentReady: tAgent,
        mounted: tMounted,
      },
    });
  } catch (err) {
    await unwind();
    throw err;
  }
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
    return { source: opened.source, meta: decodeManifest(opened.remote.idxBytes).meta };
  }
  const info = await store.inspect(from);
  return {
    source: { checkpoint: from },
    meta: {
      ...(info.arch !== undefined ? { arch: info.arch } : {}),
      ...(info.image !== undefined ? { image: info.image } : {}),
    },
  };
}

/** Waits for the agent's HELLO, failing early (with the console tail) if the VM dies. */
async function connectAgent(vm: Vm, signal: AbortSignal): Promise<AgentConnection> {
  const died = vm.exited.then((exit) => {
    throw new RunnerError(
      "boot_failed",
      `Cannot boot the guest: the VM exited (code ${exit.code}) before its agent started.\n` +
        `Last console lines:\n${exit.consoleTail || "(none)"}${
          exit.stderr ? `\nQEMU said: ${exit.stderr}` : ""
        }`,
    );
  });
  try {
    return await Promise.race([
      vm.agent.then((conn) => AgentConnection.connect(conn, { signal })),
      died,
    ]);
  } catch (err) {
    if (err instanceof RunnerError) throw err;
    if (signal.aborted && !(signal.reason instanceof DOMException)) throw signal.reason;
    throw new RunnerError(
      "boot_failed",
      `Cannot reach the guest agent: ${(err as Error).message}.\nLast console lines:\n${
        vm.consoleTail(20) || "(none)"
      }`,
      { cause: err },
    );
  }
}
