/**
 * Boots one sandbox: guest assets → instance folder → copy-on-write device over the base image
 * or a checkpoint → our NBD server → QEMU → the guest agent. The result is a
 * {@linkcode BootedSandbox} whose `sandbox` runs processes and whose `stop()` powers the guest
 * off, optionally saves the disk as a checkpoint, and removes every trace of the instance.
 *
 * `shuru run`, `shuru checkpoint create` and (later) the named-sandbox supervisor all use it.
 *
 * @module
 */

import { resolve } from "node:path";
import { ensureAssets, type GuestArch, type GuestAssets, hostArch } from "../assets/mod.ts";
import type { AssetProgress } from "../assets/mod.ts";
import type { HomeLayout } from "../cli/home.ts";
import { NbdServer } from "../nbd/mod.ts";
import { Sandbox } from "../sandbox/mod.ts";
import { type CowDevice, Store } from "../store/mod.ts";
import type { SaveResult } from "../store/mod.ts";
import {
  type AccelChoice,
  createInstance,
  hostTscRate,
  type Instance,
  launchGuest,
  QemuBackend,
  removeInstance,
  resolveAccel,
  type Vm,
  type VmExit,
} from "../vm/mod.ts";
import { RunnerError } from "./errors.ts";
import { GuestNetwork, type SandboxNetwork } from "./network.ts";
import { RunSecrets } from "./secrets.ts";

export { RunnerError, type RunnerErrorCode } from "./errors.ts";
export { GUEST_BUNDLE_FILE, GUEST_CA_FILE, type SecretSetting } from "./secrets.ts";
export {
  buildPolicy,
  DEFAULT_GUEST_MTU,
  describeNetwork,
  GuestNetwork,
  NetLog,
  type NetworkSettings,
  type SandboxNetwork,
} from "./network.ts";

/** A host folder shared with the guest. */
export interface SandboxMount {
  /** Host folder. */
  host: string;
  /** Absolute guest path. */
  guest: string;
  /** `false`: guest writes reach the host. */
  readOnly: boolean;
}

/** What to boot. */
export interface BootOptions {
  /** The data home layout (`homeLayout()`). */
  home: HomeLayout;
  /** Virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Disk size in MiB; the guest's root filesystem grows to fill it. */
  diskSizeMiB: number;
  /** `kvm`, `tcg` or `auto` (KVM only when it works). */
  accel: AccelChoice;
  /**
   * Guest architecture. Default: the checkpoint's with `from` (a different one is refused),
   * else the host's.
   */
  arch?: GuestArch;
  /** Start from this checkpoint instead of the base image. */
  from?: string;
  /** Instance folder name (a named sandbox's name); default `<pid>-<random>`. */
  instanceId?: string;
  /** Host folders to share. */
  mounts?: SandboxMount[];
  /**
   * Guest network (`--allow-net`, `--expose-host`): a virtio-net NIC served by our own stack.
   * Absent: no NIC at all.
   */
  network?: SandboxNetwork;
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

const FREEZE_SCRIPT = 'if command -v python3 >/dev/null; then exec python3 -c "$0"; fi; ' +
  "sync; fsfreeze -f / || exit 3; t0=$(date +%s%N); echo frozen; " +
  "timeout 30 head -n 1 >/dev/null; fsfreeze -u / || exit 4; " +
  'echo "thawed $(( ($(date +%s%N) - t0) / 1000 ))"';

/** A booted sandbox. Dispose (or `stop()`) to end it; nothing stays behind either way. */
export class BootedSandbox implements AsyncDisposable {
  /** The agent connection. */
  readonly sandbox: Sandbox;
  /** The VM. */
  readonly vm: Vm;
  /** The instance folder and its sockets. */
  readonly instance: Instance;
  /** The guest assets it booted. */
  readonly assets: GuestAssets;
  /** Phase timings. */
  readonly timings: BootTimings;
  #device: CowDevice;
  #server: NbdServer;
  #store: Store;
  #network: GuestNetwork | undefined;
  #stopped: Promise<StopResult> | undefined;

