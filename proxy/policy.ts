/**
 * Network policy: which names resolve and which connections open (sans-I/O, no lookups).
 *
 * - `--allow-host PATTERN` (`example.com`, `*.example.com`, or an IPv4 literal): when the list
 *   is non-empty, only matching names resolve and a connection must come from such a name
 *   (no literal-IP bypass, except IPv4 literals listed themselves). A wildcard does not match
 *   the bare domain.
 * - `--add-host NAME:IP` names a host; with an allow-list the name must also be on it.
 * - Private and special ranges ({@linkcode SPECIAL_RANGES}: loopback, RFC 1918, link-local
 *   with the cloud metadata addresses, shared, documentation and benchmark ranges, multicast,
 *   reserved, broadcast; plus the gateway and every address the host has when the connection
 *   is decided) stay closed unless the name came from `--add-host` or `allowPrivate` is set.
 *   An allowed name, even an exact one, that resolves into them is refused: DNS rebinding, or
 *   a CNAME into a private network.
 * - Names are compared in the normalised form of `dns/name.ts`; a name outside that syntax is
 *   refused.
 * - `--expose-host PORT[:HOSTPORT]`: `host.shuru.internal:PORT` reaches the host's
 *   127.0.0.1:HOSTPORT and nothing else on the host. Alone it gives a NIC that reaches only that.
 *
 * @module
 */

import {
  cidrContains,
  type Ipv4Cidr,
  ipv4ToString,
  isIpv4,
  parseCidr,
  parseIpv4,
} from "./wire/address.ts";
import { normalizeHostName } from "./dns/mod.ts";

/** The name under which exposed host ports appear in the guest. */
export const EXPOSE_HOST_NAME = "host.shuru.internal";

/** A refused or allowed decision. */
export type Verdict = { allowed: true } | { allowed: false; reason: string };

/** Where the proxy dials for an allowed connection. */
export type ConnectDecision =
  | { allowed: true; hostname: string; port: number }
  | { allowed: false; reason: string };

/** A guest port of `host.shuru.internal` mapped to a port on the host's loopback. */
export interface ExposedPort {
  /** Port the guest connects to. */
  guestPort: number;
  /** Port on the host's 127.0.0.1. */
  hostPort: number;
}

/** Policy settings (from CLI flags and config). */
export interface NetworkPolicyOptions {
  /** `--allow-net`: public destinations open. Implied by allowHosts. */
  allowNet?: boolean;
  /** `--allow-host` patterns. Empty: every public destination. */
  allowHosts?: string[];
  /** `--add-host NAME:IP` entries. */
  addHosts?: Record<string, string>;
  /** `--allow-private`: private ranges open too. */
  allowPrivate?: boolean;
  /** `--expose-host` ports. */
  exposeHost?: ExposedPort[];
  /**
   * The host's own addresses (closed like private ranges). A function is asked at every
   * decision, so addresses the host gains after start are closed too.
   */
  hostAddresses?: Iterable<number> | (() => Iterable<number>);
  /** Addresses of the stack itself (gateway, DNS): closed as destinations, whatever the flags. */
  stackAddresses?: number[];
}

/**
 * Special-purpose ranges closed by default (where the proxy dials, not what our DNS answers:
 * the fake pool 198.18.0.0/15 is handed to the guest and mapped back to names before any
 * dial), with the words used in refusal lines. Most specific first.
 */
