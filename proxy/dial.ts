/**
 * The contract between the relay and whatever opens the host end of a guest connection: a plain
 * TCP dial, or the secret terminator (`proxy/secret/`) that sits in between. Its own module so
 * a dialer never imports the relay that calls it.
 *
 * @module
 */

/**
 * The host end of a relayed connection: what the relay reads and writes. A `Deno.TcpConn`
 * is one; so is anything that sits in between (a TLS terminator that swaps secrets, say).
 */
export interface HostStream {
  /** Reads into `p`; resolves to the byte count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes from `p`; resolves to the byte count written. */
  write(p: Uint8Array): Promise<number>;
  /** Ends the write direction (the guest sent FIN); reads continue. */
  closeWrite(): Promise<void>;
  /** Closes both directions. */
  close(): void;
}

/** Where an allowed connection goes, as the dialer sees it. */
export interface DialTarget {
  /** Host or address to connect to (a literal IPv4 address after policy and resolution). */
  hostname: string;
  /** Port. */
  port: number;
  /** The name the guest resolved (from the fake pool), when it used a name. */
  name?: string;
  /**
   * What the guest's first bytes were, when the relay looked at them (with an allow-list, or
   * for names `RelayOptions.inspect` picks): they are written to the stream after the dial.
   */
  protocol?: "tls" | "http" | "other";
}

/** Opens the host end of an allowed connection. */
export type Dialer = (target: DialTarget) => Promise<HostStream>;
