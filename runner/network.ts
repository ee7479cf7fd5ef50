/**
 * The guest's network for one sandbox: a Unix socket QEMU's NIC backend reaches, and a
 * {@linkcode Relay} (our user-space TCP/IP stack + policy proxy) serving the frames on it.
 *
 * Three link transports (docs/network.md): `stream` (default), a stream socket QEMU's
 * `-netdev stream` connects to, frames length-prefixed; `datagram`, a Unix datagram socket
 * connected to QEMU's `-netdev dgram` one, one frame per datagram (the shape macOS's
 * Virtualization framework hands over; tested and measured here through QEMU); `pair`, the same
 * datagrams over a `socketpair` whose other end the VM gets as a file descriptor (what the vz
 * backend hands the framework's `VZFileHandleNetworkDeviceAttachment`).
 *
 * @module
 */

import {
  bindDatagramSocket,
  connectDatagramSocket,
  type ConnectionRecord,
  DatagramLink,
  type Dialer,
  type FrameLink,
  NetworkPolicy,
  parseIpv4,
  Relay,
  StreamLink,
} from "../proxy/mod.ts";
import type { NetConfig } from "../vm/mod.ts";
import { libc } from "../ffi/mod.ts";
import { RunnerError } from "./errors.ts";
import type { NetworkSpec } from "../spec/mod.ts";

/**
 * The guest NIC's MTU (virtio-net `host_mtu`, DHCP option 26, the stack's MSS) unless a caller
 * sets one: chosen by measurement (bench/run_net_bench.ts, numbers in docs/network.md).
 */
export const DEFAULT_GUEST_MTU = 65520;

/** How the NIC's frames reach the stack (see the module doc). */
export type LinkTransport = "stream" | "datagram" | "pair";

/** Where a guest network's reports go, its link MTU and transport (runtime choices, not settings). */
export interface NetworkHooks {
  /** Link MTU, 576-65520 (default {@linkcode DEFAULT_GUEST_MTU}); benchmarks compare values. */
  mtu?: number;
  /**
   * The link transport (default `stream`; `datagram` is the shape a macOS host uses, over
   * paths; `pair`, over a socket pair, is what the vz backend takes).
   */
  link?: LinkTransport;
  /** One line per refused name or connection (rate-limited by the relay). */
  onBlocked?: (line: string) => void;
  /** One record per finished connection (`--net-log`). */
  onConnection?: (record: ConnectionRecord) => void;
}

/** How connections leave the host (the secrets' terminator plugs in here). */
export interface GuestNetworkHooks {
  /** Opens the host end of an allowed connection (default: a plain TCP connection). */
  dial?: Dialer;
  /** Names whose first bytes are inspected before dialing (the dialer needs the protocol). */
  inspect?: (name: string) => boolean;
}

/** The stack's own addresses (gateway, DNS): never destinations, even with --allow-private. */
const STACK_ADDRESSES = ["10.0.2.2", "10.0.2.3"].map(parseIpv4);

/** Builds the policy; throws `RunnerError` (`invalid_config`) naming a bad pattern or address. */
export function buildPolicy(network: NetworkSpec): NetworkPolicy {
  try {
    return new NetworkPolicy({
      allowNet: network.allowNet ?? false,
      allowHosts: network.allowHosts ?? [],
      addHosts: network.addHosts ?? {},
      allowPrivate: network.allowPrivate ?? false,
      exposeHost: network.exposeHost ?? [],
      // Asked at every decision: addresses the host gains while the guest runs are closed too.
      hostAddresses,
      stackAddresses: STACK_ADDRESSES,
    });
  } catch (err) {
    throw new RunnerError("invalid_config", (err as Error).message, { cause: err });
  }
}

