/**
 * Loaded before every test module by `run-tests` and the `test` task
 * (`deno test --preload tests/_preload.ts`): gives every test a deadline (`_deadline.ts`).
 *
 * @module
 */

import { installTestDeadline } from "./_deadline.ts";

installTestDeadline();
