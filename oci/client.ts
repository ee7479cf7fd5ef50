/**
 * The OCI distribution API over a {@linkcode RegistryTransport}: manifests (get, head, put),
 * blobs (head, get whole or by `Range`, monolithic and chunked upload, cross-repository mount)
 * and tag lists. Everything received is checked: blob bytes against their digest and announced
 * size, manifests against the digest they were asked by (or the registry's
 * `Docker-Content-Digest`), range answers against the range asked for.
 *
 * @module
 */

import { RegistryError } from "./errors.ts";
import { RegistryTransport, type TransportOptions } from "./transport.ts";

/** OCI image manifest. */
export const MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
/** OCI image index. */
export const MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json";
/** Docker image manifest v2 schema 2. */
export const MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
/** Docker manifest list. */
export const MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";

/** Manifest types a GET accepts; anything else is refused as `media_type`. */
const MANIFEST_TYPES = [
  MEDIA_OCI_MANIFEST,
  MEDIA_OCI_INDEX,
  MEDIA_DOCKER_MANIFEST,
  MEDIA_DOCKER_LIST,
];
const ACCEPT = MANIFEST_TYPES.join(", ");

/** Largest manifest accepted (distribution's own limit is 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** A content descriptor as in OCI manifests. */
export interface Descriptor {
  /** Media type of the referenced content. */
  mediaType: string;
  /** `sha256:<hex>`. */
  digest: string;
  /** Size in bytes. */
  size: number;
  /** Optional annotations. */
  annotations?: Record<string, string>;
}

/** A manifest as fetched. */
export interface FetchedManifest {
  /** Its bytes, exactly as served (the digest covers them). */
  bytes: Uint8Array;
  /** The media type from `Content-Type` (or the body's `mediaType`). */
  mediaType: string;
  /** `sha256:<hex>` of the bytes. */
  digest: string;
}

/** Options of blob uploads. */
export interface UploadOptions {
  /** Upload in `PATCH` chunks of this many bytes when larger (default 16 MiB). */
  chunkBytes?: number;
  /** Called with the bytes of this blob acknowledged by the registry so far. */
  onProgress?: (sent: number) => void;
}

/** `sha256:<hex>` of `bytes`. */
export async function sha256Digest(bytes: Uint8Array): Promise<string> {
  const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
  let hex = "";
  for (const b of sum) hex += b.toString(16).padStart(2, "0");
  return `sha256:${hex}`;
}

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

/** Throws unless `digest` is `sha256:` and 64 lower-case hex digits. */
export function checkDigest(digest: string, what: string): void {
  if (!DIGEST_RE.test(digest)) {
    throw new RegistryError(
      "bad_response",
      `Cannot use ${what}: digest "${digest}" is not sha256:<64 hex digits>`,
    );
  }
}

