/**
 * Where a request may carry a secret's value: the request side of the secret relay, as pure
 * functions over one request's parts (docs/secrets.md, "Where values go").
 *
 * A value goes only where credentials go. By default (`"header"`) that is the value of
 * `Authorization`, `Proxy-Authorization`, `x-api-key` and `api-key` (the placeholder anywhere in
 * it; a `Basic` credential is decoded first), and of any other field whose whole value is the
 * placeholder, `Bearer <placeholder>` or `Basic <placeholder>`. `"query"` adds the query of the
 * request target, `"body"` textual bodies and chunked trailers. A placeholder anywhere else
 * (the path, a field like `X-Prompt: say PLACEHOLDER backwards`, a body without the opt-in)
 * reaches the upstream unchanged: there a cooperating upstream could hand the value back in a
 * form the response scrubber cannot recognise (reversed, spaced, base64).
 *
 * Secrets may also be *withheld* from a connection (plain HTTP without `allow_http`): their
 * placeholders stay, and the injector reports the first time one is left where it would have
 * been replaced.
 *
 * @module
 */

import { CREDENTIAL_FIELDS } from "../http/mod.ts";
import { bytesToByteString, byteStringToBytes, rewriteBasicCredentials } from "../http/mod.ts";
import { type ReplacePair, StreamReplacer } from "./replace.ts";

/** A place in a request where a placeholder may become its value. */
export type InjectPlace = "header" | "query" | "body";

/** Every {@linkcode InjectPlace}, in the order docs and messages list them. */
export const INJECT_PLACES: readonly InjectPlace[] = ["header", "query", "body"];

/** Where a secret is injected when its settings do not say. */
export const DEFAULT_INJECT_PLACES: readonly InjectPlace[] = ["header"];

/** A secret as the relay sees it. */
export interface SecretPair {
  /** What the guest holds instead of the secret. */
  placeholder: string;
  /** The real secret; never logged, never put in an error. */
  value: string;
  /**
   * Where a request may carry the value (read for injected secrets only).
   *
   * @default {["header"]}
   */
  inject?: readonly InjectPlace[];
}

/** Options of {@linkcode RequestInjector}. */
export interface RequestInjectorOptions {
  /** Secrets bound to this host that this connection must not carry: placeholders stay. */
  withhold?: readonly SecretPair[];
  /**
   * Called with a withheld secret's placeholder the first time it is left in place where it
   * would have been replaced.
   */
  onWithheld?: (placeholder: string) => void;
}

const encoder = new TextEncoder();

/** `Bearer`/`Basic`, spaces, then the rest: the other fields' exact-value rule. */
const SCHEME_PREFIX = /^((?:bearer|basic) +)?(.*)$/is;

/**
 * Replaces placeholders by values in the parts of one connection's requests. Header values and
 * targets are byte strings (one char per byte), as the head codec keeps them.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/_assert.ts";
 * const injector = new RequestInjector([{ placeholder: "PH-123", value: "sk-real" }]);
 * assertEquals(injector.field("Authorization", "Bearer PH-123"), "Bearer sk-real");
 * assertEquals(injector.field("X-Note", "say PH-123"), "say PH-123");
 * assertEquals(injector.target("/v1?key=PH-123"), "/v1?key=PH-123");
 * ```
 */
export class RequestInjector {
  /** Placeholder → byte-string value (or itself when withheld), for the exact-value rule. */
  readonly #exact = new Map<string, string>();
  /** Credential fields: the placeholder anywhere in the value. */
  readonly #header: StreamReplacer;
  /** The query: unsafe target bytes of a value percent-encoded. */
  readonly #query: StreamReplacer;
  /** Textual bodies and trailers (share the array: replacers compile it once). */
  readonly bodyPairs: readonly ReplacePair[];
  readonly #body: StreamReplacer;
  readonly #reported = new Set<string>();
  readonly #onWithheld: ((placeholder: string) => void) | undefined;

