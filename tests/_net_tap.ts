/**
 * Test helper: a Linux TAP device opened through libc (Deno FFI), moved into a fresh network
 * namespace, so the kernel's own IPv4/TCP stack is a real peer for `proxy/`. Root only.
 *
 * The namespace has only `lo` and the TAP link, whose other end is this process: nothing it
 * sends can leave the machine.
 *
 * @module
 */

const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const O_RDWR = 0x2;
const O_NONBLOCK = 0x800;
const POLLIN = 0x1;
const EAGAIN = 11;

type Libc = ReturnType<typeof openLibc>;

function openLibc() {
  return Deno.dlopen("libc.so.6", {
    open: { parameters: ["buffer", "i32"], result: "i32" },
    ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
    read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    close: { parameters: ["i32"], result: "i32" },
    poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
    __errno_location: { parameters: [], result: "pointer" },
  });
}

/** Runs a command, throwing with its stderr when it fails. */
export async function sh(cmd: string[], opts: { allowFail?: boolean } = {}): Promise<string> {
  const out = await new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success && !opts.allowFail) {
    throw new Error(`${cmd.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** Explains what a TAP test needs when it is not available. */
export function tapPrerequisite(): string | undefined {
  if (Deno.build.os !== "linux") return "TAP tests need Linux";
  if (Deno.uid() !== 0) return "TAP tests need root (run the suite as root: ./run-tests)";
  try {
    Deno.statSync("/dev/net/tun");
  } catch {
    return "TAP tests need /dev/net/tun (modprobe tun)";
  }
  try {
    Deno.statSync("/usr/sbin/ip");
  } catch {
    return "TAP tests need the ip tool: apt-get install iproute2";
  }
  return undefined;
}

/** A TAP device inside its own network namespace. */
export class TapNamespace {
  readonly name: string;
  readonly netns: string;
  readonly #libc: Libc;
  readonly #fd: number;
  #closed = false;
  #pollBuf = new Uint8Array(8);
  #inFlight: Promise<unknown> = Promise.resolve();

  private constructor(libc: Libc, fd: number, name: string, netns: string) {
    this.#libc = libc;
    this.#fd = fd;
    this.name = name;
    this.netns = netns;
  }

  /** Creates the TAP device and a namespace holding it (link up, IPv6 off, no address). */
  static async create(): Promise<TapNamespace> {
    const missing = tapPrerequisite();
    if (missing) throw new Error(missing);
    const id = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36);
    const name = `shtap${id}`.slice(0, 15);
    const netns = `shuru-net-${id}`;
    const libc = openLibc();
    const fd = libc.symbols.open(new TextEncoder().encode("/dev/net/tun\0"), O_RDWR | O_NONBLOCK);
    if (fd < 0) {
      libc.close();
      throw new Error("Cannot open /dev/net/tun");
    }
    const ifr = new Uint8Array(40);
    ifr.set(new TextEncoder().encode(name));
    new DataView(ifr.buffer).setUint16(16, IFF_TAP | IFF_NO_PI, true);
    if (libc.symbols.ioctl(fd, BigInt(TUNSETIFF), ifr) < 0) {
      libc.symbols.close(fd);
      libc.close();
      throw new Error(`Cannot create TAP device ${name}: TUNSETIFF failed`);
    }
    const tap = new TapNamespace(libc, fd, name, netns);
    try {
      await sh(["ip", "netns", "add", netns]);
      await sh(["ip", "link", "set", name, "netns", netns]);
      await tap.exec(["sysctl", "-q", "-w", `net.ipv6.conf.all.disable_ipv6=1`]);
      await tap.exec(["ip", "link", "set", "lo", "up"]);
      await tap.exec(["ip", "link", "set", name, "up"]);
    } catch (e) {
      await tap.close();
      throw e;
    }
    return tap;
  }

  /** Runs a command inside the namespace and returns its output (throws on failure). */
  exec(cmd: string[], opts: { allowFail?: boolean } = {}): Promise<string> {
    return sh(["ip", "netns", "exec", this.netns, ...cmd], opts);
  }

  /** Spawns a command inside the namespace. */
  spawn(cmd: string[]): Deno.ChildProcess {
    return new Deno.Command("ip", {
      args: ["netns", "exec", this.netns, ...cmd],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  }

  /** Reads one frame, waiting up to `timeoutMs`; undefined on timeout or after close. */
  async read(timeoutMs = 100): Promise<Uint8Array | undefined> {
    const buf = new Uint8Array(65536 + 14);
    while (!this.#closed) {
      const n = Number(this.#libc.symbols.read(this.#fd, buf, BigInt(buf.length)));
      if (n >= 0) return buf.slice(0, n);
      const errno = new Deno.UnsafePointerView(this.#libc.symbols.__errno_location()!).getInt32();
      if (errno !== EAGAIN) throw new Error(`Cannot read TAP device ${this.name}: errno ${errno}`);
      const view = new DataView(this.#pollBuf.buffer);
      view.setInt32(0, this.#fd, true);
      view.setInt16(4, POLLIN, true);
      view.setInt16(6, 0, true);
      const polling = this.#libc.symbols.poll(this.#pollBuf, 1n, timeoutMs);
      this.#inFlight = polling;
      const ready = await polling;
      if (ready === 0) return undefined;
    }
    return undefined;
  }

  /** Reads one frame if one is ready, without waiting. */
  readNow(): Promise<Uint8Array | undefined> {
    if (this.#closed) return Promise.resolve(undefined);
    const buf = new Uint8Array(65536 + 14);
    const n = Number(this.#libc.symbols.read(this.#fd, buf, BigInt(buf.length)));
    return Promise.resolve(n >= 0 ? buf.slice(0, n) : undefined);
  }

  /** Writes one frame to the kernel. */
  write(frame: Uint8Array): void {
    if (this.#closed) return;
    const n = Number(this.#libc.symbols.write(this.#fd, frame, BigInt(frame.length)));
    if (n !== frame.length) throw new Error(`Cannot write frame to TAP device ${this.name}`);
  }

  /** Closes the device and deletes the namespace. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#inFlight; // never unload libc under a running poll()
    this.#libc.symbols.close(this.#fd);
    this.#libc.close();
    await sh(["ip", "netns", "del", this.netns], { allowFail: true });
  }

  /** Closes on `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** A FrameLink over the TAP device (one frame per read/write, like a datagram link). */
export class TapLink {
  readonly #tap: TapNamespace;
  #closed = false;

  /** Wraps an open TAP namespace (the caller closes it). */
  constructor(tap: TapNamespace) {
    this.#tap = tap;
  }

  /** Frames the kernel sent; null once closed. */
  async receive(): Promise<Uint8Array[] | null> {
    while (!this.#closed) {
      const f = await this.#tap.read(50);
      if (f) {
        const batch = [f];
        // Drain what is already there without waiting, to batch like the stream link.
        for (let i = 0; i < 63; i++) {
          const more = await this.#tap.readNow();
          if (!more) break;
          batch.push(more);
        }
        return batch;
      }
    }
    return null;
  }

  /** Writes a frame to the kernel at once. */
  send(frame: Uint8Array): boolean {
    if (!this.#closed) this.#tap.write(frame);
    return true;
  }

  /** Writes are synchronous: nothing to wait for. */
  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** Stops receiving. */
  close(): void {
    this.#closed = true;
  }
}
