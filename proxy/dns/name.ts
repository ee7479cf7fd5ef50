/**
 * Host name syntax, checked once where a name enters from the guest (a DNS question, a TLS
 * server name, an HTTP Host or absolute-form target) so the policy only ever compares
 * normalised names: lower case, one trailing dot removed, at most 253 bytes, each label 1-63
 * bytes of ASCII letters, digits, hyphens or underscores (RFC 1035 section 2.3.1's preferred
 * syntax, with the underscore that service names such as `_dmarc` use). Anything else (empty
 * labels, spaces, control or non-ASCII bytes, a dot inside a DNS label, which `readName` shows
 * as `\.`) is not a name the guest may ask for.
 *
 * @module
 */

/** Longest host name in text form (RFC 1035 2.3.4: 255 bytes on the wire). */
export const MAX_HOST_NAME_LEN = 253;

const LABEL = /^[A-Za-z0-9_-]{1,63}$/;

/**
 * The normalised form of `raw`, or undefined when it is not a valid host name.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/_assert.ts";
 * assertEquals(normalizeHostName("API.Example.COM."), "api.example.com");
 * assertEquals(normalizeHostName("a..b"), undefined);
 * ```
 */
export function normalizeHostName(raw: string): string | undefined {
  const name = raw.endsWith(".") ? raw.slice(0, -1) : raw;
  if (name.length === 0 || name.length > MAX_HOST_NAME_LEN) return undefined;
  // Checked before lower-casing: toLowerCase maps some non-ASCII characters to ASCII (the
  // Kelvin sign to "k"), and the policy must see the bytes the server will see.
  for (const label of name.split(".")) if (!LABEL.test(label)) return undefined;
  return name.toLowerCase();
}