export const SPECIAL_RANGES: ReadonlyArray<{ cidr: Ipv4Cidr; what: string }> = [
  { cidr: parseCidr("169.254.169.254/32"), what: "cloud metadata address" },
  { cidr: parseCidr("168.63.129.16/32"), what: "cloud host endpoint (Azure WireServer)" },
  { cidr: parseCidr("255.255.255.255/32"), what: "broadcast address" },
  { cidr: parseCidr("0.0.0.0/8"), what: "'this network' address" },
  { cidr: parseCidr("10.0.0.0/8"), what: "private address (RFC 1918)" },
  { cidr: parseCidr("100.64.0.0/10"), what: "shared address (RFC 6598)" },
  { cidr: parseCidr("127.0.0.0/8"), what: "loopback address" },
  { cidr: parseCidr("169.254.0.0/16"), what: "link-local address" },
  { cidr: parseCidr("172.16.0.0/12"), what: "private address (RFC 1918)" },
  { cidr: parseCidr("192.0.0.0/24"), what: "IETF protocol address (RFC 6890)" },
  { cidr: parseCidr("192.0.2.0/24"), what: "documentation address (RFC 5737)" },
  { cidr: parseCidr("192.168.0.0/16"), what: "private address (RFC 1918)" },
  { cidr: parseCidr("198.18.0.0/15"), what: "benchmark/fake-pool address (RFC 2544)" },
  { cidr: parseCidr("198.51.100.0/24"), what: "documentation address (RFC 5737)" },
  { cidr: parseCidr("203.0.113.0/24"), what: "documentation address (RFC 5737)" },
  { cidr: parseCidr("224.0.0.0/4"), what: "multicast address" },
  { cidr: parseCidr("240.0.0.0/4"), what: "reserved address" },
];

/** Validates and normalises an allow pattern. Throws SyntaxError with a usable message. */
export function parseHostPattern(pattern: string): string {
  const p = pattern.trim().toLowerCase().replace(/\.$/, "");
  if (isIpv4(p)) return p;
  const body = p.startsWith("*.") ? p.slice(2) : p;
  const label = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;
  if (body === "" || body.length > 253 || !body.split(".").every((l) => label.test(l))) {
    throw new SyntaxError(
      `Cannot use host pattern "${pattern}": expected a name like example.com or *.example.com`,
    );
  }
  return p;
}

/** Host patterns (`example.com`, `*.example.com`) and the names they match. */
export class HostPatternSet {
  readonly #exact = new Set<string>();
  /** Wildcards as suffixes (".example.com"). */
  readonly #suffixes: string[] = [];

  /** Validates every pattern with {@linkcode parseHostPattern} (throws SyntaxError). */
  constructor(patterns: Iterable<string> = []) {
    for (const raw of patterns) {
      const p = parseHostPattern(raw);
      if (p.startsWith("*.")) this.#suffixes.push(p.slice(1));
      else this.#exact.add(p);
    }
  }

  /** No pattern at all. */
  get empty(): boolean {
    return this.#exact.size === 0 && this.#suffixes.length === 0;
  }

  /** Does a pattern match `name` (case-insensitive, trailing dot ignored)? */
  matches(name: string): boolean {
    const n = name.toLowerCase().replace(/\.$/, "");
    return this.#exact.has(n) || this.#suffixes.some((w) => n.endsWith(w));
  }

  /** Is `name` listed exactly, not only through a wildcard? */
  hasExact(name: string): boolean {
    return this.#exact.has(name.toLowerCase().replace(/\.$/, ""));
  }
}

/** The policy. Pure: every method is a decision on its arguments. */
export class NetworkPolicy {
  /** Public destinations are open (`--allow-net`, or implied by an allow-list). */
  readonly allowNet: boolean;
  /** Private ranges are open too (`--allow-private`). */
  readonly allowPrivate: boolean;
  readonly #allowList: HostPatternSet;
  readonly #addHosts = new Map<string, number>();
  readonly #exposed = new Map<number, number>();
  readonly #stackAddresses = new Set<number>();
  readonly #hostAddresses: () => Iterable<number>;

  /** Validates every pattern and address (throws SyntaxError naming the bad one). */
  constructor(opts: NetworkPolicyOptions = {}) {
    this.#allowList = new HostPatternSet(opts.allowHosts ?? []);
    this.allowNet = (opts.allowNet ?? false) || this.hasAllowList;
    this.allowPrivate = opts.allowPrivate ?? false;
    for (const [name, ip] of Object.entries(opts.addHosts ?? {})) {
      this.#addHosts.set(parseHostPattern(name).replace(/^\*\./, ""), parseIpv4(ip));
    }
    for (const e of opts.exposeHost ?? []) this.#exposed.set(e.guestPort, e.hostPort);
    const own = opts.hostAddresses ?? [];
    if (typeof own === "function") this.#hostAddresses = own;
    else {
      const fixed = [...own];
      this.#hostAddresses = () => fixed;
    }
    for (const a of opts.stackAddresses ?? []) this.#stackAddresses.add(a);
  }

