/**
 * `WWW-Authenticate` challenges (RFC 7235) as registries send them:
 * `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:x:pull"`
 * or `Basic realm="Registry"`. Parsing only; no I/O.
 *
 * @module
 */

/** One challenge: the scheme (lower-case) and its parameters (keys lower-case). */
export interface Challenge {
  /** `bearer`, `basic`, ... */
  scheme: string;
  /** Parameters such as `realm`, `service`, `scope`, `error`. */
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header value into its challenges (a header may hold several,
 * separated by commas). Unparseable tails are ignored rather than guessed at.
 *
 * @example
 * ```ts
 * import { parseChallenges } from "./challenge.ts";
 * const [c] = parseChallenges('Bearer realm="https://a/token",service="reg"');
 * if (c?.scheme !== "bearer" || c.params.realm !== "https://a/token") throw new Error();
 * ```
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipSpace = () => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < n && /[A-Za-z0-9!#$%&'*+.^_`|~-]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  while (i < n) {
    skipSpace();
    while (i < n && header[i] === ",") {
      i++;
      skipSpace();
    }
    const scheme = token();
    if (!scheme) break;
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    skipSpace();
    // Parameters: key=value or key="quoted", comma separated, until the next scheme.
    while (i < n) {
      const save = i;
      skipSpace();
      const key = token();
      skipSpace();
      if (!key || header[i] !== "=") {
        // Not a parameter: the next challenge's scheme starts here.
        i = save;
        break;
      }
      i++; // '='
      skipSpace();
      let value = "";
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === "\\" && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++; // closing quote
      } else {
        const start = i;
        while (i < n && header[i] !== ",") i++;
        value = header.slice(start, i).trim();
      }
      challenge.params[key.toLowerCase()] = value;
      skipSpace();
      if (header[i] === ",") i++;
      else break;
    }
  }
  return out;
}
