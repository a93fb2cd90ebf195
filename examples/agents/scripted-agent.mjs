#!/usr/bin/env node
// A scripted external agent for Berth, written with the plain npm `nats` client and no Berth
// code: everything it does is the protocol in docs/agents.md.
//
// It waits for the session's agent step (`agent.waiting` in the journal), runs the test in the
// session's sandbox, reads the file under test, makes one edit, runs the test again and reports
// the outcome with `agent_done`. Every tool call has a deterministic call_id, so a restarted
// agent gets the journaled results instead of running anything twice; a call the node reports
// `tool.interrupted` (the node died while it ran) is sent again under a new call_id.
//
//   node scripted-agent.mjs --server nats://127.0.0.1:4222 --session ID \
//        --test "sh test.sh" --file calc.sh --search "a - b" --replace "a + b"
//
// Options: --step STEP (default: the first agent step that waits), --prefix berth,
// --slow SECONDS (sleep before the first test run: lets a test kill the node mid-call),
// --timeout SECONDS (give up after this long; default 120).
import { connect, JSONCodec } from "nats";

function options(argv) {
  const o = { prefix: "berth", timeout: "120", slow: "0" };
  for (let i = 2; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith("--") || i + 1 >= argv.length) usage(`bad argument ${k}`);
    o[k.slice(2)] = argv[i + 1];
  }
  for (const k of ["server", "session", "test", "file", "search", "replace"])
    if (!o[k]) usage(`--${k} is required`);
  return o;
}

function usage(why) {
  console.error(`scripted-agent: ${why}`);
  console.error(
    "usage: scripted-agent.mjs --server URL --session ID --test CMD --file PATH " +
      "--search TEXT --replace TEXT [--step STEP] [--prefix berth] [--slow S] [--timeout S]",
  );
  process.exit(2);
}

const opt = options(process.argv);
const jc = JSONCodec();
const log = (...a) => console.log("agent:", ...a);

// Credentials in the URL (nats://TOKEN@host:port, as `berth node` writes to node.json, or
// nats://user:pass@host:port) become connect options: the client does not read them itself.
const url = new URL(opt.server);
const auth = {};
if (url.username && url.password) {
  auth.user = decodeURIComponent(url.username);
  auth.pass = decodeURIComponent(url.password);
} else if (url.username) {
  auth.token = decodeURIComponent(url.username);
}
const server = `${url.hostname}:${url.port || 4222}`;
const nc = await connect({ servers: server, name: "scripted-agent", ...auth });
const js = nc.jetstream();
const stream = opt.prefix.toUpperCase() + "_EV";
const journal = `${opt.prefix}.ev.${opt.session}`;
const inputs = `${opt.prefix}.in.${opt.session}`;

// The journal, read from its first event with an ordered consumer; `events` grows as it arrives.
const events = [];
let wake = () => {};
// One subject as a string: an array asks for `filter_subjects`, which nats-server 2.9 lacks.
const consumer = await js.consumers.get(stream, { filterSubjects: journal });
const feed = await consumer.consume();
(async () => {
  for await (const m of feed) {
    events.push(jc.decode(m.data));
    wake();
  }
})();

const deadline = Date.now() + Number(opt.timeout) * 1000;
// Wait until `pick` returns something for one of the events (old ones included).
async function waitFor(pick, what) {
  for (let seen = 0; ; ) {
    for (; seen < events.length; seen++) {
      const got = pick(events[seen]);
      if (got !== undefined) return got;
      const t = events[seen].type;
      if (["session.succeeded", "session.failed", "session.cancelled", "session.timed_out"].includes(t))
        throw new Error(`session ended (${t}) while waiting for ${what}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => {
      wake = r;
      setTimeout(r, 1000);
    });
  }
}

// The step to work on: the most recent agent.waiting that has not been answered yet.
const waiting = await waitFor((e) => {
  if (e.type !== "agent.waiting") return undefined;
  if (opt.step && e.data.step !== opt.step) return undefined;
  const later = events.slice(events.indexOf(e) + 1);
  const superseded = later.some(
    (x) =>
      x.data?.step === e.data.step &&
      ["step.finished", "step.failed", "step.rejected", "step.interrupted"].includes(x.type),
  );
  return superseded ? undefined : e.data;
}, "an agent step");
const { step, attempt } = waiting;
log(`working on step ${step} (attempt ${attempt}): ${waiting.goal ?? "no goal given"}`);

let calls = 0;
// One tool call: published on the session's input subject, answered in the journal.
async function tool(name, args) {
  const base = `${step}-a${attempt}-${++calls}`;
  for (let retry = 0; ; retry++) {
    const call_id = retry ? `${base}-r${retry}` : base;
    await js.publish(inputs, jc.encode({ type: "tool_call", call_id, tool: name, args }));
    const answer = await waitFor(
      (e) =>
        (e.type === "tool.result" || e.type === "tool.interrupted") && e.data.call_id === call_id
          ? e
          : undefined,
      `the result of ${call_id}`,
    );
    if (answer.type === "tool.result") {
      const r = answer.data.result;
      if (!r.ok) throw new Error(`${name} failed: ${r.error}`);
      return r;
    }
    log(`${call_id} was interrupted (${answer.data.reason}); sending it again`);
  }
}

async function done(outcome, summary) {
  await js.publish(inputs, jc.encode({ type: "agent_done", step, outcome, summary }));
  log(`${outcome}: ${summary}`);
}

try {
  const slow = Number(opt.slow) > 0 ? `sleep ${Number(opt.slow)}; ` : "";
  const first = await tool("exec", { argv: ["sh", "-c", slow + opt.test] });
  if (first.exit_code === 0) {
    await done("success", "the test already passes; nothing to change");
  } else {
    log(`the test fails: ${(first.stdout + first.stderr).trim().split("\n").pop()}`);
    const file = await tool("read_file", { path: opt.file });
    if (!file.content.includes(opt.search)) {
      await done("failure", `${opt.file} does not contain "${opt.search}"`);
    } else {
      await tool("edit", { path: opt.file, search: opt.search, replace: opt.replace });
      log(`edited ${opt.file}: "${opt.search}" -> "${opt.replace}"`);
      const again = await tool("exec", { argv: ["sh", "-c", opt.test] });
      if (again.exit_code === 0) await done("success", `fixed ${opt.file}; the test passes`);
      else await done("failure", `the test still fails: ${(again.stdout + again.stderr).trim()}`);
    }
  }
  // Wait for the node to record the step's end, so a caller sees a settled journal.
  await waitFor(
    (e) =>
      e.data?.step === step && ["step.finished", "step.failed", "step.rejected"].includes(e.type)
        ? e
        : undefined,
    "the step's end",
  );
} catch (err) {
  console.error(`scripted-agent: ${err.message}`);
  process.exitCode = 1;
} finally {
  await nc.drain();
  process.exit(process.exitCode ?? 0);
}
