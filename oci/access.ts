/**
 * How shuru reaches a registry for a user: a {@linkcode RegistryClient} for a reference's
 * registry with the user's docker credentials and the `--insecure-registry` hosts; used for
 * checkpoints (`store/remote_*.ts`) and images (`image/registry.ts`) alike.
 *
 * @module
 */

import { RegistryClient } from "./client.ts";
import { lookupCredentials } from "./docker_config.ts";
import type { Reference } from "./reference.ts";
import type { RetryPolicy } from "./retry.ts";

/** How to reach registries: what `--insecure-registry` and friends set. */
export interface RegistryAccess {
  /** Hosts that may be reached over plain HTTP besides loopback. */
  insecureRegistries?: readonly string[];
  /** docker's config file (default: `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`). */
  dockerConfig?: string;
  /** Retry settings (default: 5 attempts over about 4 s). */
  retry?: RetryPolicy;
  /** Called with a line before each retry. */
  onRetry?: (line: string) => void;
}

/** A client for `ref`'s registry with the user's docker credentials. */
export function openRegistryClient(ref: Reference, options: RegistryAccess = {}): RegistryClient {
  return new RegistryClient(ref.registry, {
    credentials: () =>
      lookupCredentials(
        ref.registry,
        options.dockerConfig !== undefined ? { configPath: options.dockerConfig } : {},
      ),
    ...(options.insecureRegistries ? { insecureRegistries: options.insecureRegistries } : {}),
    ...(options.retry ? { retry: options.retry } : {}),
    ...(options.onRetry ? { onRetry: options.onRetry } : {}),
  });
}
