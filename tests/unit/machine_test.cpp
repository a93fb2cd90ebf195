#include "berth/session/machine.hpp"

#include <gtest/gtest.h>

using namespace berth;
using namespace berth::session;

namespace {

event accepted(const std::string& id, const std::string& steps_json, std::int64_t ts = 1000) {
  auto spec = json::parse(R"({"steps":)" + steps_json + "}");
  EXPECT_TRUE(spec.ok());
  event e;
  e.session = id;
  e.n = 1;
  e.type = "session.accepted";
  e.ts_ms = ts;
  e.data = json::value::make_object();
  e.data.set("spec", *spec);
  e.data.set("accepted_seq", 1);
  e.data.set("timeout_ms", 60'000);
  return e;
}

std::vector<std::string> types(const std::vector<event>& evs) {
  std::vector<std::string> out;
  for (const auto& e : evs) out.push_back(e.type);
  return out;
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
  auto a = m.advance(2000);
  EXPECT_EQ(a.what, action::kind::launch);
  EXPECT_EQ(a.step, "a");
  EXPECT_EQ(a.attempt, 1);
  m.step_exited("a", 1, code(0), 2100);
  a = m.advance(2100);
  EXPECT_EQ(a.step, "b");
  m.step_exited("b", 1, code(0), 2200);
  a = m.advance(2200);
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

TEST(machine, retries_with_exponential_backoff_then_fails) {
  machine m("s1");
  ASSERT_TRUE(
      m
          .apply(accepted(
              "s1",
              R"([{"id":"a","run":["x"],"retry":{"max_attempts":3,"backoff":"1s","max_backoff":"1500ms"}}])"))
          .ok());
  auto a = m.advance(2000);
  m.step_exited("a", 1, code(1), 2000);
  a = m.advance(2000);
  EXPECT_EQ(a.what, action::kind::wait_until);
  EXPECT_EQ(a.until_ms, 3000);  // 1s
  a = m.advance(3000);
  EXPECT_EQ(a.attempt, 2);
  m.step_exited("a", 2, code(1), 3000);
  a = m.advance(3000);
  EXPECT_EQ(a.until_ms, 4500);  // 2s capped at 1.5s
  a = m.advance(4500);
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

TEST(machine, interrupted_step_is_retried_as_a_new_attempt_without_using_the_retry_budget) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])")).ok());
  (void)m.advance(2000);
  (void)m.take_emitted();
  m.resume(3000, "node restarted");
  auto a = m.advance(3000);
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
  auto a = m.advance(2100);
  EXPECT_EQ(a.what, action::kind::kill);
  exit_result r;
  r.signal = 15;
  r.error = "cancelled";
  m.step_exited("a", 1, r, 2200);
  (void)m.advance(2200);
  EXPECT_EQ(m.state().status, "cancelled");
  EXPECT_EQ(m.state().steps[1].status, step_status::pending);
}

TEST(machine, session_timeout_stops_the_session) {
  machine m("s1");
  ASSERT_TRUE(m.apply(accepted("s1", R"([{"id":"a","run":["x"]}])", 0)).ok());
  (void)m.advance(10);
  auto a = m.advance(60'000);
  EXPECT_EQ(a.what, action::kind::kill);
  EXPECT_EQ(a.kill_reason, "session timeout");
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
  auto a1 = m.advance(10'000);
  auto a2 = m2.advance(10'000);
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
