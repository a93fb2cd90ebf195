#include "berth/core/machine.hpp"

#include "machine_events.hpp"

#include <gtest/gtest.h>

using namespace berth;
using namespace berth::core;

namespace {

event accepted_spec(const std::string& id, const std::string& spec_json, std::int64_t ts = 1000) {
  auto spec = json::parse(spec_json);
  EXPECT_TRUE(spec.ok()) << spec_json;
  return test::accepted_event(id, spec ? *spec : json::value::make_object(), ts);
}

event accepted(const std::string& id, const std::string& steps_json, std::int64_t ts = 1000) {
  return accepted_spec(id, R"({"steps":)" + steps_json + "}", ts);
}

std::vector<std::string> types(const std::vector<event>& evs) {
  std::vector<std::string> out;
  for (const auto& e : evs) out.push_back(e.type);
  return out;
}

action first(const std::vector<action>& v) {
  return v.empty() ? action{} : v.front();
}

exit_result code(int c) {
  exit_result r;
  r.exit_code = c;
  return r;
}

}  // namespace

TEST(machine, runs_steps_in_order_to_success) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]},{"id":"b","run":["y"]}])")).ok());
  auto a = first(m.advance(2000));
  EXPECT_EQ(a.what, action::kind::launch);
  EXPECT_EQ(a.step, "a");
  EXPECT_EQ(a.attempt, 1);
  m.step_exited("a", 1, code(0), 2100);
  a = first(m.advance(2100));
  EXPECT_EQ(a.step, "b");
  m.step_exited("b", 1, code(0), 2200);
  a = first(m.advance(2200));
  EXPECT_EQ(a.what, action::kind::idle);
  EXPECT_EQ(m.state().status, "succeeded");
  EXPECT_EQ(types(m.take_emitted()),
            (std::vector<std::string>{"session.started", "step.started", "step.finished",
                                      "step.started", "step.finished", "session.succeeded"}));
}

TEST(machine, event_numbers_are_contiguous_and_gaps_are_refused) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])")).ok());
  (void)m.advance(2000);
  auto evs = m.take_emitted();
  for (std::size_t i = 0; i < evs.size(); ++i)
    EXPECT_EQ(evs[i].n, static_cast<std::int64_t>(i) + 2);
  event gap;
  gap.n = m.state().n + 2;
  gap.type = "step.finished";
  EXPECT_FALSE(m.apply(gap).ok());
}

TEST(machine, a_step_event_without_a_step_or_with_an_unknown_one_is_corrupt_not_a_crash) {
  // A journal damaged by hand or by a foreign writer: step.* events must name a known step.
  for (const char* data : {R"({})", R"({"step":""})", R"({"step":"ghost"})"}) {
    for (const char* type : {"step.started", "step.finished", "step.failed", "step.retrying",
                             "step.interrupted", "step.skipped", "step.rejected"}) {
      machine m("s1");
      ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])")).ok());
      event e;
      e.session = "s1";
      e.n = m.state().n + 1;
      e.type = type;
      e.data = *json::parse(data);
      auto st = m.apply(e);
      ASSERT_FALSE(st.ok()) << type << " " << data;
      EXPECT_TRUE(st.err().is(errc::corrupt)) << st.err().message;
      EXPECT_NE(st.err().message.find(type), std::string::npos) << st.err().message;
    }
  }
}

