/**
 * `shuru init`: builds (or checks) the guest assets, showing each step with its time.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { join } from "node:path";
import {
  type AssetProgress,
  canBuildAssets,
  ensureAssets,
  exportBundle,
  type ExportedBundle,
  forgetInstalledBundle,
  type GuestAssets,
  installBundle,
  parseBundleDigest,
} from "../assets/mod.ts";
import {
  defaultBackend,
  ensureSignedDeno,
  hostTscRate,
  parseAccel,
  resolveAccel,
  VmError,
} from "../vm/mod.ts";
import { UserError } from "./errors.ts";
import { homeLayout, hostArch, parseArch } from "../host/mod.ts";
import { prepareReady, RunnerError } from "../runner/mod.ts";
import { resolveSpec } from "../spec/mod.ts";

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Options of {@linkcode ProgressPrinter}. */
export interface ProgressPrinterOptions {
  /**
   * Steps that finish within this many milliseconds without a detail print nothing (so an
   * up-to-date check before every `shuru run` stays silent). @default 0
   */
  quietUnderMs?: number;
}

/** Renders asset progress on stderr: a spinner on a terminal, plain lines otherwise. */
export class ProgressPrinter {
  readonly #tty = Deno.stderr.isTerminal();
  readonly #encoder = new TextEncoder();
  readonly #quietUnderMs: number;
  /** The current step's start line, not printed yet (quiet mode). */
  #pending = "";
  #label = "";
  #detail = "";
  #started = 0;
  #frame = 0;
  #lastTenth = -1;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(options: ProgressPrinterOptions = {}) {
    this.#quietUnderMs = options.quietUnderMs ?? 0;
  }

  /** Handles one progress event. */
  onProgress = (event: AssetProgress): void => {
    if (event.kind === "start") {
      this.#label = event.label;
      this.#detail = "";
      this.#lastTenth = -1;
      this.#started = performance.now();
      const spin = () => (this.#timer = setInterval(() => this.#draw(), 100));
      if (this.#quietUnderMs > 0) this.#pending = `… ${event.label}`;
      else if (this.#tty) spin();
      else this.#line(`… ${event.label}`);
      if (this.#quietUnderMs > 0 && this.#tty) {
        // Start the spinner only once the step is slow enough to be worth showing.
        this.#timer = setTimeout(() => {
          this.#pending = "";
          spin();
        }, this.#quietUnderMs);
      }
    } else if (event.kind === "detail") {
      if (this.#pending && !this.#tty) {
        this.#line(this.#pending);
        this.#pending = "";
      }
      this.#detail = event.fraction === undefined
        ? event.text
        : `${Math.round(event.fraction * 100)}% ${event.text}`;
      if (!this.#tty) {
        // Plain output: every message, but a percentage only each 10%.
        const tenth = event.fraction === undefined ? -1 : Math.floor(event.fraction * 10);
        if (event.fraction === undefined || tenth > this.#lastTenth) {
          this.#line(`  ${this.#detail}`);
        }
        if (event.fraction !== undefined) this.#lastTenth = tenth;
      }
    } else {
      clearInterval(this.#timer);
      clearTimeout(this.#timer);
      const quiet = this.#pending !== "" && event.elapsedMs < this.#quietUnderMs;
      if (this.#pending && !this.#tty && !quiet) this.#line(this.#pending);
      this.#pending = "";
      if (quiet) return;
      const seconds = (event.elapsedMs / 1000).toFixed(1).padStart(6);
      const note = event.note ? `  (${event.note})` : "";
      this.#line(`${this.#tty ? "\r\x1b[2K" : ""}✓ ${seconds} s  ${this.#label}${note}`);
    }
  };

  /** Stops the spinner (on errors). */
  stop(): void {
    clearInterval(this.#timer);
    clearTimeout(this.#timer);
    if (this.#tty) this.#write("\r\x1b[2K");
  }

  #draw(): void {
    const seconds = ((performance.now() - this.#started) / 1000).toFixed(1);
    const columns = Deno.consoleSize?.().columns ?? 100;
    const text = `${
      SPINNER[this.#frame++ % SPINNER.length]
    } ${this.#label} ${seconds} s  ${this.#detail}`;
    this.#write(`\r\x1b[2K${text.slice(0, columns - 1)}`);
  }

  #line(text: string): void {
    this.#write(text + "\n");
  }

  #write(text: string): void {
    Deno.stderr.writeSync(this.#encoder.encode(text));
  }
}

/**
 * macOS: signs a copy of Deno with the entitlement Virtualization.framework requires, into the
 * data home, where the `./shuru` launcher finds it.
 */
async function signDeno(home: string): Promise<void> {
  try {
    const result = await ensureSignedDeno({ home, path: Deno.env.get("PATH") ?? "" });
    console.error(
      result.signed
        ? `✓ signed a copy of Deno for Virtualization.framework: ${result.path}`
        : `✓ Deno is signed for Virtualization.framework: ${result.path}`,
    );
  } catch (err) {
    if (err instanceof VmError) throw new UserError(err.message, { cause: err });
    throw err;
  }
}

/** Builds the `init` subcommand. */
export function initCommand() {
  return new Command("init")
    .summary("build or check the guest assets (kernel, initramfs, root filesystem)")
    .description(
      "Build the guest assets (kernel, initramfs, Debian root filesystem, and the tools disk with Deno and the guest agent) from the host's Debian packages. Does nothing when they are current; they are rebuilt when the agent or the recipe changes. Also checks whether KVM works. On macOS it first signs a copy of Deno with the com.apple.security.virtualization entitlement into the data home (bin/), which the ./shuru launcher then runs.\n\nA host that cannot build them (macOS) installs a bundle instead: --export FILE on Linux writes the assets as one file (its SHA-256 is printed), --bundle FILE|URL installs one here (checked against --bundle-digest when given, and file by file against its own manifest), and runs then use it. On Linux a plain `shuru init` builds again and stops using an installed bundle.",
    )
    .option(
      "--arch <arch>",
      `guest architecture: x86_64 or arm64 (default: the host's, ${hostArch()}); a foreign one ` +
        "is built from downloaded packages and runs emulated",
    )
    .option("--force", "rebuild even when current (also re-runs mmdebstrap)")
    .option(
      "--install-deps",
      "install missing host packages with apt-get (Debian; the default as root)",
    )
    .option("--no-install-deps", "only name missing host packages (one apt-get line), as root too")
    .option("--accel <accel>", "accelerator to check: kvm, tcg or auto (env SHURU_ACCEL)")
    .option("--agent <file>", "guest agent entry module (default: guest/main.ts of this checkout)")
    .option(
      "--export <file>",
      "also write the assets as one bundle file (for a Mac), or push it: docker://REGISTRY/REPO:TAG",
    )
    .option(
      "--bundle <file|url|ref>",
      "install the assets from a bundle file, http(s) URL or docker://REGISTRY/REPO[:TAG|@DIGEST] " +
        "instead of building them",
    )
    .option(
      "--bundle-digest <digest>",
      "the bundle's pinned SHA-256 (sha256:HEX, as --export prints it); refused when it differs",
    )
    .option("--json", "print the asset paths as JSON on stdout")
    .option(
      "--no-ready",
      "do not make the ready snapshot (the guest booted once and saved, which every warm start " +
        "resumes; otherwise made here for the default CPUs, memory and disk)",
    )
    .action(async (options) => {
      const layout = homeLayout();
      if (options.bundle !== undefined && options.export !== undefined) {
        throw new UserError(
          "Cannot use --bundle with --export: install, then export in a second run",
        );
      }
      if (options.bundleDigest !== undefined && options.bundle === undefined) {
        throw new UserError("Cannot use --bundle-digest without --bundle");
      }
      if (options.bundle !== undefined && options.force) {
        throw new UserError("Cannot use --bundle with --force (--force rebuilds)");
      }
      const digest = options.bundleDigest === undefined
        ? undefined
        : parseBundleDigest(options.bundleDigest);
      if (Deno.build.os === "darwin") await signDeno(layout.root);
      const printer = new ProgressPrinter();
      const onProgress = options.json && !Deno.stderr.isTerminal() ? undefined : printer.onProgress;
      let assets: GuestAssets;
      let arch;
      let exported: ExportedBundle | undefined;
      try {
        arch = options.arch === undefined ? undefined : parseArch(options.arch);
        if (options.arch !== undefined && arch === undefined) {
          throw new UserError(
            `Invalid --arch ${JSON.stringify(options.arch)}: use x86_64 or arm64`,
          );
        }
        if (options.bundle !== undefined) {
          const installed = await installBundle(options.bundle, {
            assetsDir: layout.assets,
            ...(arch ? { arch } : {}),
            ...(digest ? { sha256: digest } : {}),
            ...(onProgress ? { onProgress } : {}),
          });
          arch = installed.bundle.arch;
          if (digest === undefined) {
            console.error(
              `shuru: the bundle was not pinned; its SHA-256 is sha256:${installed.bundle.sha256} ` +
                "(pass it as --bundle-digest to refuse any other)",
            );
          }
        }
        arch ??= hostArch();
        // On Linux a plain init builds: an installed bundle is then no longer used.
        const build = options.bundle === undefined && canBuildAssets();
        assets = await ensureAssets({
          assetsDir: layout.assets,
          arch,
          force: options.force,
          agentEntry: options.agent,
          installDeps: options.installDeps,
          path: Deno.env.get("PATH") ?? "",
          ...(build ? { ignoreInstalledBundle: true } : {}),
          ...(onProgress ? { onProgress } : {}),
        });
        if (build) await forgetInstalledBundle(layout.assets, arch);
        if (options.export !== undefined) {
          exported = await exportBundle(assets, options.export, {
            ...(onProgress ? { onProgress } : {}),
          });
        }
      } catch (err) {
        printer.stop();
        throw err;
      }
      // A pushed bundle is installed by its pinned manifest; a file by its path.
      const where = exported?.pushed ? `docker://${exported.pushed.pinned}` : options.export;
      const bundle = exported
        ? {
          bundle: {
            path: where,
            sha256: `sha256:${exported.sha256}`,
            ...(exported.pushed ? { manifestDigest: exported.pushed.manifestDigest } : {}),
          },
        }
        : {};
      if (exported && !options.json) {
        console.log(`bundle: ${where}`);
        console.log(`digest: sha256:${exported.sha256}`);
        console.log(
          `install with: shuru init --bundle ${where} --bundle-digest sha256:${exported.sha256}`,
        );
      }
      const state = assets.built ? "built" : options.bundle !== undefined ? "installed" : "current";
      if (defaultBackend() === "vz") {
        if (options.json) {
          console.log(JSON.stringify({ ...assets, ...bundle, backend: "vz" }, null, 2));
        } else {
          console.log(
            `guest assets ${state}: ${assets.dir}\nbackend: vz (Virtualization.framework)`,
          );
        }
        return;
      }
      let accel;
      try {
        const choice = parseAccel(options.accel ?? Deno.env.get("SHURU_ACCEL") ?? "auto");
        accel = await resolveAccel(choice, {
          arch,
          kernel: assets.kernel,
          initrd: assets.initramfs,
          cacheFile: join(layout.assets, "kvm-probe.json"),
          workDir: layout.assets,
          tscKhz: (await hostTscRate())?.khz,
        });
      } catch (err) {
        if (err instanceof VmError) throw new UserError(err.message, { cause: err });
        throw err;
      }
      let ready: string | undefined;
      if (options.ready) {
        const t0 = performance.now();
        const spec = resolveSpec([{ accel: accel.accel === "kvm" ? "kvm" : "tcg", arch }]);
        try {
          ready = await prepareReady(spec, {
            home: layout,
            onNotice: (line) => console.error(line),
          });
        } catch (err) {
          if (err instanceof RunnerError) throw new UserError(err.message, { cause: err });
          throw err;
        }
        if (ready === "made" && !options.json) {
          console.error(
            `✓ ${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s  ready snapshot ` +
              "made (warm starts resume it)",
          );
        }
      }
      if (options.json) {
        console.log(
          JSON.stringify(
            { ...assets, ...bundle, accel: accel.accel, ...(ready ? { ready } : {}) },
            null,
            2,
          ),
        );
        return;
      }
      console.log(`guest assets ${state}: ${assets.dir} (kernel ${assets.kernelRelease})`);
      console.log(`accelerator: ${accel.accel}`);
      if (ready) console.log(`ready snapshot: ${ready}`);
      if (accel.notice) console.error(accel.notice);
    });
}
