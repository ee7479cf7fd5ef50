/**
 * A "VZ-like" arm64 guest under QEMU: the devices Apple's Virtualization.framework gives a
 * shuru guest, as far as QEMU has them, so the guest side of the vz backend runs here.
 *
 * | VZ (vm/vz_config.ts)                              | here                                       |
 * | ------------------------------------------------- | ------------------------------------------ |
 * | virtio console serial port (`hvc0`)               | `virtio-serial-pci` + `virtconsole`        |
 * | console device with the port `shuru.agent`        | another `virtio-serial-pci` + `virtserialport` |
 * | virtio-blk on PCI (root, tools; serial numbers)   | `virtio-blk-pci` with `serial=`            |
 * | virtio-fs shares by tag                           | `vhost-user-fs-pci` + `virtiofsd` (QEMU's) |
 * | virtio-net on a datagram socket                   | `virtio-net-pci` + `-netdev dgram`         |
 * | entropy                                           | `virtio-rng-pci`                           |
 *
 * The kernel command line is the one `launchGuest` gives a {@linkcode VzBackend} guest
 * (`console=hvc0`, PCI kept, the `pci` and `virtiofs` module groups). Everything is PCI: no
 * virtio-mmio device exists. QEMU's memory is a shared memfd, which vhost-user needs.
 *
 * @module
 */

import { join } from "node:path";
import { AgentConnection } from "../agent/mod.ts";
import { guestCmdline, VzBackend } from "../vm/mod.ts";
import { ROOT_SERIAL, TOOLS_SERIAL } from "../proto/mod.ts";
import { withDeadline } from "./_deadline.ts";

/** Debian's virtiofsd (the C one, in qemu-system-common on bookworm). */
export const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";

/** A shared folder. */
export interface VzLikeShare {
  tag: string;
  hostPath: string;
}

/** Options of {@linkcode VzLikeGuest.boot}. */
export interface VzLikeOptions {
  /** Folder for sockets, the console log and virtiofsd's logs. */
  dir: string;
  /** The arm64 guest assets. */
  assets: { kernel: string; initramfs: string; rootfs: string; tools: string };
  /** virtio-fs shares (each gets its own virtiofsd). */
  shares: VzLikeShare[];
  /**
   * The network: our stack's datagram socket and the path QEMU binds (a `GuestNetwork` with
   * `link: "datagram"`).
   */
  net?: { socket: string; vmSocket: string; mtu: number };
  /** Memory in MiB. @default 1024 */
  memoryMiB?: number;
}

/** A running VZ-like guest: QEMU, its virtiofsd processes, the console and the agent. */
export class VzLikeGuest implements AsyncDisposable {
  /** The guest agent. */
  readonly agent: AgentConnection;
  /** The kernel command line it booted with. */
  readonly cmdline: string;
  readonly #qemu: Deno.ChildProcess;
  readonly #daemons: Deno.ChildProcess[];
  readonly #console: { text: string; done?: Promise<void> };

  private constructor(
    parts: {
      agent: AgentConnection;
      cmdline: string;
      qemu: Deno.ChildProcess;
      daemons: Deno.ChildProcess[];
      console: { text: string; done?: Promise<void> };
    },
  ) {
    this.agent = parts.agent;
    this.cmdline = parts.cmdline;
    this.#qemu = parts.qemu;
    this.#daemons = parts.daemons;
    this.#console = parts.console;
  }

  /** Everything the guest printed on its console (`hvc0`) so far. */
  get console(): string {
    return this.#console.text;
  }

