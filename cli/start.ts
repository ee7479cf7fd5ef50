/**
 * `shuru start`: boot a named sandbox in the background. A detached supervisor owns it; this
 * command returns once its agent answers and prints its name.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { ensureAssets } from "../assets/mod.ts";
import { parseDuration } from "../spec/mod.ts";
import {
  checkSandboxName,
  decodeSpec,
  detachFromTerminal,
  generateSandboxName,
  launchSupervisor,
  listLive,
  readHandedSecrets,
  supervise,
  withSecretsFrom,
} from "../supervisor/mod.ts";
import { UserError } from "./errors.ts";
import { homeLayout, hostArch } from "../host/mod.ts";
import { prepareImage, specArch } from "../runner/mod.ts";
import {
  imageProgressPrinter,
  progressPrinter,
  resolveRunSettings,
  type RunFlags,
  withRunFlags,
} from "./run.ts";
import { shuruSelfCommand } from "./sandboxes.ts";

function duration(flag: string) {
  return (value: string): number => {
    try {
      return parseDuration(value);
    } catch (err) {
      throw new UserError(`${flag}: ${(err as Error).message}`);
    }
  };
}

/** Builds `shuru start`. */
export function startCommand(): Command {
  const cmd = withRunFlags(
    new Command("start").description(
      "Boot a sandbox in the background and print its name once its agent is ready.\n" +
        "It keeps running after this terminal closes, until `shuru stop NAME`, an idle or\n" +
        "total timeout, or its supervisor is killed (which takes the VM down with it).\n" +
        "Drive it with `shuru exec NAME -- cmd`, `shuru shell NAME`, `shuru cp`, the SDK or\n" +
        "its control socket; list sandboxes with `shuru ps`.\n" +
        "Example: shuru start --name dev --cpus 2 -p 8080:80 --idle-timeout 30m",
    ),
  )
    .option("--name <name>", "sandbox name (default: generated, e.g. brave-otter)")
    .option(
      "--idle-timeout <duration>",
      "stop after this long without any client connected (30s, 10m, 2h)",
      duration("--idle-timeout"),
    )
    .option(
      "--timeout <duration>",
      "stop after this long in total (30s, 10m, 2h)",
      duration("--timeout"),
    )
    .option("--json", "print the sandbox record as JSON instead of its name")
    .action(async (flags) => {
      const opts = flags as typeof flags & RunFlags;
      const spec = await resolveRunSettings([], opts, {
        ...(flags.idleTimeout !== undefined ? { idleTimeoutMs: flags.idleTimeout } : {}),
        ...(flags.timeout !== undefined ? { timeoutMs: flags.timeout } : {}),
      });
      const registry = homeLayout().sandboxes;
      const live = new Set((await listLive(registry)).map((r) => r.name));
      let name = flags.name;
      if (name !== undefined) {
        const bad = checkSandboxName(name);
        if (bad) throw new UserError(bad);
        if (live.has(name)) {
          throw new UserError(
            `Cannot start sandbox ${name}: a sandbox of that name is running ` +
              `(stop it with \`shuru stop ${name}\` or pick another --name)`,
          );
        }
      } else {
        name = generateSandboxName(live);
      }
      // The architecture: a checkpoint's (a different --arch is refused here, in one line).
      const arch = await specArch(homeLayout(), spec);
      // Build missing guest assets (and convert the image) here, with progress on this
      // terminal, not in the log.
      await ensureAssets({
        assetsDir: homeLayout().assets,
        arch,
        ...(opts.installDeps !== undefined ? { installDeps: opts.installDeps } : {}),
        onProgress: progressPrinter(),
      });
      if (spec.image !== undefined) {
        await prepareImage(homeLayout(), { ...spec, arch }, {
          onProgress: imageProgressPrinter(),
        });
      }
      const record = await launchSupervisor({
        ...spec,
        name,
        home: homeLayout(),
        ...(opts.verbose ? { verbose: true } : {}),
      }, {
        shuru: shuruSelfCommand(),
        // An emulated guest of another architecture starts several times slower.
        ...(arch !== hostArch() ? { timeoutMs: 900_000 } : {}),
      });
      console.log(flags.json ? JSON.stringify(record) : record.name);
    });
  return cmd as unknown as Command;
}

/** Builds the hidden `_supervise` command the detached supervisor runs as. */
export function superviseCommand(): Command {
  return new Command("_supervise")
    .description("(internal) run a sandbox's supervisor; started by `shuru start`")
    .argument("<spec>", "encoded supervisor spec")
    .action(async (spec) => {
      detachFromTerminal();
      // `shuru start` hands the values over stdin (never the environment or the command line).
      const secrets = await readHandedSecrets();
      Deno.exitCode = await supervise(withSecretsFrom(decodeSpec(spec), secrets));
    }) as unknown as Command;
}
