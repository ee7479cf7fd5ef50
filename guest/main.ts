/**
 * Entry point of the guest agent; the same file runs in the VM and in tests.
 *
 * ```
 * deno run -A guest/main.ts --listen unix:/tmp/agent.sock   # tests: every connection a session
 * deno run -A guest/main.ts [--port shuru.agent]            # VM: the virtio-serial port
 * ```
 *
 * In the VM the agent is bundled (`deno bundle guest/main.ts -o agent.js`) and started by tini as
 * `deno run -A --no-check /opt/shuru/agent.js`. It imports only Deno built-ins and relative
 * modules. See docs/guest_agent.md.
 *
 * @module
 */

import { FdStream, libc, poller } from "../ffi/mod.ts";
import { AGENT_VERSION, serveConnection } from "./agent.ts";
import { startProcess } from "./process.ts";
import { powerOffGuest, syncAll } from "./shutdown.ts";

/** Name of the virtio-serial port the host exposes for the agent. */
export const DEFAULT_PORT_NAME = "shuru.agent";

/** Where a session's failure is logged (stderr, which tini passes to the console). */
function log(line: string): void {
  console.error(`shuru-agent: ${line}`);
}

/** What the command line asked for. */
export type AgentMode =
  | { kind: "listen"; path: string }
  | { kind: "port"; name: string }
  | { kind: "version" };

/**
 * Parses the agent's arguments.
 *
 * @throws Error with a usage message for anything unknown.
 */
export function parseArgs(args: readonly string[]): AgentMode {
  let mode: AgentMode = { kind: "port", name: DEFAULT_PORT_NAME };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const [flag, inline] = arg.includes("=") ? arg.split(/=(.*)/s, 2) as [string, string] : [
      arg,
      undefined,
    ];
    const value = () => {
      const v = inline ?? args[++i];
      if (v === undefined || v === "") {
        throw new Error(`Cannot parse arguments: ${flag} needs a value`);
      }
      return v;
    };
    if (flag === "--listen") {
      const v = value();
      if (!v.startsWith("unix:") || v.length === 5) {
        throw new Error(`Cannot listen on ${v}: only unix:PATH is supported`);
      }
      mode = { kind: "listen", path: v.slice(5) };
    } else if (flag === "--port") {
      mode = { kind: "port", name: value() };
    } else if (flag === "--version") {
      mode = { kind: "version" };
    } else {
      throw new Error(
        `Cannot parse arguments: unknown ${JSON.stringify(arg)}; ` +
          "usage: agent [--listen unix:PATH | --port NAME]",
      );
    }
  }
  return mode;
}

/** Serves every connection on a Unix socket until a shutdown request or SIGTERM/SIGINT. */
async function listenUnix(path: string): Promise<void> {
  try {
    if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
  } catch {
    // Nothing there.
  }
  const listener = Deno.listen({ transport: "unix", path });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    try {
      listener.close();
    } catch { /* already closed */ }
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  log(`listening on unix:${path}`);
  let next = 1;
  try {
    for await (const conn of listener) {
      const id = next++;
      void serveOne(conn, `connection ${id}`, () => {
        // On a host there is no machine to power off: the agent process plays the VM and ends.
        log("shutdown: disks synced; exiting (listen mode does not power off the host)");
        stop();
      });
    }
  } catch (e) {
    if (!stopping) throw e;
  } finally {
    try {
      Deno.removeSync(path);
    } catch { /* gone */ }
  }
  Deno.exit(0);
}

/**
 * The environment processes inherit: the agent's own, minus the folder Deno puts in front of
 * PATH for npm binaries (`.../deno/node_compat_bin`), which means nothing to guest programs, and
 * minus DENO_DIR (the agent's own build-time cache; a guest `deno` uses its usual one).
 */
export function processBaseEnv(
  env: Record<string, string> = Deno.env.toObject(),
): Record<string, string> {
  const out = { ...env };
  delete out.DENO_DIR;
  if (out.PATH !== undefined) {
    out.PATH = out.PATH.split(":").filter((d) => !d.endsWith("/node_compat_bin")).join(":");
  }
  return out;
}

async function serveOne(
  transport: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> } & {
    close(): void | Promise<void>;
    stopReading?: () => void;
  },
  name: string,
  onShutdown: () => void | Promise<void>,
  inVm = false,
): Promise<void> {
  try {
    const err = await serveConnection(transport, {
      log,
      onShutdown,
      baseEnv: processBaseEnv(),
      ...(inVm ? { identity: {}, network: true } : {}),
      ...(transport.stopReading ? { stopReading: () => transport.stopReading!() } : {}),
    });
    log(err ? `${name} ended: ${err.message}` : `${name} closed`);
  } catch (e) {
    log(`${name} ended: ${(e as Error).message}`);
  } finally {
    try {
      // Awaited: a virtio port can be open only once, and the next session reopens it.
      await transport.close();
    } catch { /* already closed */ }
  }
}

