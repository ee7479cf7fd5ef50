/**
 * Asset bundles as OCI artifacts in a registry (`docker://REGISTRY/REPO[:TAG|@DIGEST]`, the
 * transport name skopeo uses): one image manifest whose single layer is the bundle file
 * ({@linkcode BUNDLE_LAYER_MEDIA_TYPE}) and whose config names the architecture and assets
 * version. A manifest pinned by digest pins the layer; the layer's digest is the bundle file's
 * SHA-256, the same `--bundle-digest` a file has. Blobs go through `oci/`'s client with the
 * user's docker credentials; the layer is fetched in ranges straight to a file, never whole in
 * memory.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { basename } from "node:path";
import {
  manifestTarget,
  MEDIA_OCI_MANIFEST,
  openRegistryClient,
  parseReference,
  type RegistryAccess,
  sha256Digest,
} from "../oci/mod.ts";
import { BUNDLE_FORMAT, BundleError, type BundleManifest } from "./bundle.ts";
import { AssetError } from "./errors.ts";

/** The prefix that makes a `--bundle` or `--export` value a registry reference. */
export const REGISTRY_PREFIX = "docker://";
/** Media type of the layer: the bundle file as it is. */
export const BUNDLE_LAYER_MEDIA_TYPE = "application/vnd.shuru.assets.bundle.v1.tar+gzip";
/** Media type of the config blob (and the artifact type). */
export const BUNDLE_CONFIG_MEDIA_TYPE = "application/vnd.shuru.assets.config.v1+json";

/** Bytes per range request when pulling the layer. */
const RANGE_BYTES = 16 << 20;
/** Largest layer accepted (a bundle is a few hundred MiB). */
const MAX_LAYER_BYTES = 16 * 1024 ** 3;

/** The reference in `value` when it names a registry (`docker://…`), else undefined. */
export function registryBundleRef(value: string): string | undefined {
  return value.startsWith(REGISTRY_PREFIX) ? value.slice(REGISTRY_PREFIX.length) : undefined;
}

/** Where a pushed bundle is. */
export interface PushedBundle {
  /** `REGISTRY/REPO@sha256:…`: the manifest, pinned. */
  pinned: string;
  /** The manifest's digest. */
  manifestDigest: string;
}

/**
 * Pushes the bundle `file` (whose manifest is `manifest`) to the registry reference `refText`
 * (a tag, `latest` by default). `onProgress` hears the layer's bytes acknowledged.
 *
 * @throws {RegistryError} as the registry refuses.
 */
export async function pushBundle(
  file: string,
  refText: string,
  options: {
    manifest: BundleManifest;
    access?: RegistryAccess;
    onProgress?: (done: number, total: number) => void;
  },
): Promise<PushedBundle> {
  const ref = parseReference(refText);
  if (ref.digest !== undefined) {
    throw new AssetError(
      "bundle_refused",
      `Cannot push the bundle to ${refText}: name a tag, not a digest (the digest is printed)`,
    );
  }
  const client = openRegistryClient(ref, options.access ?? {});
  // A bundle is a few hundred MiB: the client uploads from memory.
  const layer = await Deno.readFile(file);
  const layerDigest = await sha256Digest(layer);
  await client.uploadBlob(ref.repository, layerDigest, layer, {
    onProgress: (sent) => options.onProgress?.(sent, layer.length),
  });
  const config = new TextEncoder().encode(JSON.stringify({
    format: BUNDLE_FORMAT,
    arch: options.manifest.arch,
    assetsVersion: options.manifest.assetsVersion,
  }));
  const configDigest = await sha256Digest(config);
  await client.uploadBlob(ref.repository, configDigest, config);
  const manifest = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_OCI_MANIFEST,
    artifactType: BUNDLE_CONFIG_MEDIA_TYPE,
    config: { mediaType: BUNDLE_CONFIG_MEDIA_TYPE, digest: configDigest, size: config.length },
    layers: [{
      mediaType: BUNDLE_LAYER_MEDIA_TYPE,
      digest: layerDigest,
      size: layer.length,
      annotations: { "org.opencontainers.image.title": basename(file) },
    }],
  }));
  const manifestDigest = await client.putManifest(
    ref.repository,
    ref.tag ?? "latest",
    manifest,
    MEDIA_OCI_MANIFEST,
  );
  return { pinned: `${ref.registry}/${ref.repository}@${manifestDigest}`, manifestDigest };
}

/**
 * Pulls the bundle layer of the artifact `refText` into the new file `file`, checking it
 * against the layer's digest; returns that digest's hex (the bundle's SHA-256).
 *
 * @throws {AssetError} `bundle_refused` when the manifest holds no bundle layer.
 * @throws {BundleError} `digest_mismatch` when the bytes are not the layer's.
 * @throws {RegistryError} as the registry refuses.
 */
export async function pullBundle(
  refText: string,
  file: string,
  options: { access?: RegistryAccess; onProgress?: (done: number, total: number) => void } = {},
): Promise<string> {
  const ref = parseReference(refText);
  const client = openRegistryClient(ref, options.access ?? {});
  const fetched = await client.getManifest(ref.repository, manifestTarget(ref));
  const refuse = (why: string) =>
    new AssetError("bundle_refused", `Cannot install bundle ${REGISTRY_PREFIX}${refText}: ${why}`);
  let layers: unknown;
  try {
    layers = (JSON.parse(new TextDecoder().decode(fetched.bytes)) as { layers?: unknown }).layers;
  } catch {
    throw refuse("its manifest is not JSON");
  }
  const bundles = Array.isArray(layers)
    ? layers.filter((l) => (l as { mediaType?: unknown })?.mediaType === BUNDLE_LAYER_MEDIA_TYPE)
    : [];
  if (bundles.length !== 1) {
    throw refuse(`it is not a shuru assets bundle (no single ${BUNDLE_LAYER_MEDIA_TYPE} layer)`);
  }
  const layer = bundles[0] as { digest?: unknown; size?: unknown };
  const size = layer.size;
  if (
    typeof layer.digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(layer.digest) ||
    typeof size !== "number" || !Number.isSafeInteger(size) || size <= 0 || size > MAX_LAYER_BYTES
  ) {
    throw refuse("its bundle layer has no valid digest and size");
  }
  const hash = createHash("sha256");
  using out = await Deno.open(file, { write: true, createNew: true, mode: 0o644 });
  for (let offset = 0; offset < size; offset += RANGE_BYTES) {
    const length = Math.min(RANGE_BYTES, size - offset);
    const bytes = await client.getBlobRange(ref.repository, layer.digest, {
      offset,
      length,
      blobSize: size,
    });
    hash.update(bytes);
    for (let at = 0; at < bytes.length;) at += await out.write(bytes.subarray(at));
    options.onProgress?.(offset + length, size);
  }
  const hex = hash.digest("hex");
  if (`sha256:${hex}` !== layer.digest) {
    throw new BundleError(
      "digest_mismatch",
      `Cannot use bundle ${REGISTRY_PREFIX}${refText}: its layer hashes to sha256:${hex}, ` +
        `its manifest says ${layer.digest}`,
    );
  }
  return hex;
}
