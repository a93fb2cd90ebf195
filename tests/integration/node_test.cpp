#include "harness.hpp"
#include "node_fixture.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/time.hpp"
#include "berth/bus/client.hpp"
#include "berth/persistence/snapshot_store.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <filesystem>
#include <functional>
#include <sstream>

using namespace berth;
using test::run_berth;

namespace {

constexpr const char* two_steps = R"(
[[steps]]
id = "build"
run = ["sh", "-c", "echo building; echo warn >&2"]

[[steps]]
id = "test"
run = ["sh", "-c", "echo tested"]
)";

struct node_fixture : test::node_fixture {
  std::size_t session_count() {
    auto r = cli({"session", "list", "-o", "json"});
    auto v = r.json();
    return v ? v->find("sessions")->as_array().size() : 0;
  }
};

std::vector<std::string> types(const std::vector<json::value>& evs) {
  std::vector<std::string> out;
  for (const auto& e : evs) out.push_back(e.get_string("type"));
  return out;
}

}  // namespace

TEST_F(node_fixture, a_session_runs_to_success_and_reports_every_step) {
  auto r = cli(
      {"session", "start", "--workflow", workflow("a.toml", two_steps), "--wait", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto summary = r.json();
  ASSERT_TRUE(summary.has_value()) << r.out;
  EXPECT_EQ(summary->get_string("status"), "succeeded");
  const auto& steps = summary->find("steps")->as_array();
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].get_string("status"), "succeeded");
  EXPECT_EQ(steps[0].get_int("exit_code", -1), 0);
  auto id = summary->get_string("id");
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  EXPECT_EQ(types(evs), (std::vector<std::string>{"session.accepted", "session.started",
                                                  "step.started", "step.finished", "step.started",
                                                  "step.finished", "session.succeeded"}));
  EXPECT_EQ(evs[2].find("data")->get_string("step"), "build");
  EXPECT_EQ(evs[2].find("data")->get_int("attempt"), 1);
  EXPECT_EQ(evs[0].get_string("session"), id);
  auto logs = cli({"session", "logs", id});
  EXPECT_NE(logs.out.find("building\n"), std::string::npos);
  EXPECT_NE(logs.out.find("tested\n"), std::string::npos);
  EXPECT_NE(logs.err.find("warn\n"), std::string::npos);
}

TEST_F(node_fixture, start_json_output_and_events_since_cursor) {
  auto r = cli({"session", "start", "--run", "true", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto v = r.json();
  ASSERT_TRUE(v.has_value());
  EXPECT_FALSE(v->get_string("id").empty());
  EXPECT_EQ(v->get_string("status"), "pending");
  EXPECT_GT(v->get_int("accepted_seq"), 0);
  auto id = v->get_string("id");
  ASSERT_TRUE(ends(id, "succeeded"));
  auto evs = test::journal(*node, id);
  ASSERT_GE(evs.size(), 3u);
  auto since = evs[2].get_int("seq");
  auto tail = cli({"session", "events", id, "--since", std::to_string(since), "-o", "jsonl"});
  ASSERT_EQ(tail.code, 0);
  auto first_line = tail.out.substr(0, tail.out.find('\n'));
  EXPECT_EQ(json::parse(first_line)->get_int("n"), 3);
}

TEST_F(node_fixture,
       repeated_start_with_the_same_id_is_the_same_session_and_a_different_spec_conflicts) {
  auto a = cli({"session", "start", "--run", "true", "--id", "fixed-1", "-o", "json"});
  auto b = cli({"session", "start", "--run", "true", "--id", "fixed-1", "-o", "json"});
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(a.json()->get_string("id"), "fixed-1");
  EXPECT_EQ(b.json()->get_string("id"), "fixed-1");
  auto c = cli({"session", "start", "--run", "false", "--id", "fixed-1"});
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.err.find("was already used for session fixed-1 with a different spec"),
            std::string::npos)
      << c.err;
}

TEST_F(node_fixture, idempotency_key_without_id_returns_the_first_session) {
  auto a = cli({"session", "start", "--run", "true", "--idempotency-key", "k-1", "-o", "json"});
  auto b = cli({"session", "start", "--run", "true", "--idempotency-key", "k-1", "-o", "json"});
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(a.json()->get_string("id"), b.json()->get_string("id"));
  auto c =
      cli({"session", "start", "--goal", "other", "--run", "true", "--idempotency-key", "k-1"});
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.err.find("idempotency_key"), std::string::npos) << c.err;
}

TEST_F(node_fixture, hostile_workflows_are_refused_with_the_field_and_nothing_is_stored) {
  struct bad {
    std::string text;
    std::string needle;
  };
  std::vector<bad> cases = {
      {"[[steps]\nid = \"a\"\n", ":1:"},  // malformed TOML
      {"[[steps]]\nid = \"a\"\nrun = [\"x\"]\nnonsense = 1\n", "steps[0].nonsense: unknown key"},
      {"[[steps]]\nid = \"a\"\nrun = \"make\"\n", "steps[0].run: expected an array of strings"},
      {"[[steps]]\nid = \"a\"\nrun = []\n", "steps[0].run: must not be empty"},
      {"[[steps]]\nid = \"a\"\nrun = [\"x\"]\ntimeout = 5\n",
       "steps[0].timeout: expected a duration"},
      {"[[steps]]\nid = \"a b\"\nrun = [\"x\"]\n", "steps[0].id: contains a space"},
      {"[bogus]\nx = 1\n", "bogus: unknown key"},
  };
  for (const auto& c : cases) {
    auto r = cli({"session", "start", "--workflow", workflow("bad.toml", c.text)});
    EXPECT_EQ(r.code, 2) << c.text;
    EXPECT_NE(r.err.find(c.needle), std::string::npos)
        << "wanted \"" << c.needle << "\" in: " << r.err;
  }
  for (std::string id : {"a.b", "a*", "a>", "a b"}) {
    auto r = cli({"session", "start", "--run", "true", "--id", id});
    EXPECT_EQ(r.code, 2) << id;
    EXPECT_EQ(r.err.rfind("berth: id:", 0), 0u) << r.err;
  }
  EXPECT_EQ(session_count(), 0u);
  EXPECT_TRUE(node->running());
}

