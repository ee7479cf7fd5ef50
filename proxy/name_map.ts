/**
 * The fake-IP pool: every name our DNS answers gets an address from a reserved range
 * (198.18.0.0/15, RFC 2544 benchmarking space, never routed), and a connection to that address
 * maps back to the name. The proxy then dials the name itself, so it always knows which name a
 * connection is for, and an allowed name cannot be aimed at another address.
 *
 * @module
 */

import { type Ipv4Cidr, parseCidr, prefixMask } from "./wire/address.ts";

/** Default pool. */
export const DEFAULT_FAKE_POOL = "198.18.0.0/15";
/** Default number of names remembered (oldest forgotten first beyond that). */
export const DEFAULT_MAX_NAMES = 16_384;

/** Options of a pool. */
export interface FakeIpPoolOptions {
  /** Range to hand out (network and broadcast addresses are skipped). */
  cidr?: string;
  /** Most names remembered at once. */
  maxNames?: number;
}

/** Maps names to pool addresses and back. Bounded: the oldest name is evicted when full. */
export class FakeIpPool {
  /** The range handed out. */
  readonly cidr: Ipv4Cidr;
  readonly #first: number;
  readonly #count: number;
  readonly #maxNames: number;
  #next = 0;
  readonly #byName = new Map<string, number>();
  readonly #byAddress = new Map<number, string>();

  /** A pool over `cidr` (at least a /30). */
  constructor(opts: FakeIpPoolOptions = {}) {
    this.cidr = parseCidr(opts.cidr ?? DEFAULT_FAKE_POOL);
    if (this.cidr.prefix > 30) {
      throw new RangeError(`Cannot use fake pool ${opts.cidr}: needs at least a /30`);
    }
    this.#first = ((this.cidr.address & prefixMask(this.cidr.prefix)) >>> 0) + 1;
    this.#count = 2 ** (32 - this.cidr.prefix) - 2;
    this.#maxNames = Math.min(opts.maxNames ?? DEFAULT_MAX_NAMES, this.#count);
  }

  /** Names held. */
  get size(): number {
    return this.#byName.size;
  }

  /** The address for `name`, assigning one (and evicting the oldest name) when needed. */
  assign(name: string): number {
    const key = name.toLowerCase();
    const known = this.#byName.get(key);
    if (known !== undefined) {
      // Refresh: move to the young end so busy names are evicted last.
      this.#byName.delete(key);
      this.#byName.set(key, known);
      return known;
    }
    if (this.#byName.size >= this.#maxNames) {
      const [oldName, oldAddr] = this.#byName.entries().next().value!;
      this.#byName.delete(oldName);
      this.#byAddress.delete(oldAddr);
    }
    let addr: number;
    do {
      addr = (this.#first + this.#next) >>> 0;
      this.#next = (this.#next + 1) % this.#count;
    } while (this.#byAddress.has(addr));
    this.#byName.set(key, addr);
    this.#byAddress.set(addr, key);
    return addr;
  }

  /** The name behind a pool address. */
  nameOf(address: number): string | undefined {
    return this.#byAddress.get(address);
  }
}