/** Reads a response body, refusing more than `max` bytes and a stall of `idleMs`. */
export async function readBody(
  res: Response,
  options: { max: number; idleMs?: number; what: string },
): Promise<Uint8Array> {
  if (!res.body) return new Uint8Array(0);
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  const idleMs = options.idleMs ?? 30_000;
  try {
    while (true) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no data for ${idleMs / 1000} s`)),
          idleMs,
        );
      });
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await Promise.race([reader.read(), stalled]);
      } catch (err) {
        throw new RegistryError(
          "network",
          `Cannot ${options.what}: the download broke off: ${(err as Error).message}`,
          { cause: err },
        );
      } finally {
        clearTimeout(timer);
      }
      if (r.done) break;
      total += r.value.length;
      if (total > options.max) {
        throw new RegistryError(
          "size_mismatch",
          `Cannot ${options.what}: the registry sent more than the ${options.max} bytes expected`,
        );
      }
      parts.push(r.value);
    }
  } finally {
    reader.releaseLock();
    await res.body.cancel().catch(() => {});
  }
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Options of {@linkcode RegistryClient}. */
export type ClientOptions = TransportOptions;

/** The distribution API of one registry; see the module doc. */
export class RegistryClient {
  /** The transport (scheme, auth, retries). */
  readonly transport: RegistryTransport;
  /** The registry as written in references. */
  readonly registry: string;

  /**
   * @param registry The registry (`localhost:5000`, `ghcr.io`).
   * @param options Credentials, insecure hosts, retry settings.
   */
  constructor(registry: string, options: ClientOptions = {}) {
    this.registry = registry;
    this.transport = new RegistryTransport(registry, options);
  }

  /** Checks that the registry answers (and learns how it authenticates). */
  async ping(): Promise<void> {
    await this.transport.baseUrl();
  }

  /**
   * Fetches manifest `target` (a tag or digest) of `repo`, verifying its digest: against the
   * target when it is one, else against `Docker-Content-Digest` when the registry sends it.
   */
  async getManifest(repo: string, target: string): Promise<FetchedManifest> {
    const what = `get manifest ${this.registry}/${repo}:${target}`;
    const res = await this.transport.request({
      method: "GET",
      path: `/v2/${repo}/manifests/${target}`,
      scopes: [`repository:${repo}:pull`],
      action: what,
      headers: { accept: ACCEPT },
    });
    const bytes = await readBody(res, { max: MAX_MANIFEST_BYTES, what });
    const digest = await sha256Digest(bytes);
    const expected = target.startsWith("sha256:")
      ? target
      : res.headers.get("docker-content-digest");
    if (expected && expected !== digest) {
      throw new RegistryError(
        "digest_mismatch",
        `Cannot ${what}: its bytes hash to ${digest}, not ${expected}`,
      );
    }
    let mediaType = (res.headers.get("content-type") ?? "").split(";")[0]!.trim();
    if (!mediaType || mediaType === "application/json") {
      try {
        const body = JSON.parse(new TextDecoder().decode(bytes)) as { mediaType?: unknown };
        if (typeof body.mediaType === "string") mediaType = body.mediaType;
      } catch {
        // the caller's parse reports it
      }
    }
    if (!MANIFEST_TYPES.includes(mediaType)) {
      throw new RegistryError(
        "media_type",
        `Cannot ${what}: the registry sent ${mediaType || "no media type"}, not an OCI or ` +
          "docker manifest",
      );
    }
    return { bytes, mediaType, digest };
  }

  /** The digest of manifest `target` (HEAD), or `null` when it does not exist. */
  async headManifest(
    repo: string,
    target: string,
  ): Promise<{ digest: string | null; mediaType: string } | null> {
    const res = await this.transport.request({
      method: "HEAD",
      path: `/v2/${repo}/manifests/${target}`,
      scopes: [`repository:${repo}:pull`],
      action: `look up manifest ${this.registry}/${repo}:${target}`,
      headers: { accept: ACCEPT },
      allow: [404],
    });
    await res.body?.cancel();
    if (res.status === 404) return null;
    return {
      digest: res.headers.get("docker-content-digest"),
      mediaType: (res.headers.get("content-type") ?? "").split(";")[0]!.trim(),
    };
  }

  /** Stores a manifest under `target` (a tag or its digest); returns its digest. */
  async putManifest(
    repo: string,
    target: string,
    bytes: Uint8Array,
    mediaType: string,
  ): Promise<string> {
    const digest = await sha256Digest(bytes);
    const res = await this.transport.request({
      method: "PUT",
      path: `/v2/${repo}/manifests/${target}`,
      scopes: [`repository:${repo}:pull,push`],
      action: `push manifest ${this.registry}/${repo}:${target}`,
      headers: { "content-type": mediaType },
      body: bytes,
    });
    await res.body?.cancel();
    const said = res.headers.get("docker-content-digest");
    if (said && said !== digest) {
      throw new RegistryError(
        "digest_mismatch",
        `Cannot push manifest ${this.registry}/${repo}:${target}: the registry stored ` +
          `${said}, not ${digest}`,
      );
    }
    return digest;
  }

  /** The size of blob `digest` in `repo` (HEAD), or `null` when the repository lacks it. */
  async headBlob(repo: string, digest: string, scope = "pull"): Promise<number | null> {
    const res = await this.transport.request({
      method: "HEAD",
      path: `/v2/${repo}/blobs/${digest}`,
      scopes: [`repository:${repo}:${scope}`],
      action: `look up blob ${digest} in ${this.registry}/${repo}`,
      allow: [404],
    });
    await res.body?.cancel();
    if (res.status === 404) return null;
    const len = Number(res.headers.get("content-length"));
    return Number.isSafeInteger(len) && len >= 0 ? len : null;
  }

  /** Fetches a whole blob and verifies its size and digest. */
  async getBlob(repo: string, digest: string, size: number): Promise<Uint8Array> {
    checkDigest(digest, `blob of ${repo}`);
    const what = `get blob ${digest} from ${this.registry}/${repo}`;
    const res = await this.transport.request({
      method: "GET",
      path: `/v2/${repo}/blobs/${digest}`,
      scopes: [`repository:${repo}:pull`],
      action: what,
    });
    checkLength(res, size, what);
    const bytes = await readBody(res, { max: size, what });
    if (bytes.length !== size) {
      throw new RegistryError(
        "size_mismatch",
        `Cannot ${what}: got ${bytes.length} bytes, the manifest says ${size}`,
      );
    }
    const actual = await sha256Digest(bytes);
    if (actual !== digest) {
      throw new RegistryError("digest_mismatch", `Cannot ${what}: its bytes hash to ${actual}`);
    }
    return bytes;
  }

  /**
   * Fetches `length` bytes at `offset` of a blob of `blobSize` bytes with a `Range` request.
   * The caller verifies the content (ranges have no digest); the length and the served range
   * are checked here. A registry that ignores `Range` (200) is accepted: the range is cut out.
   */
  async getBlobRange(
    repo: string,
    digest: string,
    range: { offset: number; length: number; blobSize: number },
  ): Promise<Uint8Array> {
    const { offset, length, blobSize } = range;
    const what = `get bytes ${offset}-${offset + length - 1} of blob ${digest} from ` +
      `${this.registry}/${repo}`;
    if (offset < 0 || length <= 0 || offset + length > blobSize) {
      throw new RegistryError("bad_response", `Cannot ${what}: outside the ${blobSize}-byte blob`);
    }
    const res = await this.transport.request({
      method: "GET",
      path: `/v2/${repo}/blobs/${digest}`,
      scopes: [`repository:${repo}:pull`],
      action: what,
      headers: { range: `bytes=${offset}-${offset + length - 1}` },
    });
    if (res.status === 200) {
      checkLength(res, blobSize, what);
      const whole = await readBody(res, { max: blobSize, what });
      if (whole.length !== blobSize) {
        throw new RegistryError(
          "size_mismatch",
          `Cannot ${what}: got ${whole.length} bytes of a ${blobSize}-byte blob`,
        );
      }
      return whole.subarray(offset, offset + length);
    }
    if (res.status !== 206) {
      await res.body?.cancel();
      throw new RegistryError(
        "bad_response",
        `Cannot ${what}: the registry answered ${res.status} to a range request`,
        { status: res.status },
      );
    }
    const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
    if (!cr || Number(cr[1]) !== offset || Number(cr[2]) !== offset + length - 1) {
      await res.body?.cancel();
      throw new RegistryError(
        "size_mismatch",
        `Cannot ${what}: the registry sent range "${res.headers.get("content-range")}"`,
      );
    }
    if (cr[3] !== "*" && Number(cr[3]) !== blobSize) {
      await res.body?.cancel();
      throw new RegistryError(
        "size_mismatch",
        `Cannot ${what}: the registry says the blob has ${cr[3]} bytes, the manifest ${blobSize}`,
      );
    }
    checkLength(res, length, what);
    const bytes = await readBody(res, { max: length, what });
    if (bytes.length !== length) {
      throw new RegistryError(
        "size_mismatch",
        `Cannot ${what}: got ${bytes.length} bytes, asked for ${length}`,
      );
    }
    return bytes;
  }

  /**
   * Mounts blob `digest` from repository `from` of the same registry into `repo` without
   * sending it. Returns `false` when the registry cannot (it then started an upload, which is
   * cancelled here).
   */
  async mountBlob(repo: string, digest: string, from: string): Promise<boolean> {
    const res = await this.transport.request({
      method: "POST",
      path: `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${
        encodeURIComponent(from)
      }`,
      scopes: [`repository:${repo}:pull,push`, `repository:${from}:pull`],
      action: `mount blob ${digest} from ${from} into ${this.registry}/${repo}`,
      idempotent: false,
    });
    await res.body?.cancel();
    if (res.status === 201) return true;
    const location = res.headers.get("location");
    if (location) {
      await this.transport.request({
        method: "DELETE",
        path: location,
        scopes: [`repository:${repo}:pull,push`],
        action: `cancel an upload to ${this.registry}/${repo}`,
        allow: [404, 405],
      }).then((r) => r.body?.cancel()).catch(() => {});
    }
    return false;
  }

  /**
   * Uploads `bytes` as blob `digest` (which the caller computed): one `PUT` when it fits in
   * `chunkBytes`, else `PATCH` chunks then the closing `PUT`. A broken connection restarts the
   * upload once from the beginning (the registry drops the unfinished session).
   */
  async uploadBlob(
    repo: string,
    digest: string,
    bytes: Uint8Array,
    options: UploadOptions = {},
  ): Promise<void> {
    const chunk = options.chunkBytes ?? 16 * 1024 * 1024;
    for (let attempt = 1;; attempt++) {
      try {
        await this.#uploadOnce(repo, digest, bytes, chunk, options.onProgress);
        return;
      } catch (err) {
        if (attempt >= 2 || !(err instanceof RegistryError) || err.code !== "network") throw err;
      }
    }
  }

  async #uploadOnce(
    repo: string,
    digest: string,
    bytes: Uint8Array,
    chunk: number,
    onProgress?: (sent: number) => void,
  ): Promise<void> {
    const what = `push blob ${digest} to ${this.registry}/${repo}`;
    const scopes = [`repository:${repo}:pull,push`];
    const start = await this.transport.request({
      method: "POST",
      path: `/v2/${repo}/blobs/uploads/`,
      scopes,
      action: what,
      idempotent: false,
    });
    await start.body?.cancel();
    let location = requireLocation(start, what);
    let sent = 0;
    if (bytes.length > chunk) {
      while (sent < bytes.length) {
        const end = Math.min(sent + chunk, bytes.length);
        const res = await this.transport.request({
          method: "PATCH",
          path: location,
          scopes,
          action: what,
          headers: {
            "content-type": "application/octet-stream",
            "content-range": `${sent}-${end - 1}`,
          },
          body: bytes.subarray(sent, end),
          idempotent: false,
        });
        await res.body?.cancel();
        location = requireLocation(res, what);
        sent = end;
        onProgress?.(sent);
      }
    }
    const path = `${location}${location.includes("?") ? "&" : "?"}digest=${
      encodeURIComponent(digest)
    }`;
    const res = await this.transport.request({
      method: "PUT",
      path,
      scopes,
      action: what,
      headers: { "content-type": "application/octet-stream" },
      body: bytes.subarray(sent),
      idempotent: false,
    });
    await res.body?.cancel();
    const said = res.headers.get("docker-content-digest");
    if (said && said !== digest) {
      throw new RegistryError(
        "digest_mismatch",
        `Cannot ${what}: the registry stored ${said}`,
      );
    }
    onProgress?.(bytes.length);
  }

  /** Tags of `repo` (at most `max`, following `Link` pages); `[]` when it does not exist. */
  async listTags(repo: string, max = 1000): Promise<string[]> {
    const tags: string[] = [];
    let path: string | null = `/v2/${repo}/tags/list?n=${Math.min(max, 1000)}`;
    while (path && tags.length < max) {
      const what = `list tags of ${this.registry}/${repo}`;
      const res: Response = await this.transport.request({
        method: "GET",
        path,
        scopes: [`repository:${repo}:pull`],
        action: what,
        allow: [404],
      });
      if (res.status === 404) {
        await res.body?.cancel();
        return [];
      }
      const body = await readBody(res, { max: 4 * 1024 * 1024, what });
      let parsed: { tags?: unknown };
      try {
        parsed = JSON.parse(new TextDecoder().decode(body));
      } catch (err) {
        throw new RegistryError("bad_response", `Cannot ${what}: the answer is not JSON`, {
          cause: err,
        });
      }
      if (Array.isArray(parsed.tags)) {
        for (const t of parsed.tags) if (typeof t === "string") tags.push(t);
      }
      const link = /<([^>]+)>;\s*rel="?next"?/.exec(res.headers.get("link") ?? "");
      path = link ? link[1]! : null;
    }
    return tags.slice(0, max);
  }
}

function requireLocation(res: Response, what: string): string {
  const location = res.headers.get("location");
  if (!location) {
    throw new RegistryError(
      "bad_response",
      `Cannot ${what}: the registry answered ${res.status} without an upload location`,
    );
  }
  return location;
}

/** Refuses a response whose `Content-Length` differs from `expected`. */
function checkLength(res: Response, expected: number, what: string): void {
  const header = res.headers.get("content-length");
  if (header === null) return;
  if (Number(header) !== expected) {
    res.body?.cancel().catch(() => {});
    throw new RegistryError(
      "size_mismatch",
      `Cannot ${what}: the registry announces ${header} bytes, expected ${expected}`,
    );
  }
}