/** One word or a few for `shuru ps`: `none`, `allow-net`, `allow-host a.com,b.com +expose 8080`. */
export function describeNetwork(network: NetworkSpec | undefined): string {
  if (!network) return "none";
  const parts: string[] = [];
  if ((network.allowHosts ?? []).length > 0) {
    parts.push(`allow-host ${network.allowHosts!.join(",")}`);
  } else if (network.allowNet) parts.push("allow-net");
  if (network.allowPrivate) parts.push("+private");
  const secrets = network.secrets ?? [];
  if (secrets.length > 0) parts.push(`+secrets ${secrets.map((s) => s.name).join(",")}`);
  const exposed = network.exposeHost ?? [];
  if (exposed.length > 0) {
    parts.push(`${parts.length > 0 ? "+" : ""}expose ${exposed.map((e) => e.guestPort).join(",")}`);
  }
  return parts.length > 0 ? parts.join(" ") : "none";
}

/** `--net-log`: one JSON line per finished guest connection, appended to a file. */
export class NetLog implements Disposable {
  readonly #file: Deno.FsFile;
  private constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /** Opens `path` for appending (creating it). */
  static async open(path: string): Promise<NetLog> {
    return new NetLog(await Deno.open(path, { append: true, create: true }));
  }

  /** Appends one record; a failing write never disturbs the guest's traffic. */
  write(record: ConnectionRecord): void {
    const line = new TextEncoder().encode(JSON.stringify(record) + "\n");
    try {
      let off = 0;
      while (off < line.length) off += this.#file.writeSync(line.subarray(off));
    } catch {
      // disk full, or closed at shutdown: the log is best effort
    }
  }

