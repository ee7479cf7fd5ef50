/**
 * One poll(2) for every fd the agent waits on, run on a single thread of Deno's blocking pool.
 *
 * Waiting fds (PTY masters, pipes of spawned processes, the virtio port, the network's datagram
 * socket) join one pollfd set; one end of a datagram socketpair in the set wakes the poll when the
 * set changes (a socketpair rather than a Linux eventfd: the host side runs on macOS too). So a
 * thousand idle processes cost one blocked thread, not one each (Deno's pool has 512 threads;
 * filling it would stall every file operation). The loop runs only while someone waits, so it
 * never keeps the event loop alive.
 *
 * Closing an fd that a poll might be watching is unsafe (the number can be reused at once), so
 * {@link Poller.release} resolves only when no poll in flight includes the fd.
 *
 * Waits may carry a deadline, and {@link Poller.sleep} is a wait on no fd: the poll's own timeout
 * is the timer. The agent uses these instead of `setTimeout`, whose first call makes Deno 2.9 load
 * and compile ~20 modules of its Node compatibility layer (measured 0.4-0.8 s under TCG emulation,
 * paid on the way to the first command).
 *
 * @module
 */

import * as libc from "./libc.ts";

const { HOST_ABI } = libc;

/** What a waiter resolves with when its deadline passed first (never a valid `revents`). */
const TIMED_OUT = -1;

interface Waiter {
  /** The fd, or -1 for a sleep (poll ignores negative fds). */
  fd: number;
  events: number;
  /** `performance.now()` after which the wait ends with {@link TIMED_OUT}, or null. */
  deadline: number | null;
  resolve: (revents: number) => void;
}

/** Options of {@link Poller.wait}. */
export interface PollWaitOptions {
  /** Ends the wait early; it then resolves with 0. */
  signal?: AbortSignal;
  /** Ends the wait after this many milliseconds; it then resolves with "timeout". */
  timeoutMs?: number;
}

/** A shared readiness waiter; use {@link poller} for the process-wide instance. */
export class Poller {
  #waiters = new Set<Waiter>();
  /** The socketpair: [0] is polled, [1] is written to wake the poll. */
  #wakeFds: [number, number] | null = null;
  #running = false;
  /** fds included in the poll currently in flight. */
  #inFlight = new Set<number>();
  #afterPoll: (() => void)[] = [];
  #wakePending = false;

  /**
   * Resolves with the `revents` of `fd` once any of `events` (or an error/hang-up) is ready, with 0
   * when `signal` aborts first, or with "timeout" when `timeoutMs` passes first.
   */
  async wait(
    fd: number,
    events: number,
    options: PollWaitOptions = {},
  ): Promise<number | "timeout"> {
    const r = await this.#add(fd, events, options);
    return r === TIMED_OUT ? "timeout" : r;
  }

  /**
   * Resolves with true after `ms` milliseconds, or with false as soon as `signal` aborts. Keeps
   * the event loop alive while it runs, like a timer.
   */
  async sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
    return await this.#add(-1, 0, { timeoutMs: ms, ...(signal ? { signal } : {}) }) === TIMED_OUT;
  }

  #add(fd: number, events: number, options: PollWaitOptions): Promise<number> {
    const { signal, timeoutMs } = options;
    return new Promise((resolve) => {
      const waiter: Waiter = {
        fd,
        events,
        deadline: timeoutMs === undefined ? null : performance.now() + Math.max(0, timeoutMs),
        resolve: (revents) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(revents);
        },
      };
      const onAbort = () => {
        if (this.#waiters.delete(waiter)) {
          waiter.resolve(0);
          this.#wake();
        }
      };
      if (signal?.aborted) {
        resolve(0);
        return;
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.add(waiter);
      this.#wake();
      if (!this.#running) void this.#loop();
    });
  }

  /**
   * Ends every wait on `fd` (they resolve with 0) and resolves once no poll in flight watches it;
   * then the fd may be closed.
   */
  release(fd: number): Promise<void> {
    let removed = false;
    for (const w of this.#waiters) {
      if (w.fd === fd && fd >= 0) {
        this.#waiters.delete(w);
        w.resolve(0);
        removed = true;
      }
    }
    if (!this.#inFlight.has(fd)) return Promise.resolve();
    if (removed) this.#wake();
    return new Promise((resolve) => this.#afterPoll.push(resolve));
  }

  #wake(): void {
    if (!this.#running || this.#wakeFds === null || this.#wakePending) return;
    this.#wakePending = true;
    libc.sendNonBlocking(this.#wakeFds[1], new Uint8Array(1));
  }

  async #loop(): Promise<void> {
    this.#running = true;
    const [wakeFd] = this.#wakeFds ??= libc.unixDatagramPair();
    const counter = new Uint8Array(8);
    try {
      while (this.#waiters.size > 0) {
        const waiters = [...this.#waiters];
        const fds = new Map<number, number>();
        let deadline = Infinity;
        for (const w of waiters) {
          if (w.fd >= 0) fds.set(w.fd, (fds.get(w.fd) ?? 0) | w.events);
          if (w.deadline !== null) deadline = Math.min(deadline, w.deadline);
        }
        const set = new Uint8Array(8 * (fds.size + 1));
        const view = new DataView(set.buffer);
        view.setInt32(0, wakeFd, true);
        view.setInt16(4, HOST_ABI.POLLIN, true);
        let i = 1;
        for (const [fd, events] of fds) {
          view.setInt32(8 * i, fd, true);
          view.setInt16(8 * i + 4, events, true);
          i++;
        }
        // Whole milliseconds, rounded up: a poll that returns early would only spin.
        const timeoutMs = deadline === Infinity
          ? -1
          : Math.max(0, Math.ceil(deadline - performance.now()));
        this.#inFlight = new Set(fds.keys());
        const n = await libc.pollSetAsync(set, fds.size + 1, timeoutMs);
        this.#inFlight = new Set();
        const done = this.#afterPoll;
        this.#afterPoll = [];
        for (const f of done) f();
        if (n > 0) {
          if (view.getUint16(6, true) !== 0) {
            this.#wakePending = false;
            while (libc.receiveNonBlocking(wakeFd, counter) !== null) { /* drain */ }
          }
          const ready = new Map<number, number>();
          for (let j = 1; j <= fds.size; j++) {
            const revents = view.getUint16(8 * j + 6, true);
            if (revents !== 0) ready.set(view.getInt32(8 * j, true), revents);
          }
          for (const w of waiters) {
            const revents = ready.get(w.fd);
            if (revents === undefined || !this.#waiters.has(w)) continue;
            const hit = revents &
              (w.events | HOST_ABI.POLLERR | HOST_ABI.POLLHUP | HOST_ABI.POLLNVAL);
            if (hit === 0) continue;
            this.#waiters.delete(w);
            w.resolve(hit);
          }
        }
        const now = performance.now();
        for (const w of waiters) {
          if (w.deadline === null || w.deadline > now || !this.#waiters.has(w)) continue;
          this.#waiters.delete(w);
          w.resolve(TIMED_OUT);
        }
      }
    } finally {
      this.#running = false;
      this.#wakePending = false;
      // Drain a wake-up that arrived after the last poll, so the next loop starts clean.
      while (libc.receiveNonBlocking(wakeFd, counter) !== null) { /* drain */ }
    }
  }
}

/** The process-wide poller. */
export const poller: Poller = new Poller();
