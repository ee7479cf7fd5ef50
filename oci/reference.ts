/**
 * Image references: `[registry[:port]/]repository[:tag][@sha256:hex]`, parsed the way the
 * docker and OCI tools do (distribution's reference grammar):
 *
 * - The first path component is a registry when it contains `.` or `:`, is `localhost`, or has
 *   an upper-case letter; otherwise the registry is Docker Hub (`docker.io`), and a one-part
 *   Hub repository gets the `library/` prefix (`alpine` → `docker.io/library/alpine`).
 * - Without a tag or digest the tag is `latest`. With a digest the tag is informational.
 * - Repository components are lower-case `[a-z0-9]` runs joined by `.`, `_`, `__` or dashes.
 *
 * Docker Hub is served at `registry-1.docker.io` and its credentials are stored under
 * `https://index.docker.io/v1/` in docker's config; {@linkcode registryHost} and
 * {@linkcode credentialKey} make those translations in one place.
 *
 * @module
 */

import { RegistryError } from "./errors.ts";

/** Docker Hub's name in references. */
export const DOCKER_HUB = "docker.io";
/** Docker Hub's API host. */
export const DOCKER_HUB_API = "registry-1.docker.io";
/** The key Docker Hub's credentials are stored under in docker's config. */
export const DOCKER_HUB_CREDENTIAL_KEY = "https://index.docker.io/v1/";

const COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const REPOSITORY_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
const HOST_RE =
  /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?$/;

/** A parsed reference. */
export interface Reference {
  /** Registry as written (`localhost:5000`, `ghcr.io`, `docker.io`). */
  readonly registry: string;
  /** Repository path (`team/env`, `library/alpine`). */
  readonly repository: string;
  /** Tag (`latest` when neither tag nor digest was given); absent with a bare digest. */
  readonly tag?: string;
  /** `sha256:<64 hex>` when pinned by digest. */
  readonly digest?: string;
}

function invalid(text: string, why: string): RegistryError {
  return new RegistryError(
    "invalid_reference",
    `Cannot use "${text}" as a registry reference: ${why} ` +
      "(expected REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST], e.g. localhost:5000/team/env:v1)",
  );
}

/**
 * Parses `text` as a reference.
 *
 * @example
 * ```ts
 * import { parseReference } from "./reference.ts";
 * const r = parseReference("localhost:5000/team/env:v1");
 * if (r.registry !== "localhost:5000" || r.repository !== "team/env" || r.tag !== "v1") {
 *   throw new Error("unexpected");
 * }
 * ```
 * @throws {RegistryError} `invalid_reference` with what is wrong.
 */
export function parseReference(text: string): Reference {
  if (text.length === 0 || text.length > 4096) throw invalid(text, "empty or too long");
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) {
      throw invalid(text, `digest "${digest}" is not sha256: followed by 64 lower-case hex digits`);
    }
  }
  let tag: string | undefined;
  const slash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) {
      throw invalid(text, `tag "${tag}" is not 1-128 letters, digits, '_', '.' or '-'`);
    }
  }
  let registry = DOCKER_HUB;
  let repository = rest;
  const first = rest.indexOf("/");
  if (first >= 0) {
    const head = rest.slice(0, first);
    if (
      head.includes(".") || head.includes(":") || head === "localhost" ||
      head !== head.toLowerCase()
    ) {
      registry = head;
      repository = rest.slice(first + 1);
      if (!HOST_RE.test(registry)) throw invalid(text, `registry "${registry}" is not a host`);
    }
  }
  if (registry === "index.docker.io" || registry === DOCKER_HUB_API) registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;
  if (!REPOSITORY_RE.test(repository) || repository.length > 255) {
    throw invalid(
      text,
      `repository "${repository}" must be lower-case letters and digits, separated by ` +
        "'/', '.', '_' or '-'",
    );
  }
  if (tag === undefined && digest === undefined) tag = "latest";
  return {
    registry,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
  };
}

/** The reference as text: `registry/repository[:tag][@digest]`. */
export function formatReference(ref: Reference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ""}${
    ref.digest !== undefined ? `@${ref.digest}` : ""
  }`;
}

/** What a manifest request names: the digest when pinned, else the tag. */
export function manifestTarget(ref: Reference): string {
  return ref.digest ?? ref.tag ?? "latest";
}

/** The host the registry's API is served at (`docker.io` → `registry-1.docker.io`). */
export function registryHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** The key docker's config stores this registry's credentials under. */
export function credentialKey(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_CREDENTIAL_KEY : registry;
}

/** The host part of `registry` without the port (`[::1]:5000` → `::1`). */
export function hostnameOf(registry: string): string {
  if (registry.startsWith("[")) return registry.slice(1, registry.indexOf("]"));
  const colon = registry.lastIndexOf(":");
  return colon >= 0 ? registry.slice(0, colon) : registry;
}

/**
 * `true` when the registry is on this machine's loopback (`localhost`, `127.0.0.0/8`, `::1`),
 * the only registries plain HTTP is allowed for without `--insecure-registry`.
 */
export function isLoopbackRegistry(registry: string): boolean {
  const host = hostnameOf(registry).toLowerCase();
  return host === "localhost" || host === "::1" || /^127(?:\.\d{1,3}){3}$/.test(host);
}

/**
 * `true` when `text` names a registry reference rather than a local checkpoint name: local
 * names never contain `/`, `:` or `@`, references always do (a Hub image needs its registry or
 * tag spelled out: `docker.io/x/y`, `y:tag`).
 */
export function looksLikeReference(text: string): boolean {
  return /[/:@]/.test(text);
}
