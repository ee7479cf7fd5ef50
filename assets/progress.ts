/**
 * Progress of long asset work (building, exporting, installing a bundle), as events a printer
 * shows, and the step runner that emits them and records each step's time.
 *
 * @module
 */

/** Progress events, for display. */
export type AssetProgress =
  | { kind: "start"; step: AssetStep; label: string }
  | { kind: "detail"; step: AssetStep; text: string; fraction?: number }
  | { kind: "done"; step: AssetStep; elapsedMs: number; note?: string };

/** The steps of a build, an export and a bundle's installation, in order. */
export type AssetStep =
  | "host-tools"
  | "packages"
  | "agent"
  | "kernel"
  | "initramfs"
  | "tools"
  | "debian"
  | "rootfs-tree"
  | "rootfs-image"
  | "install"
  | "export"
  | "push"
  | "download"
  | "verify"
  | "unpack";

/** Runs one step with start/done events and records its time in `timings`. */
export async function step<T>(
  name: AssetStep,
  label: string,
  timings: Record<string, number>,
  onProgress: (e: AssetProgress) => void,
  body: (detail: (text: string, fraction?: number) => void) => Promise<T>,
  note?: (result: T) => string,
): Promise<T> {
  const started = performance.now();
  onProgress({ kind: "start", step: name, label });
  const result = await body((text, fraction) =>
    onProgress({ kind: "detail", step: name, text, fraction })
  );
  const elapsedMs = Math.round(performance.now() - started);
  timings[name] = (timings[name] ?? 0) + elapsedMs;
  onProgress({ kind: "done", step: name, elapsedMs, note: note?.(result) });
  return result;
}
