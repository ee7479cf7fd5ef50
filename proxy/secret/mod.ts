/**
 * `proxy/secret/`: secrets that never enter the VM (`--secret`, `docs/secrets.md`).
 *
 * - `placeholder.ts`: what the guest sees instead of a value.
 * - `ca.ts`: the per-run CA (key in memory only) and its leaves for the secrets' hosts.
 * - `terminator.ts`: the relay's dialer for secret hosts: ends the guest's TLS, opens verified
 *   TLS to the real host, and relays HTTP/1.1 through `http_relay.ts`.
 * - `http_relay.ts` (with `content_decoder.ts`, `replace.ts`, and `proxy/http/` for the wire):
 *   placeholders in on the way out, values scrubbed on the way back.
 * - `inject.ts`: where in a request a placeholder may become its value (credential headers by
 *   default; the query and bodies by opt-in).
 *
 * ```ts ignore
 * const ca = await CertificateAuthority.create();
 * const terminator = new SecretTerminator({
 *   ca,
 *   secrets: [{ name: "API_KEY", value, placeholder: makePlaceholder(value), hosts: ["api.x.com"] }],
 * });
 * const relay = new Relay({
 *   link,
 *   policy,
 *   dial: (t) => terminator.dial(t),
 *   inspect: (name) => terminator.handles(name),
 * });
 * ```
 *
 * @module
 */

export { CertificateAuthority, type CertificateAuthorityOptions, type TlsIdentity } from "./ca.ts";
export { makePlaceholder, MIN_RANDOM_CHARS, placeholderPrefix } from "./placeholder.ts";
export { type Secret, SecretTerminator, type SecretTerminatorOptions } from "./terminator.ts";
export {
  type ByteDuplex,
  type HttpSecretRelayOptions,
  type HttpSecretRelayStats,
  relayHttpWithSecrets,
} from "./http_relay.ts";
export {
  DEFAULT_INJECT_PLACES,
  INJECT_PLACES,
  type InjectPlace,
  RequestInjector,
  type RequestInjectorOptions,
  type SecretPair,
} from "./inject.ts";
export { HttpRelayError, type HttpRelayErrorCode } from "../http/mod.ts";