  /** An allow-list was given. */
  get hasAllowList(): boolean {
    return !this.#allowList.empty;
  }

  /** The guest gets a NIC at all (`--allow-net` or some `--expose-host`). */
  get networkEnabled(): boolean {
    return this.allowNet || this.#exposed.size > 0;
  }

  /** The `--add-host` address for a name, if any. */
  addHostAddress(name: string): number | undefined {
    const n = normalizeHostName(name);
    return n === undefined ? undefined : this.#addHosts.get(n);
  }

  /** May this name resolve? (DNS answers NXDOMAIN otherwise.) */
  checkName(name: string): Verdict {
    const n = normalizeHostName(name);
    if (n === undefined) return { allowed: false, reason: "not a valid host name" };
    if (n === EXPOSE_HOST_NAME) {
      return this.#exposed.size > 0
        ? { allowed: true }
        : { allowed: false, reason: "no --expose-host port" };
    }
    if (!this.allowNet) return { allowed: false, reason: "network access is off (no --allow-net)" };
    if (!this.hasAllowList) return { allowed: true };
    if (this.#allowList.matches(n)) return { allowed: true };
    return { allowed: false, reason: "not in --allow-host" };
  }

  /**
   * Why `address` is closed by default, or undefined for a public address. The host's own
   * addresses are asked for now, not at start.
   */
  closedRangeOf(address: number): string | undefined {
    if (this.#stackAddresses.has(address)) return "gateway address";
    for (const a of this.#hostAddresses()) if (a === address) return "host's own address";
    for (const r of SPECIAL_RANGES) if (cidrContains(r.cidr, address)) return r.what;
    return undefined;
  }

  /**
   * Decides a connection. `name` is the name the guest resolved (from our fake pool), absent
   * for a literal IP; `address` is the real address the proxy would dial (for a name: what it
   * resolved to on the host, or its `--add-host` address).
   */
  checkConnection(dest: { name?: string; address: number; port: number }): ConnectDecision {
    const { name, address, port } = dest;
    if (name === EXPOSE_HOST_NAME) {
      const hostPort = this.#exposed.get(port);
      return hostPort === undefined
        ? { allowed: false, reason: `port ${port} is not exposed (--expose-host)` }
        : { allowed: true, hostname: "127.0.0.1", port: hostPort };
    }
    if (!this.allowNet) return { allowed: false, reason: "network access is off (no --allow-net)" };
    const literal = ipv4ToString(address);
    if (name === undefined) {
      // The guest's gateway and DNS server are the stack itself: dialing that address on the
      // host would reach whatever the host has there, so no flag opens it.
      if (this.#stackAddresses.has(address)) {
        return { allowed: false, reason: "gateway address (only DNS on port 53 answers there)" };
      }
      if (this.hasAllowList && !this.#allowList.hasExact(literal)) {
        return { allowed: false, reason: "literal IP address, not a name from --allow-host" };
      }
      const closed = this.closedRangeOf(address);
      if (closed && !this.allowPrivate && !this.#allowList.hasExact(literal)) {
        return { allowed: false, reason: `${closed} (use --allow-private)` };
      }
      return { allowed: true, hostname: literal, port };
    }
    const nameVerdict = this.checkName(name);
    if (!nameVerdict.allowed) return nameVerdict;
    const closed = this.closedRangeOf(address);
    // Only the user's own mapping (--add-host) or --allow-private opens these for a name: an
    // allow entry, exact or not, says which name, not where that name's DNS may point.
    const trusted = this.#addHosts.has(normalizeHostName(name)!) || this.allowPrivate;
    if (closed && !trusted) {
      return {
        allowed: false,
        reason: `${name} resolved to ${literal}, a ${closed} (use --add-host or --allow-private)`,
      };
    }
    return { allowed: true, hostname: literal, port };
  }
}
