import { assert, assertEquals, assertThrows } from "../tests/_assert.ts";
import {
  classify,
  encodeCommand,
  QmpDecoder,
  QmpError,
  type QmpOutcome,
  QmpSession,
} from "./qmp_protocol.ts";

const enc = new TextEncoder();

interface Transcript {
  client: string[];
  server: string[];
}

async function transcript(name: string): Promise<Transcript> {
  const text = await Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
  const t: Transcript = { client: [], server: [] };
  for (const line of text.split("\n")) {
    if (line.startsWith("C ")) t.client.push(line.slice(2));
    else if (line.startsWith("S ")) t.server.push(line.slice(2));
  }
  return t;
}

/** Splits `bytes` into chunks of the given sizes, cycling. */
function chunks(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  for (let k = 0; i < bytes.length; k++) {
    const n = sizes[k % sizes.length]!;
    out.push(bytes.subarray(i, i + n));
    i += n;
  }
  return out;
}

type Summary = string;
function summarize(o: QmpOutcome<string>): Summary {
  switch (o.kind) {
    case "greeting":
      return `greeting ${o.version.major}.${o.version.minor}.${o.version.micro}`;
    case "reply":
      return `reply ${o.token} ${o.command} ${JSON.stringify(o.value)}`;
    case "failed":
      return `failed ${o.token} ${o.error.command} ${o.error.errorClass}: ${o.error.desc}`;
    case "event":
      return `event ${o.event.event} ${o.event.timestamp}`;
  }
}

const EXPECTED = [
  "greeting 7.2.22",
  "reply t1 qmp_capabilities {}",
  'reply t2 query-status {"status":"prelaunch","singlestep":false,"running":false}',
  "event RESUME 1796568042756018",
  "reply t3 cont {}",
  "event STOP 1796568043063000",
  "reply t4 stop {}",
  "failed t5 no-such-command CommandNotFound: The command no-such-command has not been found",
  "reply t6 migrate-set-capabilities {}",
  "failed t7 query-vm-generation-id GenericError: VM Generation ID device not found",
  "event SHUTDOWN 1796568044295738",
  "reply t8 quit {}",
];

Deno.test("QmpSession - the recorded QEMU 7.2 session: commands encode as sent, replies match", async () => {
  const t = await transcript("qmp_session.txt");
  const argsOf = (line: string) => JSON.parse(line).arguments;
  for (const sizes of [[1 << 20], [1], [3, 7, 64], [150]]) {
    const session = new QmpSession<string>();
    t.client.forEach((line, i) => {
      const c = JSON.parse(line);
      const bytes = session.command(c.execute, argsOf(line), `t${i + 1}`);
      assertEquals(new TextDecoder().decode(bytes), line + "\r\n");
    });
    const wire = enc.encode(t.server.map((l) => l + "\r\n").join(""));
    const got: string[] = [];
    for (const piece of chunks(wire, sizes)) {
      for (const o of session.receive(piece)) got.push(summarize(o));
    }
    assertEquals(got, EXPECTED, `chunk sizes ${sizes}`);
    assertEquals(session.inFlight, 0);
  }
});

Deno.test("QmpSession - a failed command is a QmpError with QEMU's class and desc", () => {
  const session = new QmpSession<number>();
  session.receive(
    enc.encode(
      '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}',
    ),
  );
  session.command("stop", undefined, 1);
  const [o] = session.receive(
    enc.encode('{"id": "shuru-1", "error": {"class": "GenericError", "desc": "no way"}}\r\n'),
  );
  assert(o?.kind === "failed");
  assert(o.error instanceof QmpError);
  assertEquals(o.error.code, "command_failed");
  assertEquals(o.error.errorClass, "GenericError");
  assertEquals(o.error.desc, "no way");
  assertEquals(o.error.message, "Cannot run QEMU command stop: no way (GenericError)");
});

Deno.test("QmpSession - replies before the greeting, unknown ids and second greetings are protocol errors", () => {
  const greeting =
    '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}';
  const fresh = () => new QmpSession<number>();
  for (
    const [setup, bytes, reason] of [
      [[], '{"return": {}, "id": "shuru-1"}', "before the greeting"],
      [
        [],
        '{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}',
        "before the greeting",
      ],
      [[greeting], '{"return": {}, "id": "shuru-9"}', "unknown id"],
      [[greeting], '{"return": {}}', "unknown id"],
      [[greeting], '{"error": {"class": "GenericError", "desc": "x"}}', "unknown id"],
      [[greeting], greeting, "second greeting"],
    ] as [string[], string, string][]
  ) {
    const s = fresh();
    for (const line of setup) s.receive(enc.encode(line));
    const err = assertThrows(() => s.receive(enc.encode(bytes)), reason);
    assert(err instanceof QmpError && err.code === "protocol", String(err));
  }
});

Deno.test("QmpDecoder - braces and quotes inside strings do not end a message", () => {
  const d = new QmpDecoder();
  const tricky = '{"return": {"a": "}{\\"]", "b": ["x}", {"c": "\\\\"}]}, "id": 1}\r\n';
  const out = [];
  for (const b of enc.encode(tricky)) out.push(...d.push(new Uint8Array([b])));
  assertEquals(out, [{ kind: "return", id: 1, value: { a: '}{"]', b: ["x}", { c: "\\" }] } }]);
  assert(!d.pending);
});

Deno.test("QmpDecoder - garbage, bad JSON, non-objects and oversized messages are rejected", () => {
  for (
    const [bytes, reason] of [
      ["hello\r\n", "unexpected byte"],
      ['["not", "an object"]', "unexpected byte"],
      ['{"return": tru}', "not valid UTF-8 JSON"],
      ['{"unknown": 1}', "unknown message"],
      ['{"error": {"class": 1}}', "lacks class or desc"],
      ['{"QMP": {"version": {}}}', "lacks version or capabilities"],
      ['{"return": 1, "id": [1]}', "neither a string nor a number"],
    ] as [string, string][]
  ) {
    const err = assertThrows(() => new QmpDecoder().push(enc.encode(bytes)), reason);
    assert(err instanceof QmpError && err.code === "protocol");
  }
  const small = new QmpDecoder(64);
  const err = assertThrows(
    () => small.push(enc.encode(`{"return": "${"x".repeat(100)}`)),
    "longer than 64 bytes",
  );
  assert(err instanceof QmpError && err.code === "protocol");
});

Deno.test("classify - events carry their data and a microsecond timestamp", () => {
  assertEquals(
    classify({
      event: "MIGRATION",
      data: { status: "completed" },
      timestamp: { seconds: 10, microseconds: 5 },
    }),
    { kind: "event", event: "MIGRATION", data: { status: "completed" }, timestamp: 10_000_005 },
  );
});

Deno.test("encodeCommand - arguments are included, names are checked by the session", () => {
  assertEquals(
    new TextDecoder().decode(encodeCommand("migrate", { uri: "unix:/x" }, "shuru-3")),
    '{"execute":"migrate","arguments":{"uri":"unix:/x"},"id":"shuru-3"}\r\n',
  );
  assertThrows(() => new QmpSession<number>().command('stop", "x', undefined, 1), "not a command");
});
