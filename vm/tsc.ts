/**
 * The host's TSC rate, passed to the guest as `tsc_early_khz`.
 *
 * Under TCG the guest's TSC is the host's TSC; a wrong rate makes the guest clock drift (a
 * 20% error made 10 guest seconds last 12.5 real ones) and skipping calibration avoids hangs.
 * Sources, best first: the kernel log's calibration, `cpu MHz` when the CPU reports a known
 * TSC frequency (`tsc_known_freq`, typical in VMs), the brand string's nominal rate
 * (`@ 2.10GHz`, the TSC rate on Intel), then `cpu MHz`.
 *
 * @module
 */

/** A TSC rate and where it came from. */
export interface TscRate {
  /** Rate in kHz. */
  khz: number;
  /** Which source gave it. */
  source: "kernel-log" | "cpuinfo-known-freq" | "brand-string" | "cpuinfo";
}

/** Finds the TSC rate in kernel log text (`dmesg`), preferring the refined calibration. */
export function tscFromKernelLog(log: string): number | undefined {
  const refined = /tsc: Refined TSC clocksource calibration: (\d+(?:\.\d+)?) MHz/.exec(log);
  const detected = /tsc: Detected (\d+(?:\.\d+)?) MHz (?:TSC|processor)/.exec(log);
  const mhz = refined?.[1] ?? detected?.[1];
  return mhz === undefined ? undefined : Math.round(Number(mhz) * 1000);
}

/** Finds the TSC rate in `/proc/cpuinfo` text. */
export function tscFromCpuinfo(text: string): TscRate | undefined {
  const first = text.split("\n\n")[0] ?? "";
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, "m").exec(first)?.[1];
  const mhz = Number(field("cpu MHz"));
  const flags = (field("flags") ?? "").split(" ");
  if (flags.includes("tsc_known_freq") && mhz > 0) {
    return { khz: Math.round(mhz * 1000), source: "cpuinfo-known-freq" };
  }
  const brand = /@\s*(\d+(?:\.\d+)?)\s*GHz/.exec(field("model name") ?? "");
  if (brand) return { khz: Math.round(Number(brand[1]) * 1e6), source: "brand-string" };
  if (mhz > 0) return { khz: Math.round(mhz * 1000), source: "cpuinfo" };
  return undefined;
}

/** Measures the host's TSC rate; `undefined` when nothing reports one. */
export async function hostTscRate(): Promise<TscRate | undefined> {
  try {
    const out = await new Deno.Command("dmesg", { stdout: "piped", stderr: "null" }).output();
    const khz = out.success ? tscFromKernelLog(new TextDecoder().decode(out.stdout)) : undefined;
    if (khz) return { khz, source: "kernel-log" };
  } catch {
    // no dmesg or not allowed: fall through
  }
  try {
    return tscFromCpuinfo(await Deno.readTextFile("/proc/cpuinfo"));
  } catch {
    return undefined;
  }
}
