/**
 * Images from registries (`python:3.12-slim`, `localhost:5000/team/env:1`), through the
 * project's distribution client (`oci/`: references, docker-config credentials, the token flow,
 * retries). The tag is resolved to a manifest digest on every call; layers are pulled once, by
 * digest, into `<images>/blobs/sha256/` (streamed to a temporary file, verified, then renamed
 * into place), so a second conversion of the same image (another disk size) reads nothing from
 * the network. Manifests and configs are small and read into memory.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  openRegistryClient,
  parseReference,
  type RegistryAccess,
  type RegistryClient,
  type RegistryError,
} from "../oci/mod.ts";
import { ImageError } from "./errors.ts";
import { type Descriptor, layerCompression } from "./manifest.ts";
import { type BlobSource, type ResolvedImage, resolveFromManifest, shortDigest } from "./source.ts";
import type { ImageProgress, RegistryResolver } from "./source.ts";

/** How to reach registries (as `shuru checkpoint pull` does). */
export type RegistryImageOptions = RegistryAccess;

/** Registry errors become image errors with the same message (one line, actionable). */
function asImageError(err: unknown): never {
  const e = err as RegistryError;
  if (e?.name === "RegistryError") {
    const code = e.code === "not_found"
      ? "not_found"
      : e.code === "digest_mismatch" || e.code === "size_mismatch"
      ? "digest_mismatch"
      : e.code === "invalid_reference"
      ? "invalid_reference"
      : e.code === "media_type"
      ? "unsupported_media_type"
      : "registry";
    throw new ImageError(code, e.message, { cause: err });
  }
  throw err;
}

/** A {@linkcode RegistryResolver} over `oci/`'s client. */
export function registryResolver(options: RegistryImageOptions = {}): RegistryResolver {
  return async (text, where) => {
    try {
      return await resolveRegistryImage(text, where, options);
    } catch (err) {
      asImageError(err);
    }
  };
}

async function resolveRegistryImage(
  text: string,
  where: Parameters<RegistryResolver>[1],
  options: RegistryImageOptions,
): Promise<ResolvedImage> {
  const { blobsDir, onProgress, platform } = where;
  const ref = parseReference(text);
  const client = openRegistryClient(ref, options);
  const repo = ref.repository;
  const fetched = await client.getManifest(repo, ref.digest ?? ref.tag ?? "latest");
  const source: BlobSource = {
    name: text,
    platform,
    async open(d: Descriptor, what: string) {
      try {
        if (layerCompression(d.mediaType) === undefined) {
          const bytes = await client.getBlob(repo, d.digest, d.size);
          return new Blob([bytes as Uint8Array<ArrayBuffer>]).stream();
        }
        const path = await pullBlob(client, repo, d, { blobsDir, what, onProgress });
        return (await Deno.open(path)).readable;
      } catch (err) {
        asImageError(err);
      }
    },
  };
  return await resolveFromManifest(source, fetched);
}

/**
 * The path of blob `d` in the blob cache, downloading it first when absent. The download is
 * streamed to a temporary file and hashed on the way; only a complete, verified file is renamed
 * into place.
 */
async function pullBlob(
  client: RegistryClient,
  repo: string,
  d: Descriptor,
  options: { blobsDir: string; what: string; onProgress: (p: ImageProgress) => void },
): Promise<string> {
  const dir = join(options.blobsDir, "sha256");
  const path = join(dir, d.digest.slice(7));
  try {
    if ((await Deno.stat(path)).size === d.size) return path;
  } catch {
    // not pulled yet
  }
  await Deno.mkdir(dir, { recursive: true });
  const tmp = `${path}.${crypto.randomUUID()}.partial`;
  const res = await client.transport.request({
    method: "GET",
    path: `/v2/${repo}/blobs/${d.digest}`,
    scopes: [`repository:${repo}:pull`],
    action: `get ${options.what} from ${client.registry}/${repo}`,
  });
  const hash = createHash("sha256");
  let bytes = 0;
  let lastShown = 0;
  try {
    const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      for await (const chunk of res.body ?? new ReadableStream()) {
        bytes += chunk.length;
        if (bytes > d.size) {
          throw new ImageError(
            "digest_mismatch",
            `Cannot pull ${options.what}: the registry sent more than its ${d.size} bytes`,
          );
        }
        hash.update(chunk);
        let off = 0;
        while (off < chunk.length) off += await file.write(chunk.subarray(off));
        if (bytes - lastShown >= 8 * 1048576 || bytes === d.size) {
          lastShown = bytes;
          options.onProgress({
            text: `pulling ${shortDigest(d.digest)}: ${(bytes / 1048576).toFixed(1)} of ` +
              `${(d.size / 1048576).toFixed(1)} MiB`,
            fraction: d.size ? bytes / d.size : 1,
          });
        }
      }
    } finally {
      file.close();
    }
    const got = `sha256:${hash.digest("hex")}`;
    if (bytes !== d.size || got !== d.digest) {
      throw new ImageError(
        "digest_mismatch",
        `Cannot pull ${options.what}: got ${bytes} bytes hashing to ${shortDigest(got)}, the ` +
          `manifest says ${d.size} bytes, ${shortDigest(d.digest)}`,
      );
    }
    await Deno.rename(tmp, path);
    return path;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}
