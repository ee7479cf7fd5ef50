/**
 * The JSON documents of an image, validated field by field: OCI image indexes and Docker
 * manifest lists, OCI and Docker v2 image manifests, image configs, and `docker save`'s
 * `manifest.json`. Media types are known by name; anything else is refused
 * (`unsupported_media_type`) rather than guessed.
 *
 * @module
 */

import { type GuestArch, hostArch, ociArch } from "../host/mod.ts";
import { ImageError } from "./errors.ts";

/** Media types this pipeline reads. */
export const MEDIA = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
} as const;

/** How a layer blob is compressed, by media type. */
export type LayerCompression = "none" | "gzip" | "zstd";

const LAYER_MEDIA: Record<string, LayerCompression> = {
  "application/vnd.oci.image.layer.v1.tar": "none",
  "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
  "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
  "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
};

/** The compression of layer media type `mediaType`, or `undefined` when it is not a layer. */
export function layerCompression(mediaType: string): LayerCompression | undefined {
  return LAYER_MEDIA[mediaType];
}

/** A content descriptor. */
export interface Descriptor {
  /** Media type. */
  mediaType: string;
  /** `sha256:<64 hex>`. */
  digest: string;
  /** Bytes. */
  size: number;
  /** Platform, in index entries. */
  platform?: { os: string; architecture: string; variant?: string };
  /** Annotations (`org.opencontainers.image.ref.name` names a tag in an OCI layout). */
  annotations?: Record<string, string>;
}

/** An image manifest: its config and layers, bottom first. */
export interface ImageManifest {
  /** The config blob. */
  config: Descriptor;
  /** The layers, bottom first. */
  layers: Descriptor[];
}

/** What shuru uses of an image config (`config` and `rootfs` of the OCI image config). */
export interface ImageConfig {
  /** `os`, e.g. `linux`. */
  os: string;
  /** `architecture`, e.g. `amd64`. */
  architecture: string;
  /** `Env` as `KEY=VALUE` strings. */
  env: string[];
  /** `WorkingDir`, "" when unset. */
  workingDir: string;
  /** `Entrypoint`. */
  entrypoint: string[];
  /** `Cmd`. */
  cmd: string[];
  /** `User` as written (`name`, `uid`, `uid:gid`, `name:group`), "" when unset. */
  user: string;
  /** `ExposedPorts` keys (`8080/tcp`). */
  exposedPorts: string[];
  /** `rootfs.diff_ids`: the digests of the uncompressed layers, bottom first. */
  diffIds: string[];
}

/** The largest manifest, index or config read (bytes). */
export const MAX_JSON_BYTES = 4 * 1024 * 1024;

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

type Obj = Record<string, unknown>;

function fail(what: string, why: string): never {
  throw new ImageError("bad_manifest", `Cannot read ${what}: ${why}`);
}

