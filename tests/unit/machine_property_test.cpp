// Property test of the deterministic session machine: random valid graphs, retry policies,
// timeouts and outcomes (exit codes, start failures, step timeouts, cancels, node restarts,
// external agents that answer, reject or fall silent), driven by a simulated clock. Every
// session must reach a terminal state with a reason a user can read, never "internal error",
// and folding the journal it wrote must rebuild the same state.

#include "machine_events.hpp"

#include "berth/core/machine.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace berth;
using namespace berth::core;

namespace {

struct rng {
  std::mt19937_64 g;
  explicit rng(std::uint64_t seed) : g(seed) {}
  std::int64_t in(std::int64_t lo, std::int64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(g);
  }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(g) < p; }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<std::size_t>(in(0, static_cast<std::int64_t>(v.size()) - 1))];
  }
};

// Durations from a millisecond to past a day: retries and timeouts that fit the session's
// deadline, and ones that reach far past it.
std::string duration(rng& r) {
  static const std::vector<std::string> d = {"1ms", "50ms", "1s",  "5s",  "30s", "59m",
                                             "1h",  "2h",   "10s", "90s", "25h", "100ms"};
  return r.pick(d);
}

// A random valid spec: a DAG (needs point at earlier steps), run steps and agent steps, back
// edges to an ancestor, random when / continue_on_error / retry / timeouts.
std::string random_spec(rng& r) {
  int n = static_cast<int>(r.in(1, 8));
  std::string steps;
  std::vector<std::vector<int>> needs(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    std::string s = R"({"id":"s)" + std::to_string(i) + "\"";
    auto& nd = needs[static_cast<std::size_t>(i)];
    if (i > 0 && r.chance(0.7)) {
      s += R"(,"needs":[)";
      for (int j = 0; j < i; ++j)
        if (r.chance(0.4) || (nd.empty() && j == i - 1)) nd.push_back(j);
      for (std::size_t k = 0; k < nd.size(); ++k)
        s += (k ? "," : "") + std::string("\"s") + std::to_string(nd[k]) + "\"";
      s += "]";
    } else if (i > 0 && r.chance(0.5)) {
      s += R"(,"needs":[])";
    } else if (i > 0) {
      nd.push_back(i - 1);  // the default: the step before it
    }
    auto kind = r.in(0, 9);
    bool agent = false;
    if (kind <= 5) {
      s += R"(,"run":["x"])";
    } else if (kind <= 7) {
      agent = true;
      s += R"(,"kind":"agent","agent":{"mode":"command","run":["agent","{goal}"]})";
    } else {
      agent = true;
      s += R"(,"kind":"agent","agent":{"mode":"external","turn_timeout":")" + duration(r) + "\"}";
    }
    if (!nd.empty() && r.chance(0.3)) {
      static const std::vector<std::string> whens = {"success", "failure", "always"};
      s += R"(,"when":")" + r.pick(whens) + "\"";
    }
    if (r.chance(0.2)) s += R"(,"continue_on_error":true)";
    if (r.chance(0.3)) s += R"(,"timeout":")" + duration(r) + "\"";
    if (r.chance(0.5)) {
      auto b = duration(r), mb = duration(r);
      // max_backoff must not be shorter than backoff: use the larger as the cap.
      auto ms = [](const std::string& x) { return *parse_duration(x, "d"); };
      if (ms(mb) < ms(b)) std::swap(b, mb);
      s += R"(,"retry":{"max_attempts":)" + std::to_string(r.in(1, 5)) + R"(,"backoff":")" + b +
           R"(","max_backoff":")" + mb + "\"" + (r.chance(0.3) ? R"(,"jitter":true)" : "") + "}";
    }
    if (agent && r.chance(0.4)) {
      // A back edge to itself or to a step it needs, directly or not.
      std::vector<int> anc{i};
      for (std::size_t k = 0; k < anc.size(); ++k)
        for (int j : needs[static_cast<std::size_t>(anc[k])])
          if (std::find(anc.begin(), anc.end(), j) == anc.end()) anc.push_back(j);
      s += R"(,"on_reject":{"goto":"s)" + std::to_string(r.pick(anc)) + R"(","max_loops":)" +
           std::to_string(r.in(1, 3)) + "}";
    }
    s += "}";
    steps += (i ? "," : "") + s;
  }
  std::string spec = R"({"steps":[)" + steps + "]";
  if (r.chance(0.7)) spec += R"(,"timeout":")" + duration(r) + "\"";
  spec += R"(,"max_parallel":)" + std::to_string(r.in(1, 4)) + "}";
  return spec;
}

event accepted(const std::string& id, const json::value& spec, std::int64_t ts) {
  return test::accepted_event(id, spec, ts, 3'600'000);  // the node's default session timeout
}

