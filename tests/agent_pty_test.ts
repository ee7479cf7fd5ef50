/**
 * End-to-end PTY sessions through the real guest agent: a process on a guest pseudo-terminal
 * (isatty, size, resize, echo of typed input), and `shuru exec --tty` driven inside tmux.
 */

import { assert, assertEquals } from "./assert.ts";
import { startAgent, text } from "./_agent_fixture.ts";
import type { SandboxProcess } from "../sandbox/mod.ts";

/** Accumulates a process's terminal output and waits for patterns in it. */
class Screen {
  out = "";
  #done: Promise<void>;
  constructor(proc: SandboxProcess) {
    this.#done = (async () => {
      for await (const c of proc.stdout) this.out += text(c);
    })();
    // A failed step leaves the reader to the sandbox's close; that must not be unhandled.
    this.#done.catch(() => {});
  }
  async waitFor(pattern: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const m = this.out.match(pattern);
      if (m) return m;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`Timed out waiting for ${pattern}; terminal output so far:\n${this.out}`);
  }
  done(): Promise<void> {
    return this.#done;
  }
}

Deno.test("agent PTY session", async (t) => {
  await using agent = await startAgent();
  await using sb = await agent.connect();

  await t.step("isatty, TERM, size, resize and typed input echoed", async () => {
    const proc = sb.spawn(["sh"], {
      stdin: "piped",
      tty: { rows: 24, cols: 80 },
      env: { PS1: "$ " },
    });
    const screen = new Screen(proc);
    const w = proc.stdin.getWriter();
    const type = (s: string) => w.write(new TextEncoder().encode(s));
    await type("test -t 0 && test -t 1 && echo TTY-$((6*7))\n");
    await screen.waitFor(/TTY-42/);
    // Typed input is echoed by the terminal (the command line itself appears in the output).
    assert(screen.out.includes("echo TTY-$((6*7))"), screen.out);
    await type("echo TERM=$TERM\n");
    await screen.waitFor(/TERM=xterm-256color/);
    await type("stty size\n");
    await screen.waitFor(/\r\n24 80\r\n/);
    await proc.resize(40, 120);
    await type("stty size\n");
    await screen.waitFor(/\r\n40 120\r\n/);
    await type("exit 5\n");
    assertEquals((await proc.wait()).exitCode, 5);
    await screen.done();
  });

  await t.step("the process sees SIGWINCH on resize", async () => {
    const proc = sb.spawn(
      ["sh", "-c", 'trap "echo WINCH; stty size" WINCH; echo ready; while :; do sleep 0.05; done'],
      { stdin: "piped", tty: { rows: 10, cols: 30 } },
    );
    const screen = new Screen(proc);
    await screen.waitFor(/ready/);
    await proc.resize(33, 77);
    await screen.waitFor(/WINCH\r\n33 77/);
    await proc.kill("SIGKILL");
    assertEquals((await proc.wait()).exitCode, 137);
    await screen.done();
  });

  await t.step("Ctrl-C on the terminal interrupts the foreground program", async () => {
    const proc = sb.spawn(["sh", "-c", "echo ready; sleep 300; echo after=$?"], {
      stdin: "piped",
      tty: { rows: 24, cols: 80 },
    });
    const screen = new Screen(proc);
    // The shell runs in the terminal's foreground group once it printed: ^C reaches it.
    await screen.waitFor(/ready/);
    const w = proc.stdin.getWriter();
    await w.write(new Uint8Array([3])); // ^C
    const status = await proc.wait();
    assert(status.exitCode === 130 || screen.out.includes("after=130"), JSON.stringify(status));
    await screen.done();
  });
});

Deno.test("shuru exec --tty in a terminal (tmux)", async () => {
  const tmux = await new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" })
    .output().catch(() => undefined);
  assert(tmux?.success, "tmux is missing: apt-get install tmux");
  await using agent = await startAgent();
  const main = new URL("../main.ts", import.meta.url).pathname;
  const socket = `${agent.dir}/tmux.sock`;
  const tmuxCmd = (...args: string[]) =>
    new Deno.Command("tmux", { args: ["-S", socket, ...args], stdout: "piped", stderr: "piped" })
      .output();
  const codeFile = `${agent.dir}/code`;
  const cmd = `${Deno.execPath()} run -A --quiet ${main} exec --connect unix:${agent.socket} ` +
    `--tty -- sh; echo $? > ${codeFile}`;
  const started = await tmuxCmd("new-session", "-d", "-x", "100", "-y", "30", "sh", "-c", cmd);
  assert(started.success, text(started.stderr));
  try {
    const capture = async () => text((await tmuxCmd("capture-pane", "-p", "-J")).stdout);
    const waitFor = async (re: RegExp, ms = 60_000) => {
      const deadline = Date.now() + ms;
      let screen = "";
      while (Date.now() < deadline) {
        screen = await capture();
        if (re.test(screen)) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`Timed out waiting for ${re}; screen:\n${screen}`);
    };
    const send = (keys: string) => tmuxCmd("send-keys", "-l", keys);
    const enter = () => tmuxCmd("send-keys", "Enter");
    await waitFor(/[#$] $/m);
    await send("stty size");
    await enter();
    await waitFor(/^30 100$/m);
    await tmuxCmd("resize-window", "-x", "120", "-y", "40");
    // The new size travels tmux -> shuru exec -> agent -> PTY: ask until the shell has it.
    for (let tries = 0;; tries++) {
      await send("clear; stty size");
      await enter();
      try {
        await waitFor(/^40 120$/m, 3_000);
        break;
      } catch (err) {
        if (tries === 20) throw err;
      }
    }
    await send("exit 3");
    await enter();
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const code = await Deno.readTextFile(codeFile).catch(() => "");
      if (code.trim() !== "") {
        assertEquals(code.trim(), "3");
        return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("shuru exec --tty did not exit with the shell's code");
  } finally {
    await tmuxCmd("kill-server");
  }
});