TEST_F(node_fixture, the_api_refuses_hostile_requests_from_any_client) {
  auto nj = json::parse(*fs::read_file(node->data_dir() + "/node.json"));
  bus::client::options o;
  o.servers = {nj->get_string("nats_url")};
  auto c = bus::client::connect(o);
  ASSERT_TRUE(c.ok());
  auto ask = [&](const std::string& verb, const std::string& body) {
    auto r = (*c)->request("berth.api.v1." + verb, body, millis(10'000));
    EXPECT_TRUE(r.ok());
    return r.ok() ? *json::parse(r->data) : json::value();
  };
  auto code = [](const json::value& v) {
    return v.find("error") ? v.find("error")->get_string("code") : std::string();
  };
  auto message = [](const json::value& v) {
    return v.find("error") ? v.find("error")->get_string("message") : std::string();
  };
  EXPECT_EQ(code(ask("session.start", "{not json")), "invalid_argument");
  auto unknown =
      ask("session.start", R"({"spec":{"steps":[{"id":"a","run":["x"]}]},"colour":"red"})");
  EXPECT_EQ(message(unknown), "colour: unknown field");
  auto wrong = ask("session.start", R"({"spec":{"steps":[{"id":"a","run":[1]}]}})");
  EXPECT_NE(message(wrong).find("steps[0].run[0]: expected a string, got integer"),
            std::string::npos)
      << message(wrong);
  std::string big = R"({"spec":{"goal":")" + std::string(2 * 1024 * 1024, 'g') +
                    R"(","steps":[{"id":"a","run":["x"]}]}})";
  auto huge = ask("session.start", big);
  EXPECT_EQ(code(huge), "too_large");
  EXPECT_NE(message(huge).find("spec:"), std::string::npos);
  EXPECT_EQ(code(ask("session.get", R"({"id":"a.b"})")), "invalid_argument");
  EXPECT_EQ(code(ask("session.frobnicate", "{}")), "not_found");
  EXPECT_EQ(session_count(), 0u);
  // And the node still serves a good request.
  EXPECT_EQ(cli({"session", "start", "--run", "true", "--wait"}).code, 0);
}

TEST_F(node_fixture, cancel_input_and_show_of_an_unknown_session_are_not_found) {
  for (auto args :
       std::vector<std::vector<std::string>>{{"session", "cancel", "nope"},
                                             {"session", "input", "nope", "--data", "{}"},
                                             {"session", "show", "nope"},
                                             {"session", "events", "nope"}}) {
    auto r = cli(args);
    EXPECT_EQ(r.code, 3) << args[1];
    EXPECT_NE(r.err.find("session nope not found"), std::string::npos) << r.err;
  }
}

TEST_F(node_fixture, a_missing_binary_fails_the_step_and_follows_the_retry_policy) {
  auto id = start(R"(
[[steps]]
id = "go"
run = ["definitely-not-installed-xyz"]
retry = { max_attempts = 2, backoff = "100ms" }
)");
  ASSERT_TRUE(ends(id, "failed"));
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  int failed = 0;
  for (const auto& e : evs)
    if (e.get_string("type") == "step.failed") {
      ++failed;
      EXPECT_NE(e.find("data")->get_string("reason").find(
                    "no such program in PATH: definitely-not-installed-xyz"),
                std::string::npos);
    }
  EXPECT_EQ(failed, 2);
  auto show = cli({"session", "show", id, "-o", "json"}).json();
  EXPECT_NE(show->get_string("reason").find("step go failed after 2 attempts"), std::string::npos);
}