  /** `inject`: the secrets this connection carries; an empty placeholder is skipped. */
  constructor(inject: readonly SecretPair[], options: RequestInjectorOptions = {}) {
    this.#onWithheld = options.onWithheld;
    const header: ReplacePair[] = [];
    const query: ReplacePair[] = [];
    const body: ReplacePair[] = [];
    for (const s of inject) {
      if (s.placeholder.length === 0) continue;
      const places = s.inject ?? DEFAULT_INJECT_PLACES;
      const from = encoder.encode(s.placeholder);
      const to = encoder.encode(s.value);
      if (places.includes("header")) {
        header.push({ from, to });
        this.#exact.set(s.placeholder, bytesToByteString(to));
      }
      if (places.includes("query")) query.push({ from, to: targetSafe(to) });
      if (places.includes("body")) body.push({ from, to });
    }
    for (const s of options.withhold ?? []) {
      if (s.placeholder.length === 0) continue;
      // Left as it is, but seen: the relay says why the value was not sent.
      const from = encoder.encode(s.placeholder);
      const kept: ReplacePair = { from, to: from, onMatch: () => this.#withheld(s.placeholder) };
      const places = s.inject ?? DEFAULT_INJECT_PLACES;
      if (places.includes("header")) header.push(kept);
      if (places.includes("query")) query.push(kept);
      if (places.includes("body")) body.push(kept);
      if (places.includes("header") && !this.#exact.has(s.placeholder)) {
        this.#exact.set(s.placeholder, s.placeholder);
      }
    }
    this.#header = new StreamReplacer(header);
    this.#query = new StreamReplacer(query);
    this.bodyPairs = body;
    this.#body = new StreamReplacer(body);
  }

  /** True when bodies and trailers are left alone (no secret opted into `"body"`). */
  get bodyIsIdentity(): boolean {
    return this.#body.isIdentity;
  }

  /** A header field's value as the upstream gets it (the caller checks it is still valid). */
  field(name: string, value: string): string {
    const lower = name.toLowerCase();
    if (CREDENTIAL_FIELDS.includes(lower)) {
      let v = this.#replace(this.#header, value);
      if (lower === "authorization" || lower === "proxy-authorization") {
        v = rewriteBasicCredentials(v, (decoded) => this.#replace(this.#header, decoded));
      }
      return v;
    }
    const [, scheme = "", rest = ""] = SCHEME_PREFIX.exec(value) ?? [];
    const to = this.#exact.get(rest);
    if (to === undefined) return value;
    if (to === rest) this.#withheld(rest);
    return scheme + to;
  }

  /** A trailer field's value: substituted as the body is (`"body"` opt-in). */
  trailer(value: string): string {
    return this.#replace(this.#body, value);
  }

  /** The request target: only its query (after the first `?`) may change. */
  target(target: string): string {
    const q = target.indexOf("?");
    if (q < 0 || this.#query.isIdentity) return target;
    return target.slice(0, q + 1) + this.#replace(this.#query, target.slice(q + 1));
  }

  /** A whole buffered body. */
  body(bytes: Uint8Array): Uint8Array {
    return this.#body.replaceWhole(bytes);
  }

  #replace(replacer: StreamReplacer, text: string): string {
    if (replacer.isIdentity) return text;
    return bytesToByteString(replacer.replaceWhole(byteStringToBytes(text)));
  }

  #withheld(placeholder: string): void {
    if (this.#reported.has(placeholder)) return;
    this.#reported.add(placeholder);
    this.#onWithheld?.(placeholder);
  }
}

/** Percent-encodes the bytes of `bytes` that may not appear raw in a request target. */
function targetSafe(bytes: Uint8Array): Uint8Array {
  let text = "";
  for (const b of bytes) {
    text += b >= 0x21 && b <= 0x7e
      ? String.fromCharCode(b)
      : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return byteStringToBytes(text);
}
