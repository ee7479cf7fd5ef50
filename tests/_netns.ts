/**
 * Helpers for end-to-end network tests with real guests: a network namespace whose outside
 * addresses are black holes, the test's HTTP servers inside it, `shuru` run inside it, and the
 * guest-side probe that tells "refused at once" from "hung".
 *
 * Every networked run happens inside a namespace holding only loopback and a veth pair whose far
 * end never answers: the default route points at it, so an address outside loopback is a black
 * hole (a wrongly allowed connection hangs until curl's --max-time instead of leaving the
 * machine). See FINDINGS.md, "Testing refused destinations".
 *
 * @module
 */

import { assertEquals } from "./assert.ts";
import { type CliResult, requireTool, shuruCommandLine, type TestHome } from "./_shuru.ts";
import { LineReader } from "./_lines.ts";

const SERVER = new URL("./_net_http_server.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;

/** A network namespace with loopback and black-holed outside addresses. */
export class BlackholeNetns implements AsyncDisposable {
  /** The namespace's name (`ip netns`). */
  readonly name: string;
  private constructor(name: string) {
    this.name = name;
  }

  /**
   * Makes the namespace. `hostAddresses` are extra addresses (`A.B.C.D/32`) put on its
   * loopback: "the host's own" addresses besides 127.0.0.1, reachable only inside it.
   * `resolvConf` becomes `/etc/resolv.conf` for what runs inside (`ip netns exec` mounts
   * `/etc/netns/NAME/resolv.conf` over it), so the host resolver asks a server the test runs
   * on the namespace's loopback.
   */
  static async create(
    options: { hostAddresses?: string[]; resolvConf?: string } = {},
  ): Promise<BlackholeNetns> {
    if (Deno.uid() !== 0) {
      throw new Error(
        "network tests need root (network namespaces keep their packets on this machine); " +
          "run the suite as root: ./run-tests",
      );
    }
    await requireTool("ip", "iproute2");
    const id = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36);
    const ns = new BlackholeNetns(`shuru-run-${id}`);
    await ip(["netns", "add", ns.name]);
    try {
      const inNs = (args: string[]) => ip(["-n", ns.name, ...args]);
      await inNs(["link", "set", "lo", "up"]);
      for (const a of options.hostAddresses ?? []) await inNs(["addr", "add", a, "dev", "lo"]);
      await inNs(["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"]);
      await inNs(["link", "set", "bh0", "up"]);
      await inNs(["link", "set", "bh1", "up"]);
      await inNs(["addr", "add", "100.127.0.1/30", "dev", "bh0"]);
      await inNs([
        "neigh",
        "replace",
        "100.127.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "bh0",
        "nud",
        "permanent",
      ]);
      await inNs(["route", "add", "default", "via", "100.127.0.2", "dev", "bh0"]);
      if (options.resolvConf !== undefined) {
        await Deno.mkdir(`/etc/netns/${ns.name}`, { recursive: true });
        await Deno.writeTextFile(`/etc/netns/${ns.name}/resolv.conf`, options.resolvConf);
      }
    } catch (e) {
      await ns[Symbol.asyncDispose]();
      throw e;
    }
    return ns;
  }

  /** The command line prefix that runs a program inside the namespace. */
  prefix(): string[] {
    return ["ip", "netns", "exec", this.name];
  }

  /**
   * Starts a Deno script inside the namespace (the test servers) and waits for the first
   * line it prints (its ports); throws with what it printed if it exits first.
   */
  async startScript(
    script: string,
    args: string[],
  ): Promise<{ child: Deno.ChildProcess; firstLine: string }> {
    const [program, ...rest] = this.prefix();
    const child = new Deno.Command(program!, {
      args: [...rest, Deno.execPath(), "run", "-A", "--quiet", "--config", CONFIG, script, ...args],
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    const lines = new LineReader(child.stdout);
    const firstLine = await lines.next();
    lines.release();
    if (firstLine === null) {
      child.kill("SIGKILL");
      await child.status;
      throw new Error(`${script} did not start (its stdout ended)`);
    }
    return { child, firstLine };
  }

  /** Deletes the namespace (and its `/etc/netns` folder). */
  async [Symbol.asyncDispose](): Promise<void> {
    await ip(["netns", "del", this.name]).catch(() => {});
    await Deno.remove(`/etc/netns/${this.name}`, { recursive: true }).catch(() => {});
  }
}

async function ip(args: string[]): Promise<void> {
  const out = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Settings of {@linkcode HostServers.start}. */
export interface HostServersOptions {
  /** Size of `GET /blob`, MiB. Default 16. */
  blobMiB?: number;
  /** Address the servers listen on. Default 127.0.0.1. */
  hostname?: string;
}

/** The test's HTTP servers (tests/_net_http_server.ts), inside the namespace. */
export class HostServers implements AsyncDisposable {
  /** One port per server. */
  readonly ports: number[];
  /** SHA-256 (hex) of `GET /blob`. */
  readonly blobSha256: string;
  readonly #child: Deno.ChildProcess;
  private constructor(child: Deno.ChildProcess, ports: number[], blobSha256: string) {
    this.#child = child;
    this.ports = ports;
    this.blobSha256 = blobSha256;
  }

  /** Starts `count` servers in `ns` and waits until they listen. */
  static async start(
    ns: BlackholeNetns,
    count: number,
    options: HostServersOptions = {},
  ): Promise<HostServers> {
    const { child, firstLine } = await ns.startScript(SERVER, [
      String(count),
      String(options.blobMiB ?? 16),
      options.hostname ?? "127.0.0.1",
    ]);
    const info = JSON.parse(firstLine) as { ports: number[]; blobSha256: string };
    return new HostServers(child, info.ports, info.blobSha256);
  }

  /** Stops the servers. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* exited */ }
    await this.#child.status;
    await this.#child.stdout.cancel().catch(() => {});
  }
}

/** Runs `shuru ARGS` inside the namespace (or on the host when `ns` is undefined). */
export async function runShuru(
  home: TestHome,
  ns: BlackholeNetns | undefined,
  args: string[],
): Promise<CliResult> {
  const argv = [...(ns ? ns.prefix() : []), ...shuruCommandLine(), ...args];
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    env: home.env(),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Parses `key=value` lines the guest scripts print. */
export function fields(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const m = /^([a-z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** Guest shell: `probe NAME URL` prints `NAME=<curl rc> <ms>` (connect attempt, 10 s cap). */
export const PROBE_FN = "probe() { t0=$(date +%s%N); curl -sS -o /dev/null --max-time 10 " +
  '"$2" 2>/dev/null; rc=$?; echo "$1=$rc $(( ($(date +%s%N) - t0) / 1000000 ))"; }';

/**
 * Asserts a probe failed with `rc`: refused or unresolved, not hung. curl's exit code says which
 * (28 is its 10 s cap), whatever the guest's speed; the time is only reported.
 */
export function assertFastFailure(
  f: Record<string, string>,
  key: string,
  rc: number,
  all: string,
): void {
  const [code, ms] = (f[key] ?? "").split(" ").map(Number);
  assertEquals(
    code,
    rc,
    `${key}: curl exit code (7 refused, 6 no such name, 28 hung) after ${ms} ms\n${all}`,
  );
}

/** A CLI result as text for assertion messages. */
export function describe(r: CliResult): string {
  return `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}
