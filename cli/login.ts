/**
 * `shuru login REGISTRY`: check credentials against a registry and store them the way
 * `docker login` does (a credential helper when docker's config names one, else
 * `~/.docker/config.json`), so shuru and docker share them.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { RegistryClient, RegistryError, storeCredentials } from "../oci/mod.ts";
import { UserError } from "./errors.ts";

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** `https://ghcr.io/` → `ghcr.io`; `localhost:5000` stays. */
function registryName(text: string): string {
  const name = text.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
  if (!/^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$/.test(name)) {
    throw new UserError(`Cannot log in to "${text}": give a registry host, e.g. ghcr.io`);
  }
  return name === "index.docker.io" || name === "registry-1.docker.io" ? "docker.io" : name;
}

/** Reads a line from the terminal without echoing it. */
async function readSecret(prompt: string): Promise<string> {
  Deno.stderr.writeSync(new TextEncoder().encode(prompt));
  Deno.stdin.setRaw(true);
  const bytes: number[] = [];
  try {
    const buf = new Uint8Array(1);
    while (true) {
      const n = await Deno.stdin.read(buf);
      if (n === null || buf[0] === 13 || buf[0] === 10) break;
      if (buf[0] === 3) throw new UserError("interrupted", { exitCode: 130 });
      if (buf[0] === 127 || buf[0] === 8) bytes.pop();
      else bytes.push(buf[0]!);
    }
  } finally {
    Deno.stdin.setRaw(false);
    Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** Builds `shuru login`. */
export function loginCommand(): Command {
  return new Command("login")
    .description(
      "Check a user name and password (or token) against a registry and store them the way\n" +
        "`docker login` does: with the credential helper docker's config names (credsStore,\n" +
        "credHelpers), else base64 in ~/.docker/config.json ($DOCKER_CONFIG). shuru reads the\n" +
        "same places when it pushes and pulls, so a `docker login` works too.\n" +
        "Example: echo $TOKEN | shuru login ghcr.io -u me --password-stdin",
    )
    .argument("<registry>", "registry host (ghcr.io, localhost:5000, docker.io)")
    .option("-u, --username <user>", "user name (asked on a terminal when omitted)")
    .option("--password-stdin", "read the password or token from standard input")
    .option(
      "--insecure-registry <HOST>",
      "allow plain HTTP to this registry host (loopback registries always may)",
      collect,
    )
    .action(async (registryText, opts) => {
      const registry = registryName(registryText);
      const tty = Deno.stdin.isTerminal();
      let username = opts.username;
      if (username === undefined) {
        if (!tty) throw new UserError("Cannot log in: give -u USER (stdin is not a terminal)");
        username = prompt("Username:") ?? "";
      }
      let password: string;
      if (opts.passwordStdin) {
        password = (await new Response(Deno.stdin.readable).text()).replace(/\r?\n$/, "");
      } else if (tty) {
        password = await readSecret("Password: ");
      } else {
        throw new UserError("Cannot log in: give --password-stdin (stdin is not a terminal)");
      }
      if (!username || !password) throw new UserError("Cannot log in: empty user name or password");
      const client = new RegistryClient(registry, {
        credentials: { kind: "basic", username, password },
        insecureRegistries: opts.insecureRegistry ?? [],
      });
      let scheme: string;
      try {
        scheme = await client.transport.verifyCredentials();
        const where = await storeCredentials(registry, { username, password });
        console.log(
          `Login succeeded: credentials for ${registry} stored ` +
            (where.kind === "helper"
              ? `with docker-credential-${where.helper}`
              : `in ${where.path}`) +
            (scheme === "none" ? " (the registry asked for none)" : ""),
        );
      } catch (err) {
        if (err instanceof RegistryError) {
          throw new UserError(err.message, { exitCode: 1, cause: err });
        }
        throw err;
      }
    }) as unknown as Command;
}
