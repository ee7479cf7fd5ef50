/**
 * The secrets of one sandbox (`--secret`): a CA made for the run, a placeholder per secret,
 * the terminator the guest network dials through, and the guest's side of it: the
 * placeholders in every process's environment and the CA in its trust store.
 *
 * Nothing here touches the guest's disk: the CA goes to /run (a tmpfs) and is bind-mounted
 * over the system bundle, so a checkpoint saved during or after the run holds neither it nor
 * any value. The values stay in this process's memory.
 *
 * @module
 */

import {
  CertificateAuthority,
  type InjectPlace,
  makePlaceholder,
  type Secret,
  SecretTerminator,
} from "../proxy/secret/mod.ts";
import type { Sandbox } from "../sandbox/mod.ts";
import { RunnerError } from "./errors.ts";

/** A secret as the CLI resolved it (name, value, the hosts that may receive it). */
export interface SecretSetting {
  /** Environment variable name in the guest. */
  name: string;
  /** The real value. */
  value: string;
  /** Host patterns (`api.example.com`, `*.example.com`). */
  hosts: string[];
  /** Where a request may carry the value; absent: credential headers only. */
  inject?: InjectPlace[];
  /** Also over plain HTTP (absent: HTTP requests keep the placeholder). */
  allowHttp?: boolean;
}

/** Where the guest finds the run's CA (tmpfs). */
export const GUEST_CA_FILE = "/run/shuru/secret-ca.pem";
/** The system bundle plus the run's CA (tmpfs); bind-mounted over the system bundle. */
export const GUEST_BUNDLE_FILE = "/run/shuru/ca-bundle.crt";
/** Debian's system bundle (OpenSSL, curl, git, Python's default paths lead here). */
const SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

/**
 * Writes the CA (from stdin) next to a copy of the system bundle that includes it, and binds
 * that copy over the system bundle. A bind mount lives in the guest's memory, not on its disk.
 */
const INSTALL_SCRIPT = `set -e
mkdir -p /run/shuru
cat > ${GUEST_CA_FILE}
if [ -f ${SYSTEM_BUNDLE} ]; then
  cat ${SYSTEM_BUNDLE} ${GUEST_CA_FILE} > ${GUEST_BUNDLE_FILE}
  mount --bind ${GUEST_BUNDLE_FILE} ${SYSTEM_BUNDLE}
else
  cp ${GUEST_CA_FILE} ${GUEST_BUNDLE_FILE}
fi
`;

/** The secrets of a run, ready for the network and the guest. */
export class RunSecrets {
  /** What the guest network dials secret hosts through. */
  readonly terminator: SecretTerminator;
  /** Placeholders and the CA variables of curl, Python, Node and Deno. */
  readonly guestEnv: Record<string, string>;
  readonly #ca: CertificateAuthority;

  private constructor(ca: CertificateAuthority, secrets: Secret[], onError: (l: string) => void) {
    this.#ca = ca;
    this.terminator = new SecretTerminator({ secrets, ca, onError });
    this.guestEnv = {
      SSL_CERT_FILE: GUEST_BUNDLE_FILE,
      CURL_CA_BUNDLE: GUEST_BUNDLE_FILE,
      REQUESTS_CA_BUNDLE: GUEST_BUNDLE_FILE,
      NODE_EXTRA_CA_CERTS: GUEST_CA_FILE,
      DENO_CERT: GUEST_CA_FILE,
    };
    for (const s of secrets) this.guestEnv[s.name] = s.placeholder;
  }

  /** Makes the run's CA and a fresh placeholder per secret. */
  static async create(
    settings: readonly SecretSetting[],
    options: { onError: (line: string) => void },
  ): Promise<RunSecrets> {
    const ca = await CertificateAuthority.create();
    const secrets = settings.map((s) => ({ ...s, placeholder: makePlaceholder(s.value) }));
    return new RunSecrets(ca, secrets, options.onError);
  }

  /** Puts the CA in the guest's trust store (tmpfs only) and the placeholders in its env. */
  async installInGuest(sandbox: Sandbox): Promise<void> {
    const out = await sandbox.exec(["/bin/sh", "-c", INSTALL_SCRIPT], {
      stdin: this.#ca.certificatePem,
    });
    if (out.exitCode !== 0) {
      throw new RunnerError(
        "boot_failed",
        `Cannot give the guest the run's CA for --secret: ${
          new TextDecoder().decode(out.stderr).trim() || `exit code ${out.exitCode}`
        }`,
      );
    }
    sandbox.setBaseEnv(this.guestEnv);
  }
}