bool is_external(const session_state& st, const std::string& step) {
  const auto* sp = st.spec.step(step);
  return sp && sp->kind == step_kind::agent && sp->agent_mode == "external";
}

// One simulated session: the owner's side of the contract (launch, kill, wait_until, step
// timeouts), with random outcomes. Returns the problem found, empty when none.
std::string simulate(std::uint64_t seed, std::string* spec_out) {
  rng r(seed);
  auto text = random_spec(r);
  *spec_out = text;
  auto spec = json::parse(text);
  if (!spec) return "the generator wrote invalid JSON";
  if (auto p = parse_spec(*spec); !p)
    return "the generator wrote an invalid spec: " + p.err().message;
  std::int64_t now = 1'000'000;
  machine m("p" + std::to_string(seed));
  std::vector<event> journal;
  auto acc = accepted(m.state().id, *spec, now);
  if (auto st = m.apply(acc); !st) return "accepted does not fold: " + st.err().message;
  journal.push_back(acc);
  m.set_owner("node-a", 1);

  struct proc {
    std::int64_t attempt = 0;
    std::int64_t ends_ms = 0;     // when the command ends by itself
    std::int64_t timeout_ms = 0;  // when its step timeout kills it (0: none)
    exit_result result;
    std::string kill_reason;  // set by a kill action: it ends now with this
  };
  std::map<std::string, proc> running;                // command steps whose process runs
  std::map<std::string, std::int64_t> agent_answers;  // external steps: when their agent answers
  std::optional<std::int64_t> cancel_at;
  if (r.chance(0.1)) cancel_at = now + r.in(0, 120'000);
  std::optional<std::int64_t> restart_at;
  if (r.chance(0.2)) restart_at = now + r.in(0, 60'000);
  std::uint64_t input_seq = 1;

  for (int iter = 0; iter < 20'000; ++iter) {
    auto acts = m.advance(now);
    std::optional<std::int64_t> wake;
    for (const auto& a : acts) {
      if (a.what == action::kind::launch) {
        proc p;
        p.attempt = a.attempt;
        const auto* sp = m.state().spec.step(a.step);
        // Mostly short commands; some run for hours.
        p.ends_ms = now + (r.chance(0.1) ? r.in(0, 10'000'000) : r.in(0, 5'000));
        if (sp && sp->timeout) p.timeout_ms = now + sp->timeout->count();
        auto o = r.in(0, 9);
        if (o <= 4) {
          p.result.exit_code = 0;
        } else if (o <= 6) {
          p.result.exit_code = static_cast<int>(r.in(1, 2));
        } else if (o == 7) {
          p.result.exit_code = 3;  // a command agent's "reject" (an exit code elsewhere)
        } else if (o == 8) {
          p.result.start_failed = true;
          p.result.error = "no such program in PATH: x";
          p.ends_ms = now;
        } else {
          p.result.signal = 9;
        }
        running[a.step] = p;
      } else if (a.what == action::kind::kill) {
        auto it = running.find(a.step);
        if (it != running.end() && it->second.attempt == a.attempt)
          it->second.kill_reason = a.cause == stop_cause::none ? "killed" : to_string(a.cause);
      } else if (a.what == action::kind::wait_until) {
        wake = a.until_ms;
      } else if (a.what == action::kind::prepare) {
        return "prepare asked for a session without a repo";
      }
    }
    for (auto& e : m.take_emitted()) journal.push_back(std::move(e));
    const auto& st = m.state();
    if (is_terminal(st.status)) {
      if (st.status != "succeeded" && st.reason.empty())
        return "ended " + st.status + " without a reason";
      if (st.reason.find("internal error") != std::string::npos)
        return "ended with \"" + st.reason + "\"";
      // The journal folds back into the same state.
      machine again(st.id);
      for (const auto& e : journal)
        if (auto f = again.apply(e); !f) return "journal does not fold: " + f.err().message;
      if (again.state().to_json().dump() != st.to_json().dump())
        return "folding the journal gives another state";
      return {};
    }
    // External agents waiting: each answers at some time, or stays silent (its turn timeout
    // or the session's deadline then decides).
    for (const auto& s : st.steps)
      if (s.status == step_status::running && is_external(st, s.id) && !agent_answers.count(s.id) &&
          r.chance(0.7))
        agent_answers[s.id] = now + r.in(0, 30'000);
    for (auto it = agent_answers.begin(); it != agent_answers.end();) {
      const auto* s = st.step(it->first);
      if (!s || s->status != step_status::running)
        it = agent_answers.erase(it);
      else
        ++it;
    }
    // The next thing to happen.
    std::int64_t next = INT64_MAX;
    std::string what, who;
    auto consider = [&](std::int64_t t, const std::string& w, const std::string& step) {
      if (t < next) next = t, what = w, who = step;
    };
    for (const auto& [step, p] : running) {
      if (!p.kill_reason.empty()) consider(now, "killed", step);
      consider(p.ends_ms, "ends", step);
      if (p.timeout_ms) consider(p.timeout_ms, "timeout", step);
    }
    for (const auto& [step, t] : agent_answers) consider(t, "answer", step);
    if (wake) consider(*wake, "wake", "");
    if (cancel_at) consider(*cancel_at, "cancel", "");
    if (restart_at) consider(*restart_at, "restart", "");
    if (next == INT64_MAX)
      return "stuck in " + st.status + ": nothing runs, nothing is due (iteration " +
             std::to_string(iter) + ")";
    now = std::max(now, next);
    if (what == "killed" || what == "ends" || what == "timeout") {
      auto p = running[who];
      running.erase(who);
      exit_result x = p.result;
      if (what == "killed") {
        x = exit_result{};
        x.signal = 15;
        x.error = p.kill_reason;
        x.timed_out = p.kill_reason == "session timeout";
      } else if (what == "timeout") {
        x = exit_result{};
        x.signal = 15;
        x.timed_out = true;
        x.error = "timed out";
      }
      m.step_exited(who, p.attempt, x, now);
    } else if (what == "answer") {
      agent_answers.erase(who);
      static const std::vector<std::string> outcomes = {"success", "success", "failure", "reject"};
      json::value in = json::value::make_object();
      in.set("type", "agent_done");
      in.set("step", who);
      in.set("outcome", r.pick(outcomes));
      m.input(++input_seq, in, now);
    } else if (what == "cancel") {
      cancel_at.reset();
      json::value in = json::value::make_object();
      in.set("type", "cancel");
      m.input(++input_seq, in, now);
    } else if (what == "restart") {
      // The node dies: every process is gone; the next owner folds the journal and resumes.
      restart_at.reset();
      running.clear();
      agent_answers.clear();
      for (auto& e : m.take_emitted()) journal.push_back(std::move(e));
      machine fresh(m.state().id);
      for (const auto& e : journal)
        if (auto f = fresh.apply(e); !f)
          return "journal does not fold at restart: " + f.err().message;
      fresh.set_owner("node-b", 2);
      m = std::move(fresh);
      m.resume(now, "node restarted");
    }
    for (auto& e : m.take_emitted()) journal.push_back(std::move(e));
  }
  return "no terminal state after 20,000 decisions";
}

}  // namespace

TEST(machine_property, every_valid_session_ends_with_a_readable_reason) {
  std::uint64_t base = 0x5eed;
  if (const char* s = std::getenv("BERTH_PROPERTY_SEED")) base = std::strtoull(s, nullptr, 0);
  int runs = 3000;
  if (const char* n = std::getenv("BERTH_PROPERTY_RUNS")) runs = std::atoi(n);
  int failures = 0;
  for (int i = 0; i < runs && failures < 5; ++i) {
    std::string spec;
    auto problem = simulate(base + static_cast<std::uint64_t>(i), &spec);
    if (!problem.empty()) {
      ++failures;
      ADD_FAILURE() << "seed " << base + static_cast<std::uint64_t>(i) << ": " << problem
                    << "\n  spec: " << spec;
    }
  }
}

// The case from the issue that found it: a retry whose backoff reaches past the deadline.
TEST(machine_property, a_retry_due_after_the_deadline_times_the_session_out_at_the_deadline) {
  machine m("r1", 3'600'000);
  auto spec = json::parse(
      R"({"steps":[{"id":"wait","run":["false"],"retry":{"max_attempts":2,"backoff":"1h","max_backoff":"1h"}}]})");
  ASSERT_TRUE(m.apply(accepted("r1", *spec, 1000)).ok());
  auto a = m.advance(2000);
  ASSERT_EQ(a.front().what, action::kind::launch);
  exit_result fail;
  fail.exit_code = 1;
  m.step_exited("wait", 1, fail, 2000);
  a = m.advance(2000);
  EXPECT_EQ(m.state().status, "running");  // waiting, not failed
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].what, action::kind::wait_until);
  EXPECT_EQ(a[0].until_ms, 1000 + 3'600'000);  // the deadline, before the retry is due
  EXPECT_EQ(m.state().phase(), "retrying");
  (void)m.advance(1000 + 3'600'000);
  EXPECT_EQ(m.state().status, "timed_out");
  EXPECT_NE(m.state().reason.find("session timeout of 1h reached while step wait waited for its "
                                  "retry (due 1s after the deadline)"),
            std::string::npos)
      << m.state().reason;
}