TEST(machine, retries_with_exponential_backoff_then_fails) {
  machine m("s1");
  ASSERT_TRUE(
      m
          .apply(accepted(
              "s1",
              R"([{"id":"a","run":["x"],"retry":{"max_attempts":3,"backoff":"1s","max_backoff":"1500ms"}}])"))
          .ok());
  auto a = first(m.advance(2000));
  m.step_exited("a", 1, code(1), 2000);
  a = first(m.advance(2000));
  EXPECT_EQ(a.what, action::kind::wait_until);
  EXPECT_EQ(a.until_ms, 3000);  // 1s
  a = first(m.advance(3000));
  EXPECT_EQ(a.attempt, 2);
  m.step_exited("a", 2, code(1), 3000);
  a = first(m.advance(3000));
  EXPECT_EQ(a.until_ms, 4500);  // 2s capped at 1.5s
  a = first(m.advance(4500));
  m.step_exited("a", 3, code(7), 4600);
  (void)m.advance(4600);
  EXPECT_EQ(m.state().status, "failed");
  EXPECT_NE(m.state().reason.find("step a failed after 3 attempts: exited with code 7"),
            std::string::npos)
      << m.state().reason;
}

TEST(machine, missing_binary_fails_the_step_with_the_reason) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["nope"]}])")).ok());
  (void)m.advance(2000);
  exit_result r;
  r.start_failed = true;
  r.error = "no such program in PATH: nope";
  m.step_exited("a", 1, r, 2000);
  (void)m.advance(2000);
  EXPECT_EQ(m.state().status, "failed");
  EXPECT_NE(m.state().reason.find("could not start: no such program in PATH: nope"),
            std::string::npos);
}

TEST(machine, interrupted_step_is_retried_as_a_new_attempt) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])")).ok());
  (void)m.advance(2000);
  (void)m.take_emitted();
  m.resume(3000, "node restarted");
  auto a = first(m.advance(3000));
  EXPECT_EQ(a.what, action::kind::launch);
  EXPECT_EQ(a.attempt, 2);
  EXPECT_EQ(types(m.take_emitted()),
            (std::vector<std::string>{"step.interrupted", "step.started"}));
  m.step_exited("a", 2, code(0), 3100);
  (void)m.advance(3100);
  EXPECT_EQ(m.state().status, "succeeded");
}

TEST(machine, cancel_kills_the_running_step_then_cancels) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]},{"id":"b","run":["y"]}])")).ok());
  (void)m.advance(2000);
  m.input(5, *json::parse(R"({"type":"cancel"})"), 2100);
  auto a = first(m.advance(2100));
  EXPECT_EQ(a.what, action::kind::kill);
  exit_result r;
  r.signal = 15;
  r.error = "cancelled";
  m.step_exited("a", 1, r, 2200);
  (void)m.advance(2200);
  EXPECT_EQ(m.state().status, "cancelled");
  EXPECT_EQ(m.state().steps[1].status, step_status::skipped);
  EXPECT_EQ(m.state().steps[1].reason, "session cancelled");
}

TEST(machine, session_timeout_stops_the_session) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])", 0)).ok());
  (void)m.advance(10);
  auto a = first(m.advance(60'000));
  EXPECT_EQ(a.what, action::kind::kill);
  EXPECT_EQ(a.cause, stop_cause::session_timeout);
  EXPECT_STREQ(to_string(a.cause), "session timeout");
  exit_result r;
  r.signal = 15;
  r.timed_out = true;
  r.error = "session timeout";
  m.step_exited("a", 1, r, 60'100);
  (void)m.advance(60'100);
  EXPECT_EQ(m.state().status, "timed_out");
}

TEST(machine, inputs_apply_once_and_unknown_ones_are_journaled_as_rejected) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])")).ok());
  m.input(7, *json::parse(R"({"type":"input","data":{"k":1}})"), 2000);
  m.input(7, *json::parse(R"({"type":"input","data":{"k":1}})"), 2000);  // repeat: ignored
  m.input(9, *json::parse(R"({"type":"surprise"})"), 2000);
  auto evs = m.take_emitted();
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[0].data.get_string("kind"), "input");
  EXPECT_EQ(evs[1].data.get_string("kind"), "rejected");
  EXPECT_EQ(m.state().last_input_seq, 9u);
}