/** Parses JSON text that must be an object. */
export function parseJsonObject(bytes: Uint8Array, what: string): Obj {
  if (bytes.length > MAX_JSON_BYTES) fail(what, `it is over ${MAX_JSON_BYTES} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    fail(what, `it is not JSON (${(err as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail(what, "it is not a JSON object");
  }
  return value as Obj;
}

/** Checks `digest` is `sha256:` and 64 lower-case hex digits. */
export function checkDigest(digest: unknown, what: string): string {
  if (typeof digest !== "string" || !DIGEST_RE.test(digest)) {
    if (typeof digest === "string" && /^[a-z0-9]+([+._-][a-z0-9]+)*:/.test(digest)) {
      throw new ImageError(
        "unsupported_media_type",
        `Cannot read ${what}: digest ${JSON.stringify(digest)} uses an algorithm other than sha256`,
      );
    }
    fail(what, `digest ${JSON.stringify(digest)} is not sha256:<64 hex digits>`);
  }
  return digest;
}

function str(o: Obj, key: string, what: string, optional = false): string {
  const v = o[key];
  if (v === undefined && optional) return "";
  if (typeof v !== "string") fail(what, `"${key}" must be a string`);
  return v;
}

function strings(o: Obj, key: string, what: string): string[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
    fail(what, `"${key}" must be a list of strings`);
  }
  return v as string[];
}

/** Validates one descriptor object. */
export function parseDescriptor(value: unknown, what: string): Descriptor {
  if (typeof value !== "object" || value === null) fail(what, "a descriptor is not an object");
  const o = value as Obj;
  const size = o.size;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    fail(what, `descriptor size ${JSON.stringify(size)} is not a byte count`);
  }
  const d: Descriptor = {
    mediaType: str(o, "mediaType", what),
    digest: checkDigest(o.digest, what),
    size,
  };
  const p = o.platform;
  if (p !== undefined) {
    if (typeof p !== "object" || p === null) fail(what, "a descriptor's platform is not an object");
    const po = p as Obj;
    d.platform = {
      os: str(po, "os", what),
      architecture: str(po, "architecture", what),
      ...(typeof po.variant === "string" ? { variant: po.variant } : {}),
    };
  }
  const a = o.annotations;
  if (a !== undefined && a !== null) {
    if (typeof a !== "object" || Array.isArray(a)) fail(what, "annotations must be an object");
    d.annotations = {};
    for (const [k, v] of Object.entries(a as Obj)) if (typeof v === "string") d.annotations[k] = v;
  }
  return d;
}

/** Whether `mediaType` is an index (OCI image index or Docker manifest list). */
export function isIndex(mediaType: string): boolean {
  return mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList;
}

/** Whether `mediaType` is an image manifest (OCI or Docker v2). */
export function isManifest(mediaType: string): boolean {
  return mediaType === MEDIA.ociManifest || mediaType === MEDIA.dockerManifest;
}

/**
 * The media type of a manifest or index document: the transport's (registry Content-Type,
 * descriptor) when it names one of ours, else the document's own `mediaType`, else inferred
 * from its shape (OCI allows omitting it: `manifests` → index, `config` → manifest).
 */
export function documentMediaType(doc: Obj, declared: string | undefined, what: string): string {
  const known = (t: unknown) => typeof t === "string" && (isIndex(t) || isManifest(t));
  if (known(declared)) return declared!;
  if (known(doc.mediaType)) return doc.mediaType as string;
  if (typeof doc.mediaType === "string" && doc.mediaType !== "") {
    throw new ImageError(
      "unsupported_media_type",
      `Cannot read ${what}: media type ${JSON.stringify(doc.mediaType)} is not an image ` +
        "manifest or index",
    );
  }
  if (Array.isArray(doc.manifests)) return MEDIA.ociIndex;
  if (doc.config !== undefined) return MEDIA.ociManifest;
  if (doc.schemaVersion === 1) {
    throw new ImageError(
      "unsupported_media_type",
      `Cannot read ${what}: Docker schema 1 manifests are not supported (push the image again ` +
        "with a current docker or skopeo)",
    );
  }
  return fail(what, "it is neither an image manifest nor an index");
}

/** The entries of an index. */
export function parseIndex(doc: Obj, what: string): Descriptor[] {
  if (!Array.isArray(doc.manifests)) fail(what, `"manifests" must be a list`);
  return doc.manifests.map((m) => parseDescriptor(m, what));
}

/** A platform in OCI terms (`linux`/`amd64`). */
export interface ImagePlatform {
  /** `linux`. */
  os: string;
  /** `amd64`, `arm64`. */
  architecture: string;
}

/** The platform of a guest of `arch` in OCI terms. */
export function guestPlatform(arch: GuestArch = hostArch()): ImagePlatform {
  return { os: "linux", architecture: ociArch(arch) };
}

/**
 * The index entry for `platform` (an image manifest, or a nested index). An index of one
 * entry without a platform (as `umoci` and OCI layouts write) is that entry.
 */
export function selectPlatform(
  entries: readonly Descriptor[],
  what: string,
  platform = guestPlatform(),
): Descriptor {
  const usable = entries.filter((e) => isIndex(e.mediaType) || isManifest(e.mediaType));
  const match = usable.find((e) =>
    e.platform?.os === platform.os && e.platform.architecture === platform.architecture
  );
  if (match) return match;
  const unplatformed = usable.filter((e) => e.platform === undefined);
  if (unplatformed.length === 1) return unplatformed[0]!;
  const have = usable.map((e) => e.platform ? `${e.platform.os}/${e.platform.architecture}` : "?");
  throw new ImageError(
    "no_platform",
    `Cannot use ${what}: it has no ${platform.os}/${platform.architecture} image` +
      (have.length ? ` (it has ${[...new Set(have)].join(", ")})` : " (its index is empty)"),
  );
}

/** Parses an image manifest; every layer's media type must be a known layer type. */
export function parseManifest(doc: Obj, what: string): ImageManifest {
  if (doc.schemaVersion !== 2) fail(what, `"schemaVersion" must be 2`);
  const config = parseDescriptor(doc.config, what);
  if (config.mediaType !== MEDIA.ociConfig && config.mediaType !== MEDIA.dockerConfig) {
    throw new ImageError(
      "unsupported_media_type",
      `Cannot use ${what}: its config has media type ${JSON.stringify(config.mediaType)}, ` +
        "which is not an image config (an artifact, not a container image?)",
    );
  }
  if (!Array.isArray(doc.layers)) fail(what, `"layers" must be a list`);
  const layers = doc.layers.map((l) => parseDescriptor(l, what));
  for (const [i, l] of layers.entries()) {
    if (layerCompression(l.mediaType) === undefined) {
      throw new ImageError(
        "unsupported_media_type",
        `Cannot use ${what}: layer ${i + 1} has media type ${JSON.stringify(l.mediaType)}, ` +
          "which is not a tar layer (plain, gzip or zstd)",
      );
    }
  }
  return { config, layers };
}

/** Parses an image config. */
export function parseConfig(doc: Obj, what: string): ImageConfig {
  const c = (doc.config ?? {}) as Obj;
  if (typeof c !== "object" || c === null || Array.isArray(c)) {
    fail(what, `"config" must be an object`);
  }
  const rootfs = doc.rootfs as Obj | undefined;
  if (typeof rootfs !== "object" || rootfs === null) fail(what, `"rootfs" must be an object`);
  const diffIds = strings(rootfs, "diff_ids", what);
  for (const d of diffIds) checkDigest(d, what);
  const ports = c.ExposedPorts;
  if (
    ports !== undefined && ports !== null && (typeof ports !== "object" || Array.isArray(ports))
  ) {
    fail(what, `"ExposedPorts" must be an object`);
  }
  const env = strings(c, "Env", what);
  for (const e of env) {
    if (!e.includes("=")) fail(what, `Env entry ${JSON.stringify(e)} has no "="`);
  }
  return {
    os: str(doc, "os", what, true) || "linux",
    architecture: str(doc, "architecture", what, true),
    env,
    workingDir: str(c, "WorkingDir", what, true),
    entrypoint: strings(c, "Entrypoint", what),
    cmd: strings(c, "Cmd", what),
    user: str(c, "User", what, true),
    exposedPorts: Object.keys((ports ?? {}) as Obj).sort(),
    diffIds,
  };
}

/** One image of `docker save`'s `manifest.json`. */
export interface DockerArchiveImage {
  /** Path of the config JSON inside the archive. */
  config: string;
  /** Tags (`name:tag`). */
  repoTags: string[];
  /** Paths of the layer tars inside the archive, bottom first. */
  layers: string[];
}

/** Parses `docker save`'s `manifest.json` (a list of images). */
export function parseDockerArchiveManifest(bytes: Uint8Array, what: string): DockerArchiveImage[] {
  if (bytes.length > MAX_JSON_BYTES) fail(what, `it is over ${MAX_JSON_BYTES} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    fail(what, `it is not JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(value)) fail(what, "it is not a JSON list");
  return value.map((v) => {
    if (typeof v !== "object" || v === null) fail(what, "an entry is not an object");
    const o = v as Obj;
    return {
      config: str(o, "Config", what),
      repoTags: strings(o, "RepoTags", what),
      layers: strings(o, "Layers", what),
    };
  });
}
