/**
 * Linux signal numbers and names (x86_64 and aarch64 share them), one table for both sides: the
 * guest agent sends signals and reports deaths by signal as `128 + N`; the host's control
 * server reads the signals its clients name.
 *
 * @module
 */

/** Signal name to number on Linux. */
export const SIGNALS = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGSTKFLT: 16,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
} as const;

/** A signal name known to {@link SIGNALS}. */
export type SignalName = keyof typeof SIGNALS;

const BY_NUMBER = new Map<number, SignalName>(
  Object.entries(SIGNALS).map(([name, n]) => [n, name as SignalName]),
);

/** The name of signal `n` (`"SIGKILL"` for 9), or `"SIG<n>"` for real-time and unknown ones. */
export function signalName(n: number): string {
  return BY_NUMBER.get(n) ?? `SIG${n}`;
}

/**
 * Parses a signal given as a number, a name (`"SIGTERM"`) or a short name (`"TERM"`, `"term"`).
 *
 * @throws RangeError for anything else.
 */
export function parseSignal(signal: string | number): number {
  if (typeof signal === "number") {
    if (Number.isInteger(signal) && signal >= 0 && signal <= 64) return signal;
    throw new RangeError(`Cannot send signal ${signal}: signal numbers run from 0 to 64`);
  }
  if (/^\d+$/.test(signal)) return parseSignal(Number(signal));
  const upper = signal.toUpperCase();
  const name = (upper.startsWith("SIG") ? upper : `SIG${upper}`) as SignalName;
  const n = SIGNALS[name];
  if (n === undefined) throw new RangeError(`Cannot send signal ${signal}: unknown signal name`);
  return n;
}