  /**
   * Starts virtiofsd for each share, QEMU, and connects to the agent (within `bootMs`).
   *
   * @throws when a program is missing (with the package to install) or the guest does not
   *   answer in time (with the console's tail).
   */
  static async boot(options: VzLikeOptions, bootMs: number): Promise<VzLikeGuest> {
    const { dir, assets } = options;
    const memoryMiB = options.memoryMiB ?? 1024;
    const daemons: Deno.ChildProcess[] = [];
    let qemu: Deno.ChildProcess | undefined;
    const console: { text: string; done?: Promise<void> } = { text: "" };
    try {
      const fsArgs: string[] = [];
      for (const [i, share] of options.shares.entries()) {
        const socket = join(dir, `fs${i}.sock`);
        daemons.push(await startVirtiofsd(socket, share.hostPath, join(dir, `virtiofsd${i}.log`)));
        fsArgs.push(
          "-chardev",
          `socket,id=fs${i},path=${socket}`,
          "-device",
          `vhost-user-fs-pci,chardev=fs${i},tag=${share.tag}`,
        );
      }
      const agentSocket = join(dir, "agent.sock");
      const listener = Deno.listen({ transport: "unix", path: agentSocket });
      const cmdline = guestCmdline("arm64", new VzBackend(), {
        mounts: options.shares.length > 0,
        net: options.net !== undefined,
      });
      const args = [
        "-M",
        "virt,gic-version=max,memory-backend=mem",
        "-accel",
        "tcg",
        "-cpu",
        "max,pauth=off",
        "-smp",
        "2",
        "-m",
        `${memoryMiB}M`,
        "-object",
        `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        assets.kernel,
        "-initrd",
        assets.initramfs,
        "-append",
        cmdline,
        // hvc0: a virtio console device whose first port is a console.
        "-device",
        "virtio-serial-pci,id=console0,max_ports=1",
        "-chardev",
        "stdio,id=console,signal=off",
        "-device",
        "virtconsole,chardev=console,bus=console0.0",
        // The agent's named port on a second console device, as VZ's consoleDevices.
        "-device",
        "virtio-serial-pci,id=ports0,max_ports=2",
        "-chardev",
        `socket,id=agent,path=${agentSocket},server=off`,
        "-device",
        "virtserialport,chardev=agent,name=shuru.agent,bus=ports0.0",
        "-drive",
        `file=${assets.rootfs},format=raw,if=none,id=root,snapshot=on`,
        "-device",
        `virtio-blk-pci,drive=root,serial=${ROOT_SERIAL}`,
        "-drive",
        `file=${assets.tools},format=raw,if=none,id=tools,read-only=on`,
        "-device",
        `virtio-blk-pci,drive=tools,serial=${TOOLS_SERIAL}`,
        "-device",
        "virtio-rng-pci",
        ...fsArgs,
      ];
      if (options.net) {
        args.push(
          "-netdev",
          `dgram,id=net0,local.type=unix,local.path=${options.net.vmSocket},` +
            `remote.type=unix,remote.path=${options.net.socket}`,
          "-device",
          `virtio-net-pci,netdev=net0,host_mtu=${options.net.mtu}`,
        );
      }
      try {
        qemu = new Deno.Command("qemu-system-aarch64", {
          args,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
      } catch (err) {
        throw new Error("qemu-system-aarch64 is missing: apt-get install qemu-system-arm", {
          cause: err,
        });
      }
      console.done = collect(qemu.stdout, console);
      const stderr = { text: "" };
      void collect(qemu.stderr, stderr);
      const q = qemu;
      const ended = q.status.then((s) => {
        throw new Error(
          `QEMU exited (${s.code}) before the agent connected: ${stderr.text}\n${console.text}`,
        );
      });
      let agent: AgentConnection;
      try {
        agent = await withDeadline(
          Promise.race([
            listener.accept().then((conn) =>
              AgentConnection.connect(conn, { signal: AbortSignal.timeout(bootMs) })
            ),
            ended,
          ]),
          bootMs,
          `the VZ-like guest's agent. Console:\n${console.text.slice(-3000)}`,
        );
      } finally {
        listener.close();
      }
      return new VzLikeGuest({ agent, cmdline, qemu: q, daemons, console });
    } catch (err) {
      try {
        qemu?.kill("SIGKILL");
      } catch { /* exited */ }
      await qemu?.status;
      for (const d of daemons) await stop(d);
      throw err;
    }
  }

  /** Asks the agent to power the guest off and waits for QEMU (or kills it after `ms`). */
  async shutdown(ms: number): Promise<Deno.CommandStatus> {
    await this.agent.shutdown().catch(() => {});
    await this.agent.close().catch(() => {});
    try {
      const status = await withDeadline(
        this.#qemu.status,
        ms,
        "QEMU to exit after the guest's power-off",
      );
      // The console's last bytes may still be in the pipe.
      await withDeadline(this.#console.done ?? Promise.resolve(), 10_000, "the console's end");
      return status;
    } catch (err) {
      try {
        this.#qemu.kill("SIGKILL");
      } catch { /* exited */ }
      throw err;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.agent.close().catch(() => {});
    try {
      this.#qemu.kill("SIGKILL");
    } catch { /* exited */ }
    await this.#qemu.status;
    for (const d of this.#daemons) await stop(d);
  }
}

async function collect(stream: ReadableStream<Uint8Array>, into: { text: string }) {
  const decoder = new TextDecoder();
  for await (const chunk of stream) into.text += decoder.decode(chunk, { stream: true });
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* exited */ }
  await child.status;
}

/** Starts virtiofsd serving `source` on `socket`; resolves once the socket exists. */
async function startVirtiofsd(
  socket: string,
  source: string,
  log: string,
): Promise<Deno.ChildProcess> {
  try {
    await Deno.stat(VIRTIOFSD);
  } catch {
    throw new Error(`${VIRTIOFSD} is missing: apt-get install qemu-system-common`);
  }
  const logFile = await Deno.open(log, { write: true, create: true, truncate: true });
  const child = new Deno.Command(VIRTIOFSD, {
    // chroot: no namespaces needed (the test runs as root; namespaces may be unavailable).
    args: [
      `--socket-path=${socket}`,
      "-o",
      `source=${source}`,
      "-o",
      "cache=auto",
      "-o",
      "sandbox=chroot",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  void child.stderr.pipeTo(logFile.writable).catch(() => {});
  const exited = child.status.then(async (s) => {
    throw new Error(
      `virtiofsd exited (${s.code}): ${await Deno.readTextFile(log).catch(() => "")}`,
    );
  });
  const appeared = (async () => {
    for (;;) {
      try {
        await Deno.stat(socket);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  })();
  try {
    await withDeadline(Promise.race([appeared, exited]), 30_000, `virtiofsd's socket ${socket}`);
  } catch (err) {
    await stop(child);
    throw err;
  }
  return child;
}
