/** The shuru version, printed by `shuru --version`. */
export const VERSION = "0.1.0";

/** What `shuru --version` prints: the version, the VM backend, the host platform. */
export function versionText(backend: string): string {
  return `${VERSION} (${backend} backend, ${Deno.build.os}-${Deno.build.arch})`;
}
