import { assertEquals } from "../tests/_assert.ts";
import { hostTscRate, tscFromCpuinfo, tscFromKernelLog } from "./tsc.ts";

Deno.test("tscFromKernelLog prefers the refined calibration", () => {
  const log = "[0.0] tsc: Detected 2095.998 MHz processor\n" +
    "[1.2] tsc: Refined TSC clocksource calibration: 2096.024 MHz\n";
  assertEquals(tscFromKernelLog(log), 2096024);
  assertEquals(tscFromKernelLog("[0.0] tsc: Detected 2445.404 MHz processor"), 2445404);
  assertEquals(tscFromKernelLog("nothing here"), undefined);
});

Deno.test("tscFromCpuinfo: known-freq flag, brand string, plain cpu MHz", () => {
  const cpu = (model: string, mhz: string, flags: string) =>
    `processor\t: 0\nmodel name\t: ${model}\ncpu MHz\t\t: ${mhz}\nflags\t\t: fpu ${flags}\n\nprocessor\t: 1\n`;
  assertEquals(tscFromCpuinfo(cpu("AMD EPYC", "2445.404", "tsc constant_tsc tsc_known_freq")), {
    khz: 2445404,
    source: "cpuinfo-known-freq",
  });
  assertEquals(tscFromCpuinfo(cpu("Intel(R) Xeon(R) CPU @ 2.10GHz", "800.000", "tsc")), {
    khz: 2100000,
    source: "brand-string",
  });
  assertEquals(tscFromCpuinfo(cpu("AMD Ryzen 7", "3200.5", "tsc")), {
    khz: 3200500,
    source: "cpuinfo",
  });
  assertEquals(tscFromCpuinfo("garbage"), undefined);
});

Deno.test("hostTscRate finds a plausible rate on this host", async () => {
  const rate = await hostTscRate();
  if (!rate) throw new Error("no TSC rate found in dmesg or /proc/cpuinfo");
  if (rate.khz < 100_000 || rate.khz > 10_000_000) throw new Error(`implausible ${rate.khz} kHz`);
});