TEST_F(node_fixture, wait_exits_non_zero_when_the_session_fails) {
  auto r = cli({"session", "start", "--run", "false", "--wait"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("status   failed"), std::string::npos) << r.out;
}

TEST_F(node_fixture, cancel_stops_the_running_step_and_skips_the_rest) {
  auto id = start(R"(
[[steps]]
id = "long"
run = ["sh", "-c", "echo $$ > pid; sleep 60"]
[[steps]]
id = "never"
run = ["true"]
)");
  ASSERT_TRUE(test::eventually([&] {
    return cli({"session", "logs", id}).code == 0 && status(id) == "running";
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto r = cli({"session", "cancel", id, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.json()->get_string("status"), "cancelling");
  ASSERT_TRUE(ends(id, "cancelled", std::chrono::seconds(20)));
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  // The step that never ran is recorded as skipped, and nothing else.
  for (const auto& e : evs)
    if (e.find("data")->get_string("step") == "never") {
      EXPECT_EQ(e.get_string("type"), "step.skipped");
      EXPECT_EQ(e.find("data")->get_string("reason"), "session cancelled");
    }
  auto again = cli({"session", "cancel", id, "-o", "json"});
  EXPECT_EQ(again.code, 0);
  EXPECT_EQ(again.json()->get_string("status"), "cancelled");
}

TEST_F(node_fixture, input_is_journaled_in_order) {
  auto id = start("[[steps]]\nid = \"wait\"\nrun = [\"sleep\", \"2\"]\n");
  ASSERT_EQ(cli({"session", "input", id, "--data", R"({"answer":42})"}).code, 0);
  ASSERT_EQ(cli({"session", "input", id, "--data", R"("second")"}).code, 0);
  ASSERT_TRUE(ends(id, "succeeded"));
  std::vector<json::value> inputs;
  for (const auto& e : test::journal(*node, id))
    if (e.get_string("type") == "input.applied") inputs.push_back(*e.find("data"));
  ASSERT_EQ(inputs.size(), 2u);
  EXPECT_EQ(inputs[0].find("data")->dump(), R"({"answer":42})");
  EXPECT_EQ(inputs[1].find("data")->dump(), R"("second")");
  auto bad = cli({"session", "input", id, "--data", "{oops"});
  EXPECT_EQ(bad.code, 2);
}

TEST_F(node_fixture, step_timeout_kills_the_step_and_the_retry_policy_applies) {
  auto id = start(R"(
[[steps]]
id = "slow"
run = ["sleep", "30"]
timeout = "300ms"
retry = { max_attempts = 2, backoff = "100ms" }
)");
  ASSERT_TRUE(ends(id, "failed", std::chrono::seconds(30)));
  int timeouts = 0;
  for (const auto& e : test::journal(*node, id))
    if (e.get_string("type") == "step.failed" &&
        e.find("data")->get_string("reason") == "timed out after 300ms")
      ++timeouts;
  EXPECT_EQ(timeouts, 2);
}

TEST_F(node_fixture, session_timeout_ends_the_session_as_timed_out) {
  auto id =
      start("[[steps]]\nid = \"slow\"\nrun = [\"sleep\", \"30\"]\n", {"--session-timeout", "1s"});
  ASSERT_TRUE(ends(id, "timed_out", std::chrono::seconds(30)));
  EXPECT_EQ(test::journal_problems(test::journal(*node, id)), "");
}

TEST_F(node_fixture, kill_9_mid_step_resumes_and_no_step_finishes_twice) {
  auto id = start(R"(
[[steps]]
id = "first"
run = ["true"]
[[steps]]
id = "second"
run = ["sh", "-c", "sleep 1; echo done"]
[[steps]]
id = "third"
run = ["true"]
)");
  ASSERT_TRUE(test::eventually([&] {
    for (const auto& e : test::journal(*node, id))
      if (e.get_string("type") == "step.started" && e.find("data")->get_string("step") == "second")
        return true;
    return false;
  }));
  node->signal(SIGKILL);
  node->wait_exit();
  node->start();
  ASSERT_TRUE(ends(id, "succeeded"));
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  int interrupted = 0;
  for (const auto& e : evs) interrupted += e.get_string("type") == "step.interrupted";
  EXPECT_EQ(interrupted, 1);
  // The relaunch waited until the resumed session had journaled its recovery.
  EXPECT_NE(node->log().find("1 resumed session(s) recorded their recovery"), std::string::npos)
      << node->log();
  // The killed run's sandbox died with it (--die-with-parent); its cgroups were swept.
  EXPECT_TRUE(test::eventually([&] {
    return node->log().find("removed the cgroups of 1 sandbox(es) left by an earlier run") !=
           std::string::npos;
  })) << node->log();
}

TEST_F(node_fixture, sigterm_stops_gracefully_keeps_ownership_and_the_restart_resumes) {
  auto id = start(R"(
[[steps]]
id = "a"
run = ["sleep", "1"]
[[steps]]
id = "b"
run = ["sleep", "1"]
)");
  ASSERT_TRUE(test::eventually([&] { return status(id) == "running"; }));
  node->signal(SIGTERM);
  int st = node->wait_exit(std::chrono::seconds(30));
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
  EXPECT_FALSE(std::filesystem::exists(node->data_dir() + "/node.json"));
  EXPECT_NE(node->log().find("stopping gracefully"), std::string::npos);
  node->start();
  ASSERT_TRUE(ends(id, "succeeded"));
  EXPECT_EQ(test::journal_problems(test::journal(*node, id)), "");
}

TEST_F(node_fixture, nats_server_killed_mid_session_is_restarted_and_the_session_carries_on) {
  auto id = start(R"(
[[steps]]
id = "a"
run = ["sleep", "1"]
[[steps]]
id = "b"
run = ["sleep", "1"]
)");
  ASSERT_TRUE(test::eventually([&] { return status(id) == "running"; }));
  node->kill_embedded_server();
  ASSERT_TRUE(ends(id, "succeeded", std::chrono::seconds(60))) << node->log();
  EXPECT_NE(node->log().find("died; restarting it"), std::string::npos);
  EXPECT_EQ(test::journal_problems(test::journal(*node, id)), "");
  EXPECT_TRUE(node->running());
}

TEST_F(node_fixture, stats_and_list_filters) {
  ASSERT_EQ(cli({"session", "start", "--run", "true", "--wait"}).code, 0);
  ASSERT_EQ(cli({"session", "start", "--run", "false", "--wait"}).code, 1);
  auto failed = cli({"session", "list", "--status", "failed", "-o", "json"}).json();
  ASSERT_TRUE(failed.has_value());
  ASSERT_EQ(failed->find("sessions")->as_array().size(), 1u);
  EXPECT_NE(failed->find("sessions")->as_array()[0].get_string("reason").find("step run failed"),
            std::string::npos);
  auto bad = cli({"session", "list", "--status", "exploded"});
  EXPECT_EQ(bad.code, 2);
  auto stats = cli({"stats", "-o", "json"}).json();
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->get_int("max_sessions"), 100);
  EXPECT_EQ(stats->get_int("sessions_finished"), 2);
}

TEST(node, a_data_dir_that_cannot_be_written_is_refused_clearly) {
  test::temp_dir dir;
  test::write_file(dir / "file", "x");
  auto r = run_berth({"node", "--data-dir", dir / "file/sub"}, {{"XDG_STATE_HOME", dir / "state"}});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("node.data_dir"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir / "file/sub"), std::string::npos) << r.err;
}

TEST(node, a_snapshot_store_from_a_newer_schema_is_refused) {
  test::temp_dir dir;
  {
    auto s = persistence::snapshot_store::open(dir / "node/snapshots");
    ASSERT_TRUE(s.ok());
    persistence::write_set w;
    w.meta = {{"schema_version", "99"}};
    ASSERT_TRUE((*s)->commit(w).ok());
  }
  auto r = run_berth({"node", "--data-dir", dir / "node"}, {{"XDG_STATE_HOME", dir / "state"}});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("schema version 99"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir / "node/snapshots"), std::string::npos) << r.err;
}

TEST(cli, config_check_reports_file_line_column) {
  test::temp_dir dir;
  test::write_file(dir / "bad.toml", "[node]\nmax_sessions = -4\n");
  auto r = run_berth({"config", "check", dir / "bad.toml"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(dir / "bad.toml:2:16: node.max_sessions: -4 is out of range"),
            std::string::npos)
      << r.err;
  test::write_file(dir / "good.toml", "[node]\nmax_sessions = 4\n");
  EXPECT_EQ(run_berth({"config", "check", dir / "good.toml"}).code, 0);
}

TEST(cli, usage_errors_exit_2_and_no_node_is_a_clear_error) {
  EXPECT_EQ(run_berth({"session", "frob"}).code, 2);
  test::temp_dir dir;
  auto r = run_berth({"--data-dir", dir / "none", "session", "list"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no node to talk to"), std::string::npos) << r.err;
}

namespace {
std::int64_t event_ms(const std::vector<json::value>& evs, const std::string& type) {
  for (const auto& e : evs)
    if (e.get_string("type") == type) return parse_timestamp(e.get_string("ts"));
  return -1;
}

struct small_node : ::testing::Test {
  test::temp_dir dir;
  std::unique_ptr<test::node_process> node;
  void start_node(std::map<std::string, std::string> env) {
    node = std::make_unique<test::node_process>(dir / "node", std::vector<std::string>{},
                                                std::move(env));
    node->start();
  }
  std::string start(const std::string& cmd, int priority) {
    auto r = run_berth({"--data-dir", node->data_dir(), "session", "start", "--priority",
                        std::to_string(priority), "-o", "json", "--", "sh", "-c", cmd});
    EXPECT_EQ(r.code, 0) << r.err;
    return r.json() ? r.json()->get_string("id") : std::string();
  }
  bool done(const std::string& id) {
    auto evs = test::journal(*node, id);
    return !evs.empty() && evs.back().get_string("type") == "session.succeeded";
  }
  // A workflow file with `text`; returns its path.
  std::string wf(const std::string& text) {
    auto path = dir / ("wf-" + std::to_string(files_++) + ".toml");
    test::write_file(path, text);
    return path;
  }
  int files_ = 0;
};
}  // namespace

TEST_F(small_node, max_sessions_caps_what_runs_at_once) {
  start_node({{"BERTH_NODE_MAX_SESSIONS", "1"}});
  auto a = start("sleep 1", 5);
  auto b = start("sleep 1", 5);
  ASSERT_TRUE(test::eventually([&] { return done(a) && done(b); }, std::chrono::seconds(60)));
  auto ea = test::journal(*node, a);
  auto eb = test::journal(*node, b);
  // One ran after the other: the later start comes after the earlier session's end.
  bool a_first = event_ms(ea, "session.started") <= event_ms(eb, "session.started");
  const auto& first = a_first ? ea : eb;
  const auto& second = a_first ? eb : ea;
  EXPECT_GE(event_ms(second, "session.started"), event_ms(first, "session.succeeded"));
}

TEST_F(small_node, the_highest_priority_waiting_session_is_placed_first) {
  start_node({{"BERTH_NODE_MAX_SESSIONS", "1"}});
  // Long enough that both waiting sessions are queued before it ends, even on a busy machine.
  auto blocker = start("sleep 4", 5);
  ASSERT_TRUE(test::eventually([&] {
    for (const auto& e : test::journal(*node, blocker))
      if (e.get_string("type") == "step.started") return true;
    return false;
  }));
  auto low = start("true", 1);
  auto high = start("true", 9);
  ASSERT_TRUE(test::eventually([&] { return done(low) && done(high); }, std::chrono::seconds(60)));
  EXPECT_LT(event_ms(test::journal(*node, high), "session.started"),
            event_ms(test::journal(*node, low), "session.started"));
}

TEST_F(small_node, sigterm_past_the_grace_interrupts_the_step_and_the_restart_retries_it) {
  start_node({{"BERTH_NODE_SHUTDOWN_GRACE", "200ms"}});
  auto id = start("sleep 30", 5);
  ASSERT_TRUE(test::eventually([&] {
    for (const auto& e : test::journal(*node, id))
      if (e.get_string("type") == "step.started") return true;
    return false;
  }));
  node->signal(SIGTERM);
  int st = node->wait_exit(std::chrono::seconds(30));
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
  node->start();
  ASSERT_TRUE(test::eventually([&] {
    for (const auto& e : test::journal(*node, id))
      if (e.get_string("type") == "step.started" && e.find("data")->get_int("attempt") == 2)
        return true;
    return false;
  }));
  auto evs = test::journal(*node, id);
  std::vector<std::string> seen = types(evs);
  // started(1), then interrupted by the stop (the restart adds nothing before attempt 2).
  auto it = std::find(seen.begin(), seen.end(), "step.interrupted");
  ASSERT_NE(it, seen.end());
  const auto& interrupted = evs[static_cast<std::size_t>(it - seen.begin())];
  EXPECT_EQ(interrupted.find("data")->get_string("reason"), "node shutting down");
  EXPECT_EQ(std::count(seen.begin(), seen.end(), "step.interrupted"), 1);
  EXPECT_EQ(test::journal_problems(test::journal(*node, id), false), "");
}

TEST_F(node_fixture, the_embedded_server_refuses_clients_without_the_token) {
  namespace sfs = std::filesystem;
  auto perms = [](const std::string& p) { return sfs::status(p).permissions() & sfs::perms::all; };
  EXPECT_EQ(perms(node->data_dir() + "/node.json"),
            sfs::perms::owner_read | sfs::perms::owner_write);
  EXPECT_EQ(perms(node->data_dir() + "/nats/token"),
            sfs::perms::owner_read | sfs::perms::owner_write);
  auto url = json::parse(*fs::read_file(node->data_dir() + "/node.json"))->get_string("nats_url");
  auto at = url.find('@');
  ASSERT_NE(at, std::string::npos) << "node.json must carry the token";
  bus::client::options o;
  o.servers = {"nats://" + url.substr(at + 1)};
  o.connect_timeout = millis(500);
  auto anonymous = bus::client::connect(o);
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.err().message.find(url.substr(7, at - 7)), std::string::npos)
      << "token leaked in error";
  o.servers = {url};
  EXPECT_TRUE(bus::client::connect(o).ok());
  EXPECT_EQ(node->log().find(url.substr(7, at - 7)), std::string::npos)
      << "token leaked in the log";
}

TEST_F(node_fixture, a_session_whose_actor_keeps_failing_is_escalated_to_failed_with_the_reason) {
  auto id = start("[[steps]]\nid = \"long\"\nrun = [\"sleep\", \"30\"]\n");
  ASSERT_TRUE(test::eventually([&] { return status(id) == "running"; }));
  node->signal(SIGKILL);
  node->wait_exit();
  {
    // Damage this session's snapshot: every load of it now fails.
    auto store = persistence::snapshot_store::open(node->data_dir() + "/snapshots");
    ASSERT_TRUE(store.ok()) << store.err().message;
    persistence::write_set w;
    w.sessions = {{id, "{ this is not a snapshot"}};
    ASSERT_TRUE((*store)->commit(w).ok());
  }
  node->start();
  ASSERT_TRUE(ends(id, "failed", std::chrono::seconds(60))) << node->log();
  auto show = cli({"session", "show", id, "-o", "json"}).json();
  EXPECT_NE(show->get_string("reason").find("supervisor gave up after 4 failures"),
            std::string::npos)
      << show->get_string("reason");
  EXPECT_NE(show->get_string("reason").find("snapshot of session"), std::string::npos)
      << show->get_string("reason");
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  // Other sessions on the node are untouched.
  EXPECT_EQ(cli({"session", "start", "--run", "true", "--wait"}).code, 0);
  auto stats = cli({"stats", "-o", "json"}).json();
  EXPECT_EQ(stats->get_int("escalations"), 1);
  EXPECT_EQ(stats->get_int("restarts"), 3);
}

// --- the sandbox as sessions see it ------------------------------------------------------------

TEST_F(small_node, an_oom_killed_step_is_reported_and_the_session_continues) {
  start_node({{"BERTH_SANDBOX_MEMORY_BYTES", std::to_string(96 << 20)}});
  auto r = run_berth({"--data-dir", node->data_dir(), "session", "start", "--workflow", wf(R"(
[[steps]]
id = "hog"
run = ["sh", "-c", "if [ -f .oomed ]; then exit 0; fi; touch .oomed; exec perl -e '$x = 1 x (1 << 30)'"]
retry = { max_attempts = 2, backoff = "100ms" }
[[steps]]
id = "after"
run = ["true"]
)"),
                      "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto id = r.json()->get_string("id");
  // The first attempt is killed by the OOM killer; the retry, in the same sandbox, passes.
  ASSERT_TRUE(test::eventually([&] { return done(id); }, std::chrono::seconds(60)));
  bool reported = false;
  for (const auto& e : test::journal(*node, id))
    if (e.get_string("type") == "step.failed") {
      const auto* d = e.find("data");
      reported = d->get_bool("oom_killed") &&
                 d->get_string("reason").find("out-of-memory") != std::string::npos;
    }
  EXPECT_TRUE(reported);
  EXPECT_EQ(node->log().find("every session will fail"), std::string::npos);
  // The node is healthy: another session runs.
  auto next = start("true", 5);
  EXPECT_TRUE(test::eventually([&] { return done(next); }, std::chrono::seconds(60)));
}

TEST_F(small_node, network_is_off_unless_the_step_asks_for_the_host_network) {
  start_node({});
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(s, 16), 0);
  socklen_t len = sizeof(a);
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  auto port = std::to_string(ntohs(a.sin_port));
  auto r = run_berth({"--data-dir", node->data_dir(), "session", "start", "--workflow", wf(R"(
[[steps]]
id = "offline"
run = ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/)" + port + R"( && echo REACHED || echo REFUSED"]
[[steps]]
id = "online"
network = "host"
run = ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/)" + port + R"( && echo REACHED || echo REFUSED"]
)"),
                      "--wait", "-o", "json"});
  ::close(s);
  ASSERT_EQ(r.code, 0) << r.err;
  auto id = r.json()->get_string("id");
  auto offline =
      run_berth({"--data-dir", node->data_dir(), "session", "logs", id, "--step", "offline"});
  auto online =
      run_berth({"--data-dir", node->data_dir(), "session", "logs", id, "--step", "online"});
  EXPECT_NE(offline.out.find("REFUSED"), std::string::npos) << offline.out;
  EXPECT_NE(online.out.find("REACHED"), std::string::npos) << online.out;
}

TEST_F(small_node, a_host_without_bubblewrap_fails_sessions_clearly_instead_of_running_them_bare) {
  start_node({{"BERTH_SANDBOX_BWRAP", "/nonexistent/bwrap"}});
  auto id = start("touch /tmp/ran-unsandboxed-" + std::to_string(::getpid()), 5);
  ASSERT_TRUE(test::eventually(
      [&] {
        for (const auto& e : test::journal(*node, id))
          if (e.get_string("type") == "session.failed") return true;
        return false;
      },
      std::chrono::seconds(60)));
  EXPECT_FALSE(std::filesystem::exists("/tmp/ran-unsandboxed-" + std::to_string(::getpid())));
  std::string reasons;
  for (const auto& e : test::journal(*node, id))
    if (e.get_string("type") == "step.failed") reasons += e.find("data")->get_string("reason");
  EXPECT_NE(reasons.find("bubblewrap"), std::string::npos) << reasons;
  EXPECT_NE(node->log().find("every session will fail"), std::string::npos);
}

TEST_F(small_node, sandbox_mode_none_warns_for_every_session) {
  start_node({{"BERTH_SANDBOX_MODE", "none"}});
  auto a = start("true", 5);
  auto b = start("true", 5);
  ASSERT_TRUE(test::eventually([&] { return done(a) && done(b); }, std::chrono::seconds(60)));
  EXPECT_NE(node->log().find(a + ": runs unsandboxed"), std::string::npos);
  EXPECT_NE(node->log().find(b + ": runs unsandboxed"), std::string::npos);
}

TEST_F(node_fixture, a_bad_network_value_is_refused_naming_the_field) {
  auto r = cli({"session", "start", "--workflow", workflow("badnet.toml", R"(
[[steps]]
id = "a"
run = ["true"]
network = "internet"
)")});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("steps[0].network"), std::string::npos) << r.err;
  EXPECT_EQ(session_count(), 0u);
}

// --- tool calls: any NATS client publishes them on berth.in.<session> ---------------------------

namespace {
struct tool_client {
  std::unique_ptr<bus::client> c;
  bus::subjects names{"berth"};
  explicit tool_client(const test::node_process& node) {
    bus::client::options o;
    o.servers = {
        json::parse(*fs::read_file(node.data_dir() + "/node.json"))->get_string("nats_url")};
    auto r = bus::client::connect(o);
    EXPECT_TRUE(r.ok()) << r.err().message;
    if (r) c = std::move(*r);
  }
  void call(const std::string& session, const std::string& call_id, const std::string& tool,
            const std::string& args_json) {
    auto body = R"({"type":"tool_call","call_id":")" + call_id + R"(","tool":")" + tool +
                R"(","args":)" + args_json + "}";
    auto ack = c->publish(names.input(session), body);
    EXPECT_TRUE(ack.ok()) << ack.err().message;
  }
};

std::map<std::string, json::value> tool_results(const std::vector<json::value>& evs) {
  std::map<std::string, json::value> out;
  for (const auto& e : evs)
    if (e.get_string("type") == "tool.result")
      out[e.find("data")->get_string("call_id")] = *e.find("data");
  return out;
}
}  // namespace

TEST_F(node_fixture, tool_calls_run_in_the_sandbox_and_are_journaled) {
  auto id = start("[[steps]]\nid = \"hold\"\nrun = [\"sleep\", \"4\"]\n");
  ASSERT_TRUE(test::eventually([&] { return status(id) == "running"; }));
  tool_client tc(*node);
  tc.call(id, "w1", "write_file", R"({"path":"notes/a.txt","content":"hello"})");
  tc.call(id, "w1", "write_file", R"({"path":"notes/a.txt","content":"again"})");  // repeated
  tc.call(id, "e1", "edit", R"({"path":"notes/a.txt","search":"hello","replace":"bye"})");
  tc.call(id, "r1", "read_file", R"({"path":"notes/a.txt"})");
  tc.call(id, "x1", "exec", R"({"argv":["sh","-c","cat; cat notes/a.txt; id -u"],"stdin":"in:"})");
  tc.call(id, "bad1", "read_file", R"({"path":"../../../etc/passwd"})");
  tc.call(id, "l1", "list_dir", R"({"path":"notes"})");
  tc.call(id, "s1", "search", R"({"pattern":"by+e"})");
  tc.call(id, "big", "write_file",
          R"({"path":"big.txt","content":")" + std::string(100000, 'z') + R"("})");
  tc.call(id, "rbig", "read_file", R"({"path":"big.txt"})");
  tc.call(id, "u1", "rm_rf", "{}");
  tc.call(id, "no args", "read_file", "{}");
  std::map<std::string, json::value> res;
  ASSERT_TRUE(test::eventually([&] {
    res = tool_results(test::journal(*node, id));
    return res.size() >= 9;
  })) << res.size();
  EXPECT_TRUE(res["w1"].get_bool("ok"));
  EXPECT_TRUE(res["e1"].get_bool("ok"));
  EXPECT_EQ(res["r1"].find("result")->get_string("content"), "bye");
  const auto* x = res["x1"].find("result");
  EXPECT_EQ(x->get_int("exit_code", -1), 0);
  EXPECT_EQ(x->get_string("stdout"), "in:bye65534\n");
  EXPECT_FALSE(res["bad1"].get_bool("ok"));
  EXPECT_EQ(res["bad1"].find("result")->get_string("code"), "permission_denied");
  EXPECT_EQ(res["l1"].find("result")->find("entries")->as_array().size(), 1u);
  EXPECT_EQ(res["s1"].find("result")->find("matches")->as_array().size(), 1u);
  // A result too large for the journal is stored on BERTH_LOG; the event points at it.
  EXPECT_EQ(res["rbig"].find("result")->get_string("result_subject"),
            "berth.log." + id + ".tool-rbig");
  EXPECT_GT(res["rbig"].find("result")->get_int("result_bytes"), 100000);
  auto evs = test::journal(*node, id);
  int w1_calls = 0;
  std::string rejected;
  for (const auto& e : evs) {
    if (e.get_string("type") == "tool.call" && e.find("data")->get_string("call_id") == "w1")
      ++w1_calls;
    if (e.get_string("type") == "input.applied" && e.find("data")->get_string("kind") == "rejected")
      rejected += e.find("data")->get_string("reason") + "|";
  }
  EXPECT_EQ(w1_calls, 1);  // the repeated call_id did not run again
  EXPECT_EQ(*fs::read_file(node->data_dir() + "/work/" + id + "/notes/a.txt"), "bye");
  EXPECT_NE(rejected.find("unknown tool \"rm_rf\""), std::string::npos) << rejected;
  EXPECT_NE(rejected.find("call_id"), std::string::npos) << rejected;
  EXPECT_EQ(test::journal_problems(evs, false), "");
  ASSERT_TRUE(ends(id, "succeeded"));
}

TEST_F(node_fixture, a_tool_call_running_when_the_node_dies_is_interrupted_not_rerun) {
  auto id = start("[[steps]]\nid = \"hold\"\nrun = [\"sleep\", \"3\"]\n");
  ASSERT_TRUE(test::eventually([&] { return status(id) == "running"; }));
  tool_client tc(*node);
  tc.call(id, "long", "exec", R"({"argv":["sh","-c","echo run >> runs.txt; sleep 30"]})");
  ASSERT_TRUE(test::eventually(
      [&] { return fs::read_file(node->data_dir() + "/work/" + id + "/runs.txt").ok(); }));
  node->signal(SIGKILL);
  node->wait_exit();
  node->start();
  ASSERT_TRUE(test::eventually([&] {
    for (const auto& e : test::journal(*node, id))
      if (e.get_string("type") == "tool.interrupted") return true;
    return false;
  }));
  // Not run again: the command's one line is all there is (the step still holds the session).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto runs = fs::read_file(node->data_dir() + "/work/" + id + "/runs.txt");
  ASSERT_TRUE(runs.ok());
  EXPECT_EQ(*runs, "run\n");
  ASSERT_TRUE(ends(id, "succeeded"));
  auto evs = test::journal(*node, id);
  int interrupted = 0, results = 0;
  for (const auto& e : evs) {
    interrupted += e.get_string("type") == "tool.interrupted";
    results += e.get_string("type") == "tool.result";
  }
  EXPECT_EQ(interrupted, 1);
  EXPECT_EQ(results, 0);
  EXPECT_EQ(test::journal_problems(evs), "");
}

TEST_F(node_fixture, the_cli_runs_tools_and_prints_their_results) {
  auto id = start("[[steps]]\nid = \"hold\"\nrun = [\"sleep\", \"4\"]\n");
  ASSERT_TRUE(test::eventually([&] { return status(id) == "running"; }));
  auto w =
      cli({"session", "tool", id, "write_file", "--args", R"({"path":"x.txt","content":"hi"})"});
  EXPECT_EQ(w.code, 0) << w.err;
  auto r = cli({"session", "tool", id, "read_file", "--args", R"({"path":"x.txt"})"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "hi");
  auto x = cli({"session", "tool", id, "exec", "--args",
                R"({"argv":["sh","-c","cat x.txt; echo; echo oops >&2; exit 3"]})"});
  EXPECT_EQ(x.code, 1);
  EXPECT_EQ(x.out, "hi\n");
  EXPECT_NE(x.err.find("oops"), std::string::npos);
  auto j = cli({"session", "tool", id, "list_dir", "-o", "json", "--call-id", "ls-1"});
  EXPECT_EQ(j.code, 0) << j.err;
  ASSERT_TRUE(j.json());
  EXPECT_EQ(j.json()->get_string("call_id"), "ls-1");
  // The same call_id again: the journaled result, not a second run.
  auto again = cli({"session", "tool", id, "list_dir", "-o", "json", "--call-id", "ls-1"});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.out, j.out);
  int ls_calls = 0;
  for (const auto& e : test::journal(*node, id))
    ls_calls +=
        e.get_string("type") == "tool.call" && e.find("data")->get_string("call_id") == "ls-1";
  EXPECT_EQ(ls_calls, 1);
  auto bad = cli({"session", "tool", id, "rm_rf"});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("unknown tool"), std::string::npos) << bad.err;
  auto esc = cli({"session", "tool", id, "read_file", "--args", R"({"path":"/etc/shadow"})"});
  EXPECT_EQ(esc.code, 1);
  EXPECT_NE(esc.err.find("outside the workspace"), std::string::npos) << esc.err;
  auto args = cli({"session", "tool", id, "read_file", "--args", "[1]"});
  EXPECT_EQ(args.code, 2);
  EXPECT_NE(args.err.find("--args"), std::string::npos) << args.err;
  auto missing = cli({"session", "tool", "no-such-session", "list_dir"});
  EXPECT_EQ(missing.code, 3) << missing.err;
}

// --- compatibility with the previous release ---------------------------------------------------

// tests/fixtures/previous_release/: a session captured from berth 0.1.0 (commit 9d85dbd, before
// the session core moved to core/) while its second step ran: the snapshot RocksDB held and the
// journal. This node loads that snapshot, finds the journal exactly as long, and carries on:
// the interrupted step runs again (its script passes on attempt 2), the finished one does not.
TEST_F(node_fixture, a_snapshot_written_by_the_previous_release_resumes) {
  const std::string fixtures = std::string(BERTH_SOURCE_DIR) + "/tests/fixtures/previous_release";
  const std::string id = "compat01";
  auto snapshot = fs::read_file(fixtures + "/compat01.snapshot.json");
  auto journal_text = fs::read_file(fixtures + "/compat01.journal.jsonl");
  ASSERT_TRUE(snapshot && journal_text);
  // The capture's clock moved to now (its one-hour session timeout would have passed): every
  // unix-ms time in the snapshot and every event's ts shift by the same amount, as if the node
  // had been killed a moment ago. Nothing else of the old bytes changes.
  const std::int64_t captured_ms = 1796325297394;  // the snapshot's updated_ms
  const std::int64_t shift = now_unix_ms() - 1000 - captured_ms;
  std::function<void(json::value&)> shift_times = [&](json::value& v) {
    if (v.is_array())
      for (auto& e : v.as_array()) shift_times(e);
    if (!v.is_object()) return;
    for (auto& [k, x] : v.as_object()) {
      if (k.size() > 3 && k.ends_with("_ms") && x.is_int() && x.as_int() > 1'000'000'000'000)
        x = json::value(x.as_int() + shift);
      else
        shift_times(x);
    }
  };
  auto snap_doc = json::parse(*snapshot);
  ASSERT_TRUE(snap_doc.ok());
  shift_times(*snap_doc);
  const std::string old_snapshot = snap_doc->dump();
  auto nj = json::parse(*fs::read_file(node->data_dir() + "/node.json"));
  ASSERT_TRUE(nj.ok());
  auto node_id = nj->get_string("node");
  node->signal(SIGKILL);  // its embedded nats-server stays up
  node->wait_exit();

  bus::client::options o;
  o.servers = {nj->get_string("nats_url")};
  auto c = bus::client::connect(o);
  ASSERT_TRUE(c.ok()) << c.err().message;
  bus::subjects names{"berth"};
  // The journal as the old node wrote it (same dedup ids and fence), and the start input.
  std::uint64_t seq = 0;
  std::string line;
  std::istringstream lines(*journal_text);
  std::int64_t n = 0;
  while (std::getline(lines, line)) {
    auto e = json::parse(line);
    ASSERT_TRUE(e.ok());
    // The stored envelope (without the CLI's "seq" cursor), keys in the order the node writes.
    json::value env = json::value::make_object();
    for (const char* k : {"session", "n", "type", "ts", "data"}) env.set(k, *e->find(k));
    env.set("ts", format_timestamp(parse_timestamp(e->get_string("ts")) + shift));
    if (++n == 1) {
      json::value start = json::value::make_object();
      start.set("type", "start");
      start.set("spec", *e->find("data")->find("spec"));
      ASSERT_TRUE((*c)->publish(names.input(id), start.dump()).ok());
    }
    bus::publish_options po;
    po.msg_id = id + ":" + std::to_string(n);
    po.expected_last_subject_seq = seq;
    auto ack = (*c)->publish(names.journal(id), env.dump(), po);
    ASSERT_TRUE(ack.ok()) << ack.err().message;
    seq = ack->seq;
  }
  ASSERT_EQ(n, 5);
  auto claim = (*c)->kv_create(names.bucket_owners(), id, node_id);
  ASSERT_TRUE(claim.ok()) << claim.err().message;
  ASSERT_EQ(*claim, 1u) << "the fixture's snapshot was written under epoch 1";
  {
    auto store = persistence::snapshot_store::open(node->data_dir() + "/snapshots");
    ASSERT_TRUE(store.ok()) << store.err().message;
    persistence::write_set w;
    w.sessions = {{id, old_snapshot}};
    ASSERT_TRUE((*store)->commit(w).ok());
  }
  node->start();
  ASSERT_TRUE(ends(id, "succeeded", std::chrono::seconds(60)))
      << node->log() << cli({"session", "events", id}).out;
  // Loaded from the old snapshot itself, not rebuilt from the journal.
  auto stats = cli({"stats", "-o", "json"}).json();
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->find("session_loads")->get_int("snapshot"), 1) << stats->dump();
  EXPECT_EQ(stats->find("session_loads")->get_int("folded"), 0) << stats->dump();
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  std::vector<std::string> seen = types(evs);
  ASSERT_GE(seen.size(), 5u);
  EXPECT_EQ(std::vector<std::string>(seen.begin(), seen.begin() + 5),
            (std::vector<std::string>{"session.accepted", "session.started", "step.started",
                                      "step.finished", "step.started"}));
  int first_runs = 0, second_runs = 0, interrupted = 0;
  for (const auto& e : evs) {
    auto step = e.find("data")->get_string("step");
    if (e.get_string("type") == "step.started") (step == "first" ? first_runs : second_runs)++;
    if (e.get_string("type") == "step.interrupted" && step == "second") ++interrupted;
  }
  EXPECT_EQ(first_runs, 1) << "a finished step never runs again";
  EXPECT_EQ(second_runs, 2);
  EXPECT_EQ(interrupted, 1);
  auto logs = cli({"session", "logs", id});
  EXPECT_NE(logs.out.find("resumed"), std::string::npos) << logs.out << logs.err;
}