TEST(machine, snapshot_round_trip_preserves_decisions) {
  machine m("s1");
  ASSERT_TRUE(
      m.apply(accepted(
                  "s1",
                  R"([{"id":"a","run":["x"],"retry":{"max_attempts":2}},{"id":"b","run":["y"]}])"))
          .ok());
  (void)m.advance(2000);
  m.step_exited("a", 1, code(1), 2000);
  auto restored = session_state::from_json(m.state().to_json());
  ASSERT_TRUE(restored.ok()) << restored.err().message;
  machine m2(*restored);
  EXPECT_EQ(m2.state().to_json(), m.state().to_json());
  auto a1 = first(m.advance(10'000));
  auto a2 = first(m2.advance(10'000));
  EXPECT_EQ(a1.step, a2.step);
  EXPECT_EQ(a1.attempt, a2.attempt);
}

TEST(machine, folding_emitted_events_rebuilds_the_same_state) {
  machine m("s1");
  auto acc = accepted("s1", R"([{"id":"a","run":["x"]},{"id":"b","run":["y"]}])");
  ASSERT_TRUE(m.apply(acc).ok());
  (void)m.advance(2000);
  m.step_exited("a", 1, code(0), 2100);
  (void)m.advance(2100);
  machine replay("s1");
  ASSERT_TRUE(replay.apply(acc).ok());
  for (const auto& e : m.take_emitted()) {
    auto back = event::from_envelope(*json::parse(e.envelope().dump()));
    ASSERT_TRUE(back.ok());
    ASSERT_TRUE(replay.apply(*back).ok());
  }
  EXPECT_EQ(replay.state().to_json(), m.state().to_json());
}

TEST(machine, a_tool_call_is_journaled_run_once_and_its_result_recorded) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])")).ok());
  (void)m.advance(2000);
  (void)m.take_emitted();
  auto call = *json::parse(R"({"type":"tool_call","call_id":"c1","tool":"read_file",
                              "args":{"path":"f"}})");
  m.input(2, call, 2100);
  EXPECT_EQ(types(m.take_emitted()), (std::vector<std::string>{"input.applied", "tool.call"}));
  EXPECT_EQ(m.state().tool_calls.at("c1"), "running");
  EXPECT_EQ(m.state().tool_args.at("c1").get_string("tool"), "read_file");
  // The same call_id again: applied as a duplicate, not run again.
  m.input(3, call, 2200);
  auto dup = m.take_emitted();
  ASSERT_EQ(types(dup), (std::vector<std::string>{"input.applied"}));
  EXPECT_TRUE(dup[0].data.get_bool("duplicate"));
  json::value ok = json::value::make_object();
  ok.set("ok", true);
  ok.set("content", "hi");
  m.tool_finished("c1", ok, 2300);
  m.tool_finished("c1", ok, 2400);  // a second result is ignored
  auto done = m.take_emitted();
  ASSERT_EQ(types(done), (std::vector<std::string>{"tool.result"}));
  EXPECT_EQ(done[0].data.get_string("tool"), "read_file");
  EXPECT_EQ(m.state().tool_calls.at("c1"), "done");
  // The snapshot keeps tool calls.
  auto back = session_state::from_json(m.state().to_json());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->tool_calls.at("c1"), "done");
}

TEST(machine, bad_tool_calls_are_rejected_naming_the_field) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])")).ok());
  (void)m.advance(2000);
  (void)m.take_emitted();
  std::uint64_t seq = 2;
  for (const auto& [body, needle] : std::vector<std::pair<std::string, std::string>>{
           {R"({"type":"tool_call","call_id":"a.b","tool":"exec"})", "call_id"},
           {R"({"type":"tool_call","call_id":"","tool":"exec"})", "call_id"},
           {R"({"type":"tool_call","call_id":"c","tool":"rm"})", "unknown tool \"rm\""},
           {R"({"type":"tool_call","call_id":"c","tool":"exec","args":[1]})", "args"}}) {
    m.input(seq++, *json::parse(body), 2100);
    auto evs = m.take_emitted();
    ASSERT_EQ(types(evs), (std::vector<std::string>{"input.applied"})) << body;
    EXPECT_EQ(evs[0].data.get_string("kind"), "rejected") << body;
    EXPECT_NE(evs[0].data.get_string("reason").find(needle), std::string::npos)
        << body << ": " << evs[0].data.get_string("reason");
  }
  EXPECT_TRUE(m.state().tool_calls.empty());
}

