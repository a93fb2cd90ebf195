// graph: a 1,000-step graph's scheduling, parallel overlap, the tool-call round trip.
#include "harness.hpp"
#include "scenarios.hpp"

#include "berth/base/fs.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

namespace berth::bench {

int bench_graph(const options& g, int n) {
  if (n <= 0) n = 200;
  bench_env env;
  if (auto st = env.start({}); !st) return report(st.err());
  auto& c = *env.client;
  event_feed feed;
  if (auto st = feed.follow(c, env.names, 0); !st) return report(st.err());
  json::value extra = json::value::make_object();
  std::vector<json::value> rows;

  // 1. What `bench step` measures, in this run: one transition of a session.
  auto hold = env.start_session(spec_with(R"({"id":"hold","run":["sleep","3600"]})"));
  if (!hold) return report(hold.err());
  if (!feed.wait([&](auto& evs) { return count_type(evs, ev::step_started) >= 1; },
                 std::chrono::seconds(30)))
    return report(error{errc::timeout, "the bench session did not start"});
  row transition{"one transition (bench step)", "JetStream publish+ack (same size)", {}, {}};
  if (auto st = input_round_trips(env, feed, *hold, 300, transition, nullptr); !st)
    return report(st.err());
  rows.push_back(row_json(transition));
  auto transition_p50 = percentile(transition.berth_us, 0.5);

  // 2. A 1,000-step graph of no-op steps (`true`, each needing the one before). Its scheduling
  // overhead per step: the session's wall time less the time its commands ran, per step.
  const int steps = 1000;
  std::string chain;
  for (int i = 0; i < steps; ++i)
    chain +=
        (i ? "," : "") + std::string(R"({"id":"s)") + std::to_string(i) + R"(","run":["true"]})";
  auto graph = run_to_end(env, feed, spec_with(chain), std::chrono::seconds(900));
  if (!graph) return report(graph.err());
  double exec_us = 0;
  int finished = 0;
  for (const auto& [e, ns] : *graph)
    if (e.get_string("type") == ev::step_finished) {
      exec_us += static_cast<double>(e.find("data")->get_int("duration_us"));
      ++finished;
    }
  auto graph_wall = wall_us(*graph);
  double per_step = (graph_wall - exec_us) / steps;
  row sched{"1,000-step graph: scheduling/step",
            "one transition p50 (bench step)",
            {per_step},
            {transition_p50}};
  rows.push_back(row_json(sched));
  extra.set("graph_steps", finished);
  extra.set("graph_wall_ms", graph_wall / 1000.0);
  extra.set("graph_exec_ms", exec_us / 1000.0);
  extra.set("graph_steps_per_s", steps / (graph_wall / 1e6));

  // 3. Four independent `sleep 1` steps, max_parallel = 4, against one `sleep 1` step.
  auto four = spec_with(R"({"id":"p1","run":["sleep","1"],"needs":[]},
    {"id":"p2","run":["sleep","1"],"needs":[]},{"id":"p3","run":["sleep","1"],"needs":[]},
    {"id":"p4","run":["sleep","1"],"needs":[]})");
  four.set("max_parallel", 4);
  auto one = spec_with(R"({"id":"p1","run":["sleep","1"]})");
  row parallel{"4 x sleep 1, max_parallel 4", "1 x sleep 1 (one step)", {}, {}};
  for (int round = 0; round < 5; ++round) {
    auto a = run_to_end(env, feed, four, std::chrono::seconds(60));
    if (!a) return report(a.err());
    auto b = run_to_end(env, feed, one, std::chrono::seconds(60));
    if (!b) return report(b.err());
    parallel.berth_us.push_back(wall_us(*a));
    parallel.peer_us.push_back(wall_us(*b));
  }
  rows.push_back(row_json(parallel));

  // 4. Tool-call round trip: an agent publishes a call, the node runs `true` in the session's
  // sandbox and journals tool.result, the agent receives it. Peer: a raw NATS request-reply
  // plus a warm sandbox exec of `true`, measured here in the same rounds.
  auto agent_spec =
      spec_with(R"({"id":"agent","kind":"agent","agent":{"mode":"external","turn_timeout":"1h"}})");
  auto agent = env.start_session(agent_spec);
  if (!agent) return report(agent.err());
  if (!feed.wait([&](auto& evs) { return count_type(evs, ev::agent_waiting) >= 1; },
                 std::chrono::seconds(30)))
    return report(error{errc::timeout, "the agent step did not start"});
  auto echo = c.subscribe("bench.echo", "", [&c](bus::message m) {
    // A lost echo shows as the peer round trip timing out, which fails the bench.
    if (!m.reply.empty()) (void)c.publish_core(m.reply, m.data);
  });
  if (!echo) return report(echo.err());
  own_sandbox own;
  if (auto st = own.init(); !st) return report(st.err());
  own.o.name = "warm";
  auto box = sandbox::sandbox::start(own.o);
  if (!box) return report(box.err());
  row tool{"tool call exec `true` round trip", "NATS req-reply + warm exec `true`", {}, {}};
  std::size_t seen = 0;
  for (int i = -20; i < n; ++i) {
    auto call_id = "b" + std::to_string(i + 20);
    json::value call = json::value::make_object();
    call.set("type", "tool_call");
    call.set("call_id", call_id);
    call.set("tool", "exec");
    json::value args = json::value::make_object();
    json::value argv = json::value::make_array();
    argv.push("true");
    args.set("argv", std::move(argv));
    call.set("args", std::move(args));
    auto t0 = clock::now();
    auto ack = c.publish(env.names.input(*agent), call.dump());
    if (!ack) return report(ack.err());
    bool got = feed.wait_next(
        seen,
        [&](const json::value& e) {
          return e.get_string("type") == ev::tool_result &&
                 e.find("data")->get_string("call_id") == call_id;
        },
        std::chrono::seconds(30));
    if (!got) return report(error{errc::timeout, "no tool.result for " + call_id});
    auto berth = us_since(t0);
    t0 = clock::now();
    auto rr = c.request("bench.echo", call.dump(), millis(5000));
    if (!rr) return report(rr.err());
    auto rr_us = us_since(t0);
    auto exec = exec_true_us(**box);
    if (!exec) return report(exec.err());
    if (i < 0) continue;
    tool.berth_us.push_back(berth);
    tool.peer_us.push_back(rr_us + *exec);
  }
  (*box)->stop();
  rows.push_back(row_json(tool));
  extra.set("note",
            "scheduling/step = (graph wall time - time its commands ran) / 1000 steps, against "
            "the p50 of one session transition measured in this run as `bench step` does; "
            "goals: scheduling <= 2x, 4 parallel sleeps <= 1.15x one, tool call <= 3x");
  return emit(g, "graph", rows, std::move(extra));
}

}  // namespace berth::bench
