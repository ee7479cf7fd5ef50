/**
 * Reads request parameters, checking each against its type and range; every failure is an
 * INVALID_PARAMS error naming the field.
 *
 * @module
 */

import { invalidParams } from "./errors.ts";

/** Range limits for integers. */
export interface IntRange {
  /** Smallest allowed value. */
  min?: number;
  /** Largest allowed value. */
  max?: number;
}

/** A checked view of a `params` object. */
export class Params {
  readonly #p: Record<string, unknown>;
  readonly #method: string;

  constructor(method: string, params: unknown) {
    this.#method = method;
    if (params === undefined || params === null) this.#p = {};
    else if (typeof params === "object" && !Array.isArray(params)) {
      this.#p = params as Record<string, unknown>;
    } else {
      throw invalidParams(`Cannot call ${method}: params must be an object`);
    }
  }

  #fail(name: string, what: string): never {
    throw invalidParams(`Cannot call ${this.#method}: "${name}" ${what}`);
  }

  /** True when the field is present (not undefined or null). */
  has(name: string): boolean {
    return this.#p[name] !== undefined && this.#p[name] !== null;
  }

  /** A required string. */
  string(name: string, options: { maxLength?: number } = {}): string {
    const v = this.#p[name];
    if (typeof v !== "string") this.#fail(name, "must be a string");
    if (options.maxLength !== undefined && v.length > options.maxLength) {
      this.#fail(name, `is longer than ${options.maxLength} characters`);
    }
    if (v.includes("\0")) this.#fail(name, "contains a NUL character");
    return v;
  }

  /** An optional string. */
  optString(name: string, options: { maxLength?: number } = {}): string | undefined {
    return this.has(name) ? this.string(name, options) : undefined;
  }

  /** A required path: a non-empty string without NUL, at most 4096 characters. */
  path(name: string): string {
    const v = this.string(name, { maxLength: 4096 });
    if (v.length === 0) this.#fail(name, "is empty");
    return v;
  }

  /** A required array of strings. */
  stringArray(name: string, options: { minLength?: number; maxLength?: number } = {}): string[] {
    const v = this.#p[name];
    if (!Array.isArray(v) || v.some((s) => typeof s !== "string" || s.includes("\0"))) {
      this.#fail(name, "must be an array of strings");
    }
    if (options.minLength !== undefined && v.length < options.minLength) {
      this.#fail(name, `must have at least ${options.minLength} element(s)`);
    }
    if (options.maxLength !== undefined && v.length > options.maxLength) {
      this.#fail(name, `must have at most ${options.maxLength} elements`);
    }
    return v as string[];
  }

  /** An optional integer within `range`. */
  optInt(name: string, range: IntRange = {}): number | undefined {
    if (!this.has(name)) return undefined;
    return this.int(name, range);
  }

  /** A required integer within `range`. */
  int(name: string, range: IntRange = {}): number {
    const v = this.#p[name];
    if (typeof v !== "number" || !Number.isSafeInteger(v)) this.#fail(name, "must be an integer");
    if (range.min !== undefined && v < range.min) this.#fail(name, `must be at least ${range.min}`);
    if (range.max !== undefined && v > range.max) this.#fail(name, `must be at most ${range.max}`);
    return v;
  }

  /** An optional boolean with a default. */
  bool(name: string, fallback: boolean): boolean {
    if (!this.has(name)) return fallback;
    const v = this.#p[name];
    if (typeof v !== "boolean") this.#fail(name, "must be true or false");
    return v;
  }

  /** An optional map of strings to strings (environment variables). */
  optStringMap(name: string, options: { maxEntries: number }): Record<string, string> | undefined {
    if (!this.has(name)) return undefined;
    const v = this.#p[name];
    if (typeof v !== "object" || Array.isArray(v) || v === null) {
      this.#fail(name, "must be an object of strings");
    }
    const entries = Object.entries(v as Record<string, unknown>);
    if (entries.length > options.maxEntries) {
      this.#fail(name, `has more than ${options.maxEntries} entries`);
    }
    const out: Record<string, string> = {};
    for (const [k, val] of entries) {
      if (typeof val !== "string" || k.includes("=") || k.includes("\0") || val.includes("\0")) {
        this.#fail(name, `has an invalid entry "${k}"`);
      }
      out[k] = val;
    }
    return out;
  }

  /** Optional base64 bytes, decoded after checking the decoded size is at most `maxBytes`. */
  optBase64(name: string, options: { maxBytes: number }): Uint8Array | undefined {
    if (!this.has(name)) return undefined;
    return this.base64(name, options);
  }

  /** Required base64 bytes, decoded after checking the decoded size is at most `maxBytes`. */
  base64(name: string, options: { maxBytes: number }): Uint8Array {
    const v = this.string(name);
    if (Math.floor(v.length / 4) * 3 > options.maxBytes + 2) {
      this.#fail(name, `decodes to more than ${options.maxBytes} bytes`);
    }
    let bytes: Uint8Array;
    try {
      bytes = Uint8Array.fromBase64(v);
    } catch {
      this.#fail(name, "is not valid base64");
    }
    if (bytes.length > options.maxBytes) {
      this.#fail(name, `decodes to more than ${options.maxBytes} bytes`);
    }
    return bytes;
  }

  /** An optional string from a fixed set. */
  optEnum<T extends string>(name: string, values: readonly T[]): T | undefined {
    if (!this.has(name)) return undefined;
    const v = this.#p[name];
    if (typeof v !== "string" || !(values as readonly string[]).includes(v)) {
      this.#fail(name, `must be one of ${values.join(", ")}`);
    }
    return v as T;
  }

  /** The raw value (for ids that may be strings or numbers). */
  raw(name: string): unknown {
    return this.#p[name];
  }
}
