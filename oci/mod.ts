/**
 * A client for OCI distribution registries (GHCR, ECR, Docker Hub, Harbor, `distribution`):
 * references, manifests, blobs with `Range` reads, monolithic and chunked uploads,
 * cross-repository mounts, auth as docker keeps it (`~/.docker/config.json`, credential
 * helpers, the Bearer token flow, Basic) and retries with backoff. It knows nothing of what the
 * blobs hold; `store/remote_*.ts` lays checkpoints out on top of it (`docs/remote.md`).
 *
 * @example Fetch a manifest anonymously
 * ```ts ignore
 * import { parseReference, RegistryClient } from "./mod.ts";
 *
 * const ref = parseReference("localhost:5000/team/env:v1");
 * const client = new RegistryClient(ref.registry);
 * const m = await client.getManifest(ref.repository, ref.tag!);
 * console.log(m.digest, m.mediaType);
 * ```
 *
 * @module
 */

export { codeForStatus, RegistryError, type RegistryErrorCode } from "./errors.ts";
export {
  credentialKey,
  DOCKER_HUB,
  formatReference,
  isLoopbackRegistry,
  looksLikeReference,
  manifestTarget,
  parseReference,
  type Reference,
  registryHost,
} from "./reference.ts";
export { type Challenge, parseChallenges } from "./challenge.ts";
export {
  type AttemptOutcome,
  DEFAULT_RETRY,
  isRetryableStatus,
  retryDelay,
  type RetryPolicy,
} from "./retry.ts";
export {
  type Credentials,
  type DockerConfigOptions,
  dockerConfigPath,
  lookupCredentials,
  storeCredentials,
  type StoredIn,
} from "./docker_config.ts";
export { openRegistryClient, type RegistryAccess } from "./access.ts";
export { RegistryTransport, type TransportOptions, type TransportRequest } from "./transport.ts";
export {
  checkDigest,
  type ClientOptions,
  type Descriptor,
  type FetchedManifest,
  MAX_MANIFEST_BYTES,
  MEDIA_DOCKER_LIST,
  MEDIA_DOCKER_MANIFEST,
  MEDIA_OCI_INDEX,
  MEDIA_OCI_MANIFEST,
  readBody,
  RegistryClient,
  sha256Digest,
  type UploadOptions,
} from "./client.ts";
