/**
 * Placeholders: what the guest sees instead of a secret's value. Random (at least 128 bits)
 * so a guest cannot guess another run's, and shaped like the value (its prefix up to the first
 * `-` or `_` in the first 8 characters, and its length when that is long enough) so SDKs that
 * check a key's shape (`sk-...`, `ghp_...`) accept it.
 *
 * @module
 */

/** Characters of the random part: letters and digits are valid in every key format we know. */
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/** Random characters at least: 22 × log2(62) ≈ 131 bits. */
export const MIN_RANDOM_CHARS = 22;
/** The prefix kept from the value ends at a `-` or `_` within this many characters. */
const PREFIX_SEARCH = 8;

/** The part of `value` a placeholder keeps: up to and including its first `-`/`_`, if early. */
export function placeholderPrefix(value: string): string {
  const head = value.slice(0, PREFIX_SEARCH);
  const at = head.search(/[-_]/);
  return at >= 0 ? value.slice(0, at + 1) : "";
}

/**
 * A fresh placeholder for `value`: its prefix, then random letters and digits, as long as the
 * value when that leaves at least {@linkcode MIN_RANDOM_CHARS} random characters.
 */
export function makePlaceholder(value: string): string {
  const prefix = placeholderPrefix(value);
  const count = Math.max(MIN_RANDOM_CHARS, value.length - prefix.length);
  // Rejection sampling keeps every character uniform (256 is not a multiple of 62).
  const limit = 256 - (256 % ALPHABET.length);
  let out = prefix;
  while (out.length < prefix.length + count) {
    for (const byte of crypto.getRandomValues(new Uint8Array(count))) {
      if (byte >= limit) continue;
      out += ALPHABET[byte % ALPHABET.length];
      if (out.length === prefix.length + count) break;
    }
  }
  return out;
}