TEST(machine, a_tool_call_running_at_a_restart_is_interrupted_never_rerun) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])")).ok());
  (void)m.advance(2000);
  m.input(2, *json::parse(R"({"type":"tool_call","call_id":"c1","tool":"exec","args":{}})"), 2100);
  (void)m.take_emitted();
  machine again(m.state());
  again.resume(3000, "node restarted");
  auto evs = again.take_emitted();
  ASSERT_EQ(types(evs), (std::vector<std::string>{"tool.interrupted", "step.interrupted"}));
  EXPECT_EQ(evs[0].data.get_string("call_id"), "c1");
  EXPECT_EQ(again.state().tool_calls.at("c1"), "interrupted");
  EXPECT_TRUE(again.state().tool_args.empty());
}

// --- step graphs --------------------------------------------------------------------------------

namespace {

std::vector<std::string> launched(const std::vector<action>& v) {
  std::vector<std::string> out;
  for (const auto& a : v)
    if (a.what == action::kind::launch) out.push_back(a.step);
  return out;
}

std::vector<std::string> killed(const std::vector<action>& v) {
  std::vector<std::string> out;
  for (const auto& a : v)
    if (a.what == action::kind::kill) out.push_back(a.step);
  return out;
}

const step_state& step_of(const machine& m, const std::string& id) {
  for (const auto& s : m.state().steps)
    if (s.id == id) return s;
  throw std::runtime_error("no step " + id);
}

using names = std::vector<std::string>;

// Every emitted event folds into a fresh machine to the same state: what a resumed node sees.
void expect_replays(const event& acc, machine& m) {
  machine replay(m.state().id);
  ASSERT_TRUE(replay.apply(acc).ok());
  for (const auto& e : m.take_emitted()) ASSERT_TRUE(replay.apply(e).ok()) << e.type;
  EXPECT_EQ(replay.state().to_json(), m.state().to_json());
}

}  // namespace