  /** @internal Use {@linkcode bootSandbox}. */
  constructor(parts: {
    sandbox: Sandbox;
    vm: Vm;
    instance: Instance;
    assets: GuestAssets;
    timings: BootTimings;
    device: CowDevice;
    server: NbdServer;
    store: Store;
    network?: GuestNetwork;
  }) {
    this.sandbox = parts.sandbox;
    this.vm = parts.vm;
    this.instance = parts.instance;
    this.assets = parts.assets;
    this.timings = parts.timings;
    this.#device = parts.device;
    this.#server = parts.server;
    this.#store = parts.store;
    this.#network = parts.network;
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
      await withTimeout(this.sandbox.shutdown(), graceMs).catch(() => {});
      let exit = await withTimeout(this.vm.exited, graceMs).catch(() => undefined);
      exit ??= await this.vm.stop(2_000);
      await this.sandbox.close().catch(() => {});
      let saved: SaveResult | undefined;
      if (options.saveAs !== undefined) {
        if (!exit.poweredOff) {
          throw new RunnerError(
            "save_failed",
            `Cannot save checkpoint ${options.saveAs}: the guest did not shut down cleanly, ` +
              "so its disk may be inconsistent",
          );
        }
        saved = await this.#device.save(options.saveAs);
      }
      return { exit, ...(saved ? { saved } : {}) };
    } finally {
      this.vm.kill();
      await this.#network?.close().catch(() => {});
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
   * @throws {RunnerError} `save_failed` when the guest cannot be frozen or the save fails.
   */
  async checkpoint(name: string): Promise<LiveCheckpointResult> {
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
    const saved = await snapshot.value.save(name);
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
    // emulation); without python3, util-linux's fsfreeze does it from the shell.
    const proc = this.sandbox.spawn(["/bin/sh", "-c", FREEZE_SCRIPT, FREEZE_PY], {
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
        throw await failure("the guest could not freeze its filesystem (needs fsfreeze)");
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

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A 9p mount tag for mount number `i` (tags are limited to 31 characters). */
function mountTag(i: number): string {
  return `shuru${i}`;
}

/**
 * Boots a sandbox and returns once its agent answers and the mounts are in place.
 *
 * @throws {RunnerError} when the guest fails to boot (with the console's last lines).
 */
export async function bootSandbox(options: BootOptions): Promise<BootedSandbox> {
  const t0 = performance.now();
  const since = () => Math.round(performance.now() - t0);
  const notice = options.onNotice ?? (() => {});
  const store = await Store.open(options.home.store);
  // Fail before booting when the checkpoint does not exist; it decides the architecture.
  const arch = options.from !== undefined
    ? checkpointArch(options.from, (await store.inspect(options.from)).arch, options.arch)
    : options.arch ?? hostArch();
  const assets = await ensureAssets({
    assetsDir: options.home.assets,
    arch,
    ...(options.installDeps ? { installDeps: true } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const tAssets = since();
  const diskBytes = options.diskSizeMiB * 1024 * 1024;
  if (diskBytes < assets.rootfsBytes) {
    throw new RunnerError(
      "invalid_config",
      `Cannot use a ${options.diskSizeMiB} MiB disk: the guest's root filesystem needs at ` +
        `least ${Math.ceil(assets.rootfsBytes / 1048576)} MiB (--disk-size)`,
    );
  }
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
    const device = await store.openDevice(
      options.from !== undefined ? { checkpoint: options.from } : { base: assets.rootfs },
      { size: diskBytes, overlayDir: instance.dir, arch },
    );
    cleanup.push(() => device.close());
    const server = await NbdServer.listen(device, {
      socketPath: instance.nbdSocket,
      exportName: EXPORT_NAME,
    });
    cleanup.push(() => server.close());
    const tDevice = since();

    const tsc = await hostTscRate();
    const decision = await resolveAccel(options.accel, {
      arch,
      kernel: assets.kernel,
      initrd: assets.initramfs,
      cacheFile: resolve(options.home.root, "kvm-probe.json"),
      workDir: instance.dir,
      ...(tsc ? { tscKhz: tsc.khz } : {}),
    });
    if (decision.notice) notice(decision.notice);
    const mounts = (options.mounts ?? []).map((m, i) => ({
      tag: mountTag(i),
      hostPath: resolve(m.host),
      readOnly: m.readOnly,
      guest: m.guest,
    }));
    let network: GuestNetwork | undefined;
    let secrets: RunSecrets | undefined;
    if (options.network) {
      // Listen before QEMU starts: its stream client connects at start-up.
      const { secrets: secretSettings, ...settings } = options.network;
      if (secretSettings && secretSettings.length > 0) {
        secrets = await RunSecrets.create(secretSettings, { onError: notice });
      }
      const terminator = secrets?.terminator;
      network = GuestNetwork.listen(instance.netSocket, {
        ...settings,
        vmSocket: instance.netVmSocket,
        onError: notice,
        ...(terminator
          ? { dial: (t) => terminator.dial(t), inspect: (n) => terminator.handles(n) }
          : {}),
      });
      const n = network;
      cleanup.push(() => n.close());
    }
    const vm = await launchGuest({
      assets,
      instance,
      cpus: options.cpus,
      memoryMiB: options.memoryMiB,
      accel: decision.accel,
      disk: { kind: "nbd", socket: instance.nbdSocket, exportName: EXPORT_NAME },
      mounts: mounts.map(({ tag, hostPath, readOnly }) => ({ tag, hostPath, readOnly })),
      ...(network ? { net: network.net } : {}),
      ...(options.verbose ? { verbose: true } : {}),
      ...(tsc ? { tscKhz: tsc.khz } : {}),
      backend: new QemuBackend(
        options.onConsoleLine ? { onConsoleLine: options.onConsoleLine } : {},
      ),
    });
    cleanup.push(async () => {
      vm.kill();
      await vm.exited;
    });
    const tVm = since();

    const timeout = AbortSignal.timeout(
      options.agentTimeoutMs ?? (arch === hostArch() ? 120_000 : 600_000),
    );
    const sandbox = await connectAgent(
      vm,
      options.signal ? AbortSignal.any([timeout, options.signal]) : timeout,
    );
    cleanup.push(() => sandbox.close());
    const tAgent = since();
    await secrets?.installInGuest(sandbox);
    for (const m of mounts) {
      options.signal?.throwIfAborted();
      await sandbox.mount(m.tag, m.guest, { mode: m.readOnly ? "ro" : "rw" });
    }
    return new BootedSandbox({
      sandbox,
      vm,
      instance,
      assets,
      device,
      server,
      store,
      ...(network ? { network } : {}),
      timings: {
        assets: tAssets,
        device: tDevice,
        vmStarted: tVm,
        agentReady: tAgent,
        mounted: since(),
      },
    });
  } catch (err) {
    await unwind();
    throw err;
  }
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

/** Waits for the agent's HELLO, failing early (with the console tail) if the VM dies. */
async function connectAgent(vm: Vm, signal: AbortSignal): Promise<Sandbox> {
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
      vm.agent.then((conn) => Sandbox.connect(conn, { signal })),
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