/** Finds `/dev/vportNpM` whose `/sys/class/virtio-ports/vportNpM/name` is `name`. */
export function findVirtioPort(name: string, sysRoot = "/sys/class/virtio-ports"): string | null {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(sysRoot)];
  } catch {
    return null;
  }
  for (const entry of entries) {
    try {
      if (Deno.readTextFileSync(`${sysRoot}/${entry.name}/name`).trim() === name) {
        return `/dev/${entry.name}`;
      }
    } catch {
      // A port without a name file; skip it.
    }
  }
  return null;
}

/** Not `setTimeout`: its first call loads Deno's Node timers (seconds under TCG; `poller.ts`). */
const sleep = (ms: number) => poller.sleep(ms);

/**
 * Serves the virtio-serial port forever. The port is opened once and kept open: closing it would
 * tell QEMU the guest went away. While no host is attached the port polls as HUP, so the agent
 * waits (without sending into the void) and starts a fresh session, HELLO first, as soon as the
 * host's bytes arrive. When a session ends (host gone, or garbage), the agent waits again.
 */
async function servePort(name: string): Promise<void> {
  let warned = false;
  let dev: string | null = null;
  let fd = -1;
  while (fd < 0) {
    dev = findVirtioPort(name);
    if (dev === null) {
      if (!warned) log(`waiting for virtio-serial port ${name} (/sys/class/virtio-ports/*/name)`);
      warned = true;
      await sleep(100);
      continue;
    }
    try {
      fd = libc.open(dev, libc.LINUX.O_RDWR | libc.LINUX.O_NOCTTY | libc.LINUX.O_CLOEXEC);
    } catch (e) {
      log(`cannot open ${dev}: ${(e as Error).message}; retrying`);
      await sleep(500);
    }
  }
  for (;;) {
    // One stream object per session over the same fd; ending a session leaves the fd open.
    const port = new FdStream(fd, { keepFdOpen: true });
    log(`waiting for the host on ${dev}`);
    for (;;) {
      const revents = await libc.pollAsync(fd, libc.LINUX.POLLIN, 1000);
      if (revents & libc.LINUX.POLLHUP) {
        // No host: look again soon (a guest resumed from a snapshot meets its host here).
        await sleep(10);
        continue;
      }
      if (revents & libc.LINUX.POLLIN) break;
    }
    log(`host attached on ${dev}`);
    await serveOne(port, `session on ${dev}`, () => {
      log("shutdown: disks synced; powering off");
      powerOffGuest((line) => console.error(line));
    }, true);
  }
}

/**
 * Pays the one-time costs before the host asks for anything: dlopen of libc and its FFI
 * trampolines (~30 ms), and the first spawn with its reaping and poller set-up (first `true`
 * measured 110-190 ms on a loaded host, later ones a few ms).
 */
async function warmUp(): Promise<void> {
  try {
    libc.getpgid(0);
    const p = startProcess(["true"], { stdin: false, baseEnv: {} });
    await Promise.all([p.stdout.cancel(), p.stderr?.cancel(), p.status]);
  } catch (e) {
    log(`warm-up failed (processes may not start): ${(e as Error).message}`);
  }
}

/**
 * Opens /dev/null on any of fds 0-2 that is closed (an init may start us that way): otherwise a
 * pipe could get number 0-2 and collide with a child's stdio set-up.
 */
function ensureStandardFds(): void {
  for (let fd = 0; fd <= 2; fd++) {
    if (libc.isOpen(fd)) continue;
    const opened = libc.open("/dev/null", libc.LINUX.O_RDWR);
    if (opened !== fd) log(`fd ${fd} was closed; /dev/null landed on ${opened}`);
  }
}

/** Runs the agent with `args` (normally `Deno.args`). */
export async function main(args: readonly string[]): Promise<void> {
  let mode: AgentMode;
  try {
    mode = parseArgs(args);
  } catch (e) {
    log((e as Error).message);
    Deno.exit(2);
  }
  if (mode.kind === "version") {
    // A plain return, not Deno.exit: Deno then stores the bundle's compiled code in its cache,
    // which is how the image build fills the agent's cache (assets/deno_cache.ts).
    console.log(AGENT_VERSION);
    return;
  }
  ensureStandardFds();
  void warmUp();
  if (mode.kind === "listen") {
    await listenUnix(mode.path);
  } else {
    // tini forwards SIGTERM from the host's shutdown path: flush disks before going.
    Deno.addSignalListener("SIGTERM", () => {
      syncAll();
      Deno.exit(0);
    });
    await servePort(mode.name);
  }
}

if (import.meta.main) {
  await main(Deno.args);
}