TEST(graph, diamond_runs_both_branches_together_and_joins) {
  auto acc = accepted_spec("g", R"({"steps":[{"id":"a","run":["x"]},
    {"id":"b","run":["x"],"needs":["a"]},{"id":"c","run":["x"],"needs":["a"]},
    {"id":"d","run":["x"],"needs":["b","c"]}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  EXPECT_EQ(launched(m.advance(2000)), names{"a"});
  m.step_exited("a", 1, code(0), 2100);
  EXPECT_EQ(launched(m.advance(2100)), (names{"b", "c"}));
  m.step_exited("c", 1, code(0), 2200);
  EXPECT_EQ(launched(m.advance(2200)), names{});  // d still needs b
  m.step_exited("b", 1, code(0), 2300);
  EXPECT_EQ(launched(m.advance(2300)), names{"d"});
  m.step_exited("d", 1, code(0), 2400);
  (void)m.advance(2400);
  EXPECT_EQ(m.state().status, "succeeded");
  expect_replays(acc, m);
}

TEST(graph, fan_out_is_bounded_by_max_parallel_then_fans_in) {
  auto acc = accepted_spec("g", R"({"max_parallel":2,"steps":[
    {"id":"r1","run":["x"],"needs":[]},{"id":"r2","run":["x"],"needs":[]},
    {"id":"r3","run":["x"],"needs":[]},{"id":"r4","run":["x"],"needs":[]},
    {"id":"join","run":["x"],"needs":["r1","r2","r3","r4"]}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  EXPECT_EQ(launched(m.advance(2000)), (names{"r1", "r2"}));
  m.step_exited("r2", 1, code(0), 2100);
  EXPECT_EQ(launched(m.advance(2100)), names{"r3"});
  m.step_exited("r1", 1, code(0), 2200);
  EXPECT_EQ(launched(m.advance(2200)), names{"r4"});
  m.step_exited("r3", 1, code(0), 2300);
  EXPECT_EQ(launched(m.advance(2300)), names{});
  m.step_exited("r4", 1, code(0), 2400);
  EXPECT_EQ(launched(m.advance(2400)), names{"join"});
  m.step_exited("join", 1, code(0), 2500);
  (void)m.advance(2500);
  EXPECT_EQ(m.state().status, "succeeded");
}

TEST(graph, a_failure_skips_its_dependants_but_not_independent_branches) {
  auto acc = accepted_spec("g", R"({"steps":[{"id":"a","run":["x"],"needs":[]},
    {"id":"b","run":["x"],"needs":["a"]},{"id":"c","run":["x"],"needs":["b"]},
    {"id":"other","run":["x"],"needs":[]}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  EXPECT_EQ(launched(m.advance(2000)), (names{"a", "other"}));
  m.step_exited("a", 1, code(2), 2100);
  (void)m.advance(2100);
  EXPECT_EQ(step_of(m, "b").status, step_status::skipped);
  EXPECT_EQ(step_of(m, "b").reason, "needs a, which failed");
  EXPECT_EQ(step_of(m, "c").reason, "needs b, which was skipped");
  EXPECT_EQ(m.state().status, "running");  // "other" still runs
  m.step_exited("other", 1, code(0), 2200);
  (void)m.advance(2200);
  EXPECT_EQ(step_of(m, "other").status, step_status::succeeded);
  EXPECT_EQ(m.state().status, "failed");
  EXPECT_EQ(m.state().failed_step, "a");
  EXPECT_EQ(m.state().reason, "step a failed: exited with code 2");
  expect_replays(acc, m);
}

TEST(graph, failure_branch_handles_the_failure_and_the_session_succeeds) {
  auto acc = accepted_spec("g", R"({"steps":[{"id":"test","run":["x"]},
    {"id":"fix","run":["x"],"needs":["test"],"when":"failure"},
    {"id":"ship","run":["x"],"needs":["fix"]}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  (void)m.advance(2000);
  m.step_exited("test", 1, code(1), 2100);
  EXPECT_EQ(launched(m.advance(2100)), names{"fix"});
  m.step_exited("fix", 1, code(0), 2200);
  EXPECT_EQ(launched(m.advance(2200)), names{"ship"});
  m.step_exited("ship", 1, code(0), 2300);
  (void)m.advance(2300);
  EXPECT_EQ(m.state().status, "succeeded");
}

TEST(graph, a_branch_whose_condition_does_not_hold_is_bypassed_not_blocking) {
  // The test passes: nothing to fix or review, and ship (needs lint and review) still runs.
  auto acc = accepted_spec("g", R"({"steps":[{"id":"test","run":["x"]},
    {"id":"lint","run":["x"],"needs":[]},
    {"id":"fix","run":["x"],"needs":["test"],"when":"failure"},
    {"id":"review","run":["x"],"needs":["fix"]},
    {"id":"ship","run":["x"],"needs":["lint","review"]},
    {"id":"report","run":["x"],"needs":["review"],"when":"always"}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  EXPECT_EQ(launched(m.advance(2000)), (names{"test", "lint"}));
  m.step_exited("test", 1, code(0), 2100);
  m.step_exited("lint", 1, code(0), 2100);
  EXPECT_EQ(launched(m.advance(2100)), (names{"ship", "report"}));
  EXPECT_EQ(step_of(m, "fix").skip, "bypassed");
  EXPECT_EQ(step_of(m, "review").skip, "bypassed");
  m.step_exited("ship", 1, code(0), 2200);
  m.step_exited("report", 1, code(0), 2200);
  (void)m.advance(2200);
  EXPECT_EQ(m.state().status, "succeeded");
}

TEST(graph, continue_on_error_lets_dependants_run_and_the_session_succeed) {
  auto acc = accepted_spec("g", R"({"steps":[{"id":"flaky","run":["x"],"continue_on_error":true},
    {"id":"next","run":["x"]}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  (void)m.advance(2000);
  m.step_exited("flaky", 1, code(1), 2100);
  EXPECT_EQ(launched(m.advance(2100)), names{"next"});
  m.step_exited("next", 1, code(0), 2200);
  (void)m.advance(2200);
  EXPECT_EQ(step_of(m, "flaky").status, step_status::failed);
  EXPECT_EQ(m.state().status, "succeeded");
}

TEST(graph, back_edge_sends_work_back_until_max_loops_then_fails) {
  auto acc = accepted_spec("g", R"({"goal":"g1","steps":[
    {"id":"fix","kind":"agent","agent":{"mode":"external"}},
    {"id":"review","kind":"agent","agent":{"mode":"command","run":["bot"]},
     "on_reject":{"goto":"fix","max_loops":2}}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  std::uint64_t seq = 2;
  for (int loop = 0; loop <= 2; ++loop) {
    EXPECT_EQ(launched(m.advance(2000 + loop * 100)), names{});  // external: nothing to launch
    EXPECT_EQ(step_of(m, "fix").status, step_status::running);
    m.input(seq++, *json::parse(R"({"type":"agent_done","outcome":"success"})"), 2010 + loop * 100);
    auto l = launched(m.advance(2020 + loop * 100));
    ASSERT_EQ(l, names{"review"});
    const auto attempt = step_of(m, "review").attempt;
    m.step_exited("review", attempt, code(3), 2030 + loop * 100);  // 3: reject
  }
  (void)m.advance(3000);
  EXPECT_EQ(step_of(m, "review").loops, 2);
  EXPECT_EQ(step_of(m, "fix").attempt, 3);
  EXPECT_EQ(m.state().status, "failed");
  EXPECT_NE(m.state().reason.find("on_reject.max_loops = 2 reached"), std::string::npos)
      << m.state().reason;
  int rejected = 0;
  auto evs = m.take_emitted();
  for (const auto& e : evs) rejected += e.type == "step.rejected";
  EXPECT_EQ(rejected, 2);
  machine replay("g");
  ASSERT_TRUE(replay.apply(acc).ok());
  for (const auto& e : evs) ASSERT_TRUE(replay.apply(e).ok());
  EXPECT_EQ(replay.state().to_json(), m.state().to_json());
}

TEST(graph, cancel_mid_graph_kills_every_running_step_and_skips_the_rest) {
  auto acc = accepted_spec("g", R"({"steps":[{"id":"a","run":["x"],"needs":[]},
    {"id":"b","run":["x"],"needs":[]},{"id":"w","kind":"agent","agent":{"mode":"external"},
    "needs":[]},{"id":"c","run":["x"],"needs":["a","b"]}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  EXPECT_EQ(launched(m.advance(2000)), (names{"a", "b"}));
  m.input(5, *json::parse(R"({"type":"cancel"})"), 2100);
  EXPECT_EQ(killed(m.advance(2100)), (names{"a", "b"}));
  EXPECT_EQ(step_of(m, "w").status, step_status::failed);  // no process: failed at once
  exit_result r;
  r.signal = 15;
  r.error = "cancelled";
  m.step_exited("a", 1, r, 2200);
  EXPECT_EQ(killed(m.advance(2200)), names{"b"});
  m.step_exited("b", 1, r, 2300);
  (void)m.advance(2300);
  EXPECT_EQ(m.state().status, "cancelled");
  EXPECT_EQ(step_of(m, "c").status, step_status::skipped);
  EXPECT_EQ(step_of(m, "c").reason, "session cancelled");
}

TEST(graph, session_timeout_mid_graph_stops_running_steps_and_skips_the_rest) {
  auto acc = accepted_spec(
      "g", R"({"timeout":"10s","steps":[{"id":"a","run":["x"]},{"id":"b","run":["x"]}]})", 0);
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  (void)m.advance(10);
  auto acts = m.advance(10'000);
  ASSERT_EQ(killed(acts), names{"a"});
  EXPECT_EQ(acts[0].cause, stop_cause::session_timeout);
  EXPECT_STREQ(to_string(acts[0].cause), "session timeout");
  exit_result r;
  r.signal = 15;
  r.error = "session timeout";
  r.timed_out = true;
  m.step_exited("a", 1, r, 10'100);
  (void)m.advance(10'100);
  EXPECT_EQ(m.state().status, "timed_out");
  EXPECT_EQ(step_of(m, "b").reason, "session timed out");
}

TEST(graph, retry_backoff_with_jitter_stays_within_half_and_full_delay) {
  auto acc = accepted_spec("g", R"({"steps":[{"id":"a","run":["x"],
    "retry":{"max_attempts":4,"backoff":"2s","max_backoff":"5s","jitter":true}}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  std::int64_t now = 2000;
  std::vector<std::int64_t> full = {2000, 4000, 5000};
  for (int i = 0; i < 3; ++i) {
    auto l = launched(m.advance(now));
    ASSERT_EQ(l, names{"a"});
    m.step_exited("a", i + 1, code(1), now);
    auto evs = m.take_emitted();
    ASSERT_EQ(evs.back().type, "step.retrying");
    auto delay = evs.back().data.get_int("delay_ms");
    EXPECT_GE(delay, full[static_cast<std::size_t>(i)] / 2);
    EXPECT_LE(delay, full[static_cast<std::size_t>(i)]);
    EXPECT_EQ(first(m.advance(now)).until_ms, now + delay);
    now += delay;
  }
}

TEST(graph, an_interrupted_attempt_counts_against_max_attempts) {
  auto acc = accepted_spec("g", R"({"steps":[{"id":"a","run":["x"],
    "retry":{"max_attempts":2,"backoff":"1s"}}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  (void)m.advance(2000);
  m.resume(3000, "node restarted");  // attempt 1 interrupted
  EXPECT_EQ(launched(m.advance(3000)), names{"a"});
  m.step_exited("a", 2, code(1), 3100);  // attempt 2 fails: the budget of 2 is spent
  (void)m.advance(3100);
  EXPECT_EQ(m.state().status, "failed");
  EXPECT_EQ(step_of(m, "a").attempt, 2);
}

TEST(graph, external_agent_waits_for_agent_done_and_turn_timeout_fails_it) {
  auto acc = accepted_spec("g", R"({"goal":"fix it","steps":[{"id":"agent","kind":"agent",
    "agent":{"mode":"external","turn_timeout":"5s"},"retry":{"max_attempts":2,"backoff":"1s"}}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  (void)m.advance(2000);
  auto evs = m.take_emitted();
  ASSERT_EQ(evs.back().type, "agent.waiting");
  EXPECT_EQ(evs.back().data.get_string("goal"), "fix it");
  EXPECT_EQ(m.state().phase(), "waiting");
  // A tool call stops the turn clock while it runs; its result restarts it.
  m.input(2, *json::parse(R"({"type":"tool_call","call_id":"c1","tool":"list_dir"})"), 6000);
  EXPECT_EQ(m.state().phase(), "running");
  (void)m.advance(9000);
  EXPECT_EQ(step_of(m, "agent").status, step_status::running);
  json::value ok = json::value::make_object();
  ok.set("ok", true);
  m.tool_finished("c1", ok, 9000);
  EXPECT_EQ(first(m.advance(9000)).until_ms, 14'000);
  (void)m.advance(14'000);  // turn timeout: attempt 1 fails, retried
  EXPECT_EQ(step_of(m, "agent").failures, 1);
  EXPECT_NE(step_of(m, "agent").reason.find("agent turn timeout"), std::string::npos);
  (void)m.advance(15'000);
  EXPECT_EQ(step_of(m, "agent").attempt, 2);
  // Bad agent_done inputs are journaled as rejected, naming the field.
  (void)m.take_emitted();
  m.input(3, *json::parse(R"({"type":"agent_done","outcome":"maybe"})"), 15'100);
  m.input(4, *json::parse(R"({"type":"agent_done","outcome":"success","step":"nope"})"), 15'100);
  auto bad = m.take_emitted();
  ASSERT_EQ(bad.size(), 2u);
  EXPECT_EQ(bad[0].data.get_string("kind"), "rejected");
  EXPECT_EQ(bad[0].data.get_string("reason").rfind("outcome:", 0), 0u);
  EXPECT_EQ(bad[1].data.get_string("reason").rfind("step:", 0), 0u);
  m.input(5, *json::parse(R"({"type":"agent_done","outcome":"success","summary":"done"})"), 15'200);
  (void)m.advance(15'200);
  EXPECT_EQ(m.state().status, "succeeded");
}

TEST(graph, a_resumed_node_keeps_external_agents_waiting_and_interrupts_commands) {
  auto acc = accepted_spec("g", R"({"steps":[{"id":"cmd","run":["x"],"needs":[]},
    {"id":"ext","kind":"agent","agent":{"mode":"external"},"needs":[]}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  (void)m.advance(2000);
  (void)m.take_emitted();
  m.resume(3000, "node restarted");
  auto evs = m.take_emitted();
  ASSERT_EQ(types(evs), (names{"step.interrupted", "agent.waiting"}));
  EXPECT_TRUE(evs[1].data.get_bool("resumed"));
  EXPECT_EQ(launched(m.advance(3000)), names{"cmd"});
  EXPECT_EQ(step_of(m, "ext").attempt, 1);
}

TEST(graph, retry_from_a_step_reuses_what_it_needs) {
  auto acc = accepted_spec("g", R"({"retry_of":"old","start_at":"c","steps":[
    {"id":"a","run":["x"]},{"id":"b","run":["x"]},{"id":"c","run":["x"]},
    {"id":"side","run":["x"],"needs":[]}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  EXPECT_EQ(launched(m.advance(2000)), (names{"c", "side"}));
  EXPECT_EQ(step_of(m, "a").skip, "reused");
  EXPECT_EQ(step_of(m, "b").reason, "done in session old");
}

TEST(graph, an_external_agent_steps_own_timeout_fails_the_attempt_under_its_retry_policy) {
  auto acc = accepted_spec("g", R"({"steps":[{"id":"agent","kind":"agent","timeout":"3s",
    "agent":{"mode":"external","turn_timeout":"1h"},"retry":{"max_attempts":2,"backoff":"1s"}}]})");
  machine m("g");
  ASSERT_TRUE(m.apply(acc).ok());
  (void)m.advance(2000);
  EXPECT_EQ(first(m.advance(2500)).until_ms, 5000);  // the step's timeout comes before its turn
  (void)m.advance(5000);
  EXPECT_EQ(step_of(m, "agent").reason, "timed out after 3s");
  EXPECT_EQ(step_of(m, "agent").failures, 1);
  (void)m.advance(6000);  // retried after 1 s: a new attempt, a new agent.waiting
  EXPECT_EQ(step_of(m, "agent").attempt, 2);
  EXPECT_EQ(m.take_emitted().back().type, "agent.waiting");
  (void)m.advance(9000);
  (void)m.advance(9000);
  EXPECT_EQ(m.state().status, "failed");
  EXPECT_EQ(m.state().failed_step, "agent");
}