  /** Closes the file. */
  close(): void {
    try {
      this.#file.close();
    } catch { /* already closed */ }
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The host's own IPv4 addresses now (closed as destinations like private ranges). */
function hostAddresses(): number[] {
  try {
    return Deno.networkInterfaces().filter((i) => i.family === "IPv4").map((i) =>
      parseIpv4(i.address)
    );
  } catch {
    return [];
  }
}

/** Where the frames come from before the relay starts. */
type Pending =
  | { kind: "stream"; listener: Deno.UnixListener }
  | { kind: "datagram"; fd: number; link: DatagramLink; vmSocket: string }
  | { kind: "pair"; link: DatagramLink; vmEnd: number };

/**
 * Listens on `socketPath` for QEMU, then relays its frames until {@linkcode close}. Create it
 * before QEMU starts (QEMU's stream client connects at start-up; its datagram end sends to ours).
 */
export class GuestNetwork implements AsyncDisposable {
  /** What to pass to `launchGuest({ net })`. */
  readonly net: NetConfig;
  readonly #pending: Pending;
  readonly #policy: NetworkPolicy;
  readonly #options: NetworkSpec & NetworkHooks & GuestNetworkHooks;
  readonly #onError: (line: string) => void;
  readonly #abort = new AbortController();
  #relay: Relay | undefined;
  #running: Promise<void>;
  #closed = false;

  private constructor(
    pending: Pending,
    socketPath: string,
    policy: NetworkPolicy,
    options: NetworkSpec & NetworkHooks & GuestNetworkHooks,
    onError: (line: string) => void,
  ) {
    this.#pending = pending;
    this.#policy = policy;
    this.#options = options;
    this.#onError = onError;
    const mtu = options.mtu ?? DEFAULT_GUEST_MTU;
    this.net = pending.kind === "datagram"
      ? { transport: "dgram", socket: socketPath, vmSocket: pending.vmSocket, mtu }
      : pending.kind === "pair"
      ? { transport: "pair", fd: pending.vmEnd, mtu }
      : { socket: socketPath, mtu };
    this.#running = this.#serve();
  }

  /**
   * Listens on `socketPath` and serves the first connection (QEMU's) with a relay; with
   * `link: "datagram"`, binds a datagram socket there and connects it to `vmSocket` (default
   * `<socketPath>.vm`) once QEMU has bound that; with `link: "pair"`, makes a datagram socket
   * pair and serves one end at once (`socketPath` is then unused): the other is `net.fd`, for
   * the VM to borrow until it has exited, then closed by {@linkcode close}. `onError` receives a
   * one-line message when the relay ends with an error.
   */
  static listen(
    socketPath: string,
    options: NetworkSpec & NetworkHooks & GuestNetworkHooks & {
      onError?: (line: string) => void;
      vmSocket?: string;
    },
  ): GuestNetwork {
    const policy = buildPolicy(options);
    const mtu = options.mtu ?? DEFAULT_GUEST_MTU;
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65520) {
      throw new RunnerError("invalid_config", `Cannot use MTU ${mtu}: expected 576 to 65520`);
    }
    let pending: Pending;
    if (options.link === "pair") {
      const [ours, vmEnd] = libc.unixDatagramPair();
      pending = { kind: "pair", link: new DatagramLink(ours), vmEnd };
    } else if (options.link === "datagram") {
      const vmSocket = options.vmSocket ?? `${socketPath}.vm`;
      try {
        Deno.removeSync(vmSocket);
      } catch { /* not there */ }
      const fd = bindDatagramSocket(socketPath);
      pending = { kind: "datagram", fd, link: new DatagramLink(fd), vmSocket };
    } else {
      pending = { kind: "stream", listener: Deno.listen({ transport: "unix", path: socketPath }) };
    }
    return new GuestNetwork(
      pending,
      socketPath,
      policy,
      options,
      options.onError ?? ((line) => console.error(line)),
    );
  }

  /** The relay once QEMU connected (counters, flows). */
  get relay(): Relay | undefined {
    return this.#relay;
  }

  /** The link once QEMU is there, or undefined when closed first. */
  async #link(): Promise<FrameLink | undefined> {
    const pending = this.#pending;
    if (pending.kind === "pair") return this.#closed ? undefined : pending.link;
    if (pending.kind === "datagram") {
      // QEMU binds its end while it starts; our socket holds what it sends until then.
      const connected = await connectDatagramSocket(pending.fd, pending.vmSocket, {
        signal: this.#abort.signal,
      }).catch(() => false);
      if (!connected || this.#closed) {
        pending.link.close();
        return undefined;
      }
      return pending.link;
    }
    let conn: Deno.UnixConn;
    try {
      conn = await pending.listener.accept();
    } catch {
      return undefined; // closed before QEMU connected
    } finally {
      // One guest, one connection: nobody else may attach to the stack.
      try {
        pending.listener.close();
      } catch { /* already closed */ }
    }
    if (this.#closed) {
      conn.close();
      return undefined;
    }
    return new StreamLink(conn);
  }

  async #serve(): Promise<void> {
    const link = await this.#link();
    if (!link) return;
    const relay = new Relay({
      link,
      policy: this.#policy,
      stack: { mtu: this.net.mtu ?? DEFAULT_GUEST_MTU },
      ...(this.#options.onBlocked ? { onBlocked: this.#options.onBlocked } : {}),
      ...(this.#options.onConnection ? { onConnection: this.#options.onConnection } : {}),
      ...(this.#options.dial ? { dial: this.#options.dial } : {}),
      ...(this.#options.inspect ? { inspect: this.#options.inspect } : {}),
    });
    this.#relay = relay;
    if (this.#closed) relay.close();
    try {
      await relay.run();
    } catch (err) {
      if (!this.#closed) this.#onError(`shuru: guest network stopped: ${(err as Error).message}`);
    }
  }

  /**
   * Stops the relay (closing every host connection) and the listener; with a socket pair, also
   * the VM's end (the VM must have exited).
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#abort.abort();
      const pending = this.#pending;
      if (pending.kind === "stream") {
        try {
          pending.listener.close();
        } catch { /* already closed */ }
      }
      this.#relay?.close();
      if (pending.kind === "pair") {
        if (!this.#relay) pending.link.close();
        try {
          libc.close(pending.vmEnd);
        } catch { /* already closed */ }
      }
    }
    await this.#running;
  }

  /** Same as {@linkcode close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
