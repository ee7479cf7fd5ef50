/**
 * A guest's serial console as the VM backends see it: bytes in, lines out, the boot phases the
 * markers announce (with their times), the power-down and panic lines, and the last lines for
 * error messages. Backend-neutral: the VZ backend feeds it from its console socket.
 *
 * @module
 */

import { AGENT_START_MARKER, INITRAMFS_MARKER, POWER_OFF_MARKER } from "../proto/mod.ts";
import { VmError } from "./errors.ts";
import type { BootPhase, VmExit } from "./types.ts";

const TAIL_LINES = 200;
const LINE_CAP = 4096;

/** Options of {@linkcode BootConsole}. */
export interface BootConsoleOptions {
  /** `performance.now()` when the VM started (phases are milliseconds since then). */
  started: number;
  /** Called with each console line (without the newline). */
  onLine?: (line: string) => void;
  /** Clock (default `performance.now`). */
  now?: () => number;
}

/** Lines, boot phases and end markers of one VM's console. */
export class BootConsole {
  /** Milliseconds after the start at which each phase was seen. */
  readonly phases: Partial<Record<BootPhase, number>> = {};
  readonly #started: number;
  readonly #now: () => number;
  readonly #onLine: ((line: string) => void) | undefined;
  readonly #tail: string[] = [];
  readonly #waiters = new Map<BootPhase, Array<(ms: number) => void>>();
  readonly #decoder = new TextDecoder();
  #partial = "";
  #sawPowerDown = false;
  #panic = "";

  constructor(options: BootConsoleOptions) {
    this.#started = options.started;
    this.#now = options.now ?? (() => performance.now());
    this.#onLine = options.onLine;
  }

  /**
   * `true` once the guest announced its power-off (the kernel's power-down line, or shuru's
   * own marker, which a virtio console still carries: proto/boot.ts).
   */
  get sawPowerDown(): boolean {
    return this.#sawPowerDown;
  }

  /** The kernel's panic line, or "". */
  get panic(): string {
    return this.#panic;
  }

  /** Feeds console output. */
  push(chunk: Uint8Array): void {
    const lines = (this.#partial + this.#decoder.decode(chunk, { stream: true })).split("\n");
    this.#partial = (lines.pop() ?? "").slice(-LINE_CAP);
    for (const raw of lines) {
      const line = raw.replace(/\r$/, "").slice(0, LINE_CAP);
      this.#tail.push(line);
      if (this.#tail.length > TAIL_LINES) this.#tail.shift();
      this.#scan(line);
      this.#onLine?.(line);
    }
  }

  /** The output ended: keeps a last unterminated line. */
  end(): void {
    if (this.#partial) this.#tail.push(this.#partial);
    this.#partial = "";
  }

  /** Records `phase` (once) and wakes its waiters. */
  mark(phase: BootPhase, at = this.#now() - this.#started): void {
    if (this.phases[phase] !== undefined) return;
    this.phases[phase] = Math.round(at);
    for (const resolve of this.#waiters.get(phase) ?? []) resolve(this.phases[phase]!);
    this.#waiters.delete(phase);
  }

  /**
   * Resolves when `phase` is seen; rejects with a {@linkcode VmError} `boot_failed` when the VM
   * ends first (`exited`), naming `backend` and quoting the console tail.
   */
  waitFor(phase: BootPhase, exited: Promise<VmExit>, backend: string): Promise<number> {
    const seen = this.phases[phase];
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<number>((resolve, reject) => {
      const list = this.#waiters.get(phase) ?? [];
      list.push(resolve);
      this.#waiters.set(phase, list);
      exited.then((exit) => {
        if (this.phases[phase] !== undefined) return resolve(this.phases[phase]!);
        reject(
          new VmError(
            "boot_failed",
            `The VM ended (${backend} status ${exit.code}${
              exit.signal ? `, ${exit.signal}` : ""
            }) ` +
              `before ${phase}. Console tail:\n${exit.consoleTail}` +
              (exit.stderr ? `\n${backend}: ${exit.stderr}` : ""),
          ),
        );
      });
    });
  }

  /** Forgets pending waiters (the VM ended; their promises settle through `exited`). */
  dropWaiters(): void {
    for (const [, waiters] of this.#waiters) waiters.length = 0;
  }

  /** The last `lines` lines. */
  tail(lines = 30): string {
    return this.#tail.slice(-lines).join("\n");
  }

  /** Recognises the boot markers printed by the initramfs and the rootfs init. */
  #scan(line: string): void {
    if (line.includes("reboot: Power down") || line === POWER_OFF_MARKER) {
      this.#sawPowerDown = true;
    } else if (!this.#panic && line.includes("Kernel panic")) {
      this.#panic = line.replace(/^\[[ \d.]+\]\s*/, "");
    } else if (line.startsWith(`${INITRAMFS_MARKER} start `)) {
      const uptime = Number(line.split(" ").at(-1));
      this.mark("initramfs");
      if (Number.isFinite(uptime)) {
        this.mark("kernel", Math.max(0, (this.phases.initramfs ?? 0) - uptime * 1000));
      }
    } else if (line.startsWith(`${INITRAMFS_MARKER} root mounted`)) {
      this.mark("rootMounted");
    } else if (line.startsWith(AGENT_START_MARKER)) {
      this.mark("agentStart");
    }
  }
}
