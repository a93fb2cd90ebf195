// Session programs end to end: step graphs, loops, retries of whole sessions, the dead-letter
// view, and an external agent written with the npm `nats` client driving a real node.
#include "harness.hpp"
#include "node_fixture.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/process.hpp"
#include "berth/base/time.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <map>
#include <set>

using namespace berth;

namespace {

struct graph_fixture : test::node_fixture {
  std::string nats_url() {
    return json::parse(*fs::read_file(node->data_dir() + "/node.json"))->get_string("nats_url");
  }

  std::vector<json::value> events_of(const std::string& id, const std::string& type) {
    std::vector<json::value> out;
    for (const auto& e : test::journal(*node, id))
      if (e.get_string("type") == type) out.push_back(e);
    return out;
  }

  bool has_event(const std::string& id, const std::string& type, const std::string& key,
                 const std::string& value) {
    for (const auto& e : events_of(id, type))
      if (e.find("data")->get_string(key) == value) return true;
    return false;
  }
};

std::int64_t ts_of(const json::value& e) {
  return parse_timestamp(e.get_string("ts"));
}

// The scripted agent of examples/agents, run with node.js against this node's NATS.
struct agent_run {
  std::future<result<process::captured>> done;
};

agent_run start_agent(const std::string& url, const std::string& session,
                      std::vector<std::string> extra = {}) {
  std::string dir = std::string(BERTH_SOURCE_DIR) + "/examples/agents";
  EXPECT_TRUE(std::filesystem::exists(dir + "/node_modules/nats"))
      << "run `npm ci --prefix examples/agents` (scripts/test does)";
  std::vector<std::string> argv = {
      "node", dir + "/scripted-agent.mjs", "--server", url, "--session", session};
  for (const auto& a : test::agent_fix_args()) argv.push_back(a);
  argv.insert(argv.end(), extra.begin(), extra.end());
  return agent_run{std::async(std::launch::async, [argv] {
    return process::run_capture(argv, "", std::chrono::seconds(120));
  })};
}

}  // namespace

TEST_F(graph_fixture, parallel_branches_overlap_in_time_and_join) {
  auto id = start(R"(
[session]
max_parallel = 3
[[steps]]
id = "a"
run = ["sleep", "1"]
needs = []
[[steps]]
id = "b"
run = ["sleep", "1"]
needs = []
[[steps]]
id = "c"
run = ["sleep", "1"]
needs = []
[[steps]]
id = "join"
run = ["true"]
needs = ["a", "b", "c"]
)");
  ASSERT_TRUE(ends(id, "succeeded"));
  std::int64_t last_start = 0, first_end = INT64_MAX, join_start = 0, branch_end = 0;
  for (const auto& e : test::journal(*node, id)) {
    auto step = e.find("data")->get_string("step");
    auto type = e.get_string("type");
    if (step == "join") {
      if (type == "step.started") join_start = ts_of(e);
      continue;
    }
    if (type == "step.started") last_start = std::max(last_start, ts_of(e));
    if (type == "step.finished") {
      first_end = std::min(first_end, ts_of(e));
      branch_end = std::max(branch_end, ts_of(e));
    }
  }
  // All three were running at once: the last one started before the first one finished.
  EXPECT_LT(last_start, first_end);
  EXPECT_GE(join_start, branch_end);
  EXPECT_EQ(test::journal_problems(test::journal(*node, id)), "");
}

TEST_F(graph_fixture, kill_9_in_the_middle_of_a_fan_out_finishes_each_step_exactly_once) {
  auto id = start(R"(
[session]
max_parallel = 4
[[steps]]
id = "root"
run = ["true"]
[[steps]]
id = "w1"
run = ["sh", "-c", "sleep 5; echo w1 >> ran"]
needs = ["root"]
[[steps]]
id = "w2"
run = ["sh", "-c", "sleep 5; echo w2 >> ran"]
needs = ["root"]
[[steps]]
id = "w3"
run = ["sh", "-c", "sleep 5; echo w3 >> ran"]
needs = ["root"]
[[steps]]
id = "join"
run = ["sh", "-c", "sort ran | tr '\n' ' '"]
needs = ["w1", "w2", "w3"]
)");
  ASSERT_TRUE(test::eventually([&] {
    std::set<std::string> started;
    for (const auto& e : events_of(id, "step.started"))
      started.insert(e.find("data")->get_string("step"));
    return started.count("w1") && started.count("w2") && started.count("w3");
  }));
  node->signal(SIGKILL);
  node->wait_exit();
  node->start();
  ASSERT_TRUE(ends(id, "succeeded"));
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  std::map<std::string, int> finished, interrupted;
  for (const auto& e : evs) {
    auto step = e.find("data")->get_string("step");
    if (e.get_string("type") == "step.finished") finished[step]++;
    if (e.get_string("type") == "step.interrupted") interrupted[step]++;
  }
  for (const char* s : {"root", "w1", "w2", "w3", "join"}) EXPECT_EQ(finished[s], 1) << s;
  for (const char* s : {"w1", "w2", "w3"}) EXPECT_EQ(interrupted[s], 1) << s;
}

TEST_F(graph_fixture, a_failure_skips_dependants_runs_its_handler_and_independent_branches) {
  auto id = start(R"(
[[steps]]
id = "test"
run = ["sh", "-c", "exit 1"]
[[steps]]
id = "after"
run = ["true"]
needs = ["test"]
[[steps]]
id = "fix"
run = ["true"]
needs = ["test"]
when = "failure"
[[steps]]
id = "other"
run = ["true"]
needs = []
)");
  ASSERT_TRUE(ends(id, "succeeded"));
  EXPECT_TRUE(has_event(id, "step.skipped", "step", "after"));
  EXPECT_TRUE(has_event(id, "step.finished", "step", "fix"));
  EXPECT_TRUE(has_event(id, "step.finished", "step", "other"));
  for (const auto& e : events_of(id, "step.skipped"))
    EXPECT_EQ(e.find("data")->get_string("reason"), "needs test, which failed");
}

TEST_F(graph_fixture, a_command_agent_that_rejects_sends_work_back_once_then_passes) {
  auto id = start(R"(
[[steps]]
id = "author"
run = ["sh", "-c", "echo draft >> work"]
[[steps]]
id = "review"
kind = "agent"
agent = { mode = "command", run = ["sh", "-c", "echo reviewing {step} loop $BERTH_LOOP; [ $(wc -l < work) -ge 2 ] || exit 3"] }
on_reject = { goto = "author", max_loops = 2 }
)");
  ASSERT_TRUE(ends(id, "succeeded"));
  EXPECT_EQ(events_of(id, "step.rejected").size(), 1u);
  int author_runs = 0;
  for (const auto& e : events_of(id, "step.finished"))
    author_runs += e.find("data")->get_string("step") == "author";
  EXPECT_EQ(author_runs, 2);
  auto logs = cli({"session", "logs", id, "--step", "review"});
  EXPECT_NE(logs.out.find("reviewing review loop 1"), std::string::npos) << logs.out;
}

TEST_F(graph_fixture, the_scripted_agent_fixes_the_failing_test_through_tool_calls) {
  auto id = start(test::agent_fix_workflow);
  auto agent = start_agent(nats_url(), id);
  auto out = agent.done.get();
  ASSERT_TRUE(out.ok()) << out.err().message;
  EXPECT_EQ(out->exit_code, 0) << out->out << out->err;
  ASSERT_TRUE(ends(id, "succeeded")) << test::session_field(*node, id, "reason");
  EXPECT_TRUE(has_event(id, "agent.waiting", "step", "fix"));
  EXPECT_TRUE(has_event(id, "step.finished", "step", "verify"));
  // Every call has one result, in order, and each ran once.
  std::map<std::string, int> results;
  for (const auto& e : events_of(id, "tool.result"))
    results[e.find("data")->get_string("call_id")]++;
  EXPECT_EQ(results.size(), 4u);  // exec (fails), read_file, edit, exec (passes)
  for (const auto& [call, n] : results) EXPECT_EQ(n, 1) << call;
  EXPECT_EQ(test::journal_problems(test::journal(*node, id)), "");
}

TEST_F(graph_fixture, the_agents_tool_calls_survive_a_node_kill_between_call_and_result) {
  auto id = start(test::agent_fix_workflow);
  auto agent = start_agent(nats_url(), id, {"--slow", "8"});
  // The first exec sleeps 8 s in the sandbox: kill the node while it runs (generous, so that a
  // slow machine still kills it mid-call).
  ASSERT_TRUE(test::eventually([&] { return has_event(id, "tool.call", "call_id", "fix-a1-1"); },
                               std::chrono::seconds(60)));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_FALSE(has_event(id, "tool.result", "call_id", "fix-a1-1"));
  node->signal(SIGKILL);
  node->wait_exit();
  node->start();
  auto out = agent.done.get();
  ASSERT_TRUE(out.ok()) << out.err().message;
  EXPECT_EQ(out->exit_code, 0) << out->out << out->err;
  ASSERT_TRUE(ends(id, "succeeded")) << test::session_field(*node, id, "reason");
  // The interrupted call was reported, never run again; the agent sent it anew.
  EXPECT_TRUE(has_event(id, "tool.interrupted", "call_id", "fix-a1-1"));
  EXPECT_FALSE(has_event(id, "tool.result", "call_id", "fix-a1-1"));
  EXPECT_TRUE(has_event(id, "tool.result", "call_id", "fix-a1-1-r1"));
  // The agent step kept waiting across the restart; it was not interrupted.
  EXPECT_FALSE(has_event(id, "step.interrupted", "step", "fix"));
  EXPECT_EQ(test::journal_problems(test::journal(*node, id)), "");
}

TEST_F(graph_fixture, a_duplicate_call_id_does_not_run_twice) {
  auto id = start(R"(
[[steps]]
id = "wait"
kind = "agent"
agent = { mode = "external", turn_timeout = "5m" }
)");
  ASSERT_TRUE(test::eventually([&] { return has_event(id, "agent.waiting", "step", "wait"); }));
  const std::string args = R"({"argv":["sh","-c","echo once >> count; wc -l < count"]})";
  auto first =
      cli({"session", "tool", id, "exec", "--args", args, "--call-id", "dup-1", "-o", "json"});
  ASSERT_EQ(first.code, 0) << first.err;
  auto second =
      cli({"session", "tool", id, "exec", "--args", args, "--call-id", "dup-1", "-o", "json"});
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_EQ(first.out, second.out);  // the journaled result, not a second run
  auto read =
      cli({"session", "tool", id, "read_file", "--args", R"({"path":"count"})", "-o", "json"});
  ASSERT_EQ(read.code, 0) << read.err;
  EXPECT_NE(read.out.find(R"("content":"once\n")"), std::string::npos) << read.out;
  EXPECT_EQ(events_of(id, "tool.call").size(), 2u);  // dup-1 and the read
  ASSERT_EQ(cli({"session", "cancel", id}).code, 0);
  ASSERT_TRUE(ends(id, "cancelled"));
}

TEST_F(graph_fixture, every_invalid_spec_is_refused_with_its_message_and_nothing_is_stored) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[[steps]]\nid = \"a\"\nrun = [\"x\"]\n[[steps]]\nid = \"a\"\nrun = [\"y\"]\n",
       "steps[1].id: duplicate step id \"a\""},
      {"[[steps]]\nid = \"a\"\nrun = [\"x\"]\nneeds = [\"ghost\"]\n",
       "steps[0].needs[0]: unknown step \"ghost\""},
      {"[[steps]]\nid = \"a\"\nrun = [\"x\"]\nneeds = [\"b\"]\n[[steps]]\nid = \"b\"\nrun = "
       "[\"x\"]\n",
       "the needs form a cycle: a -> b -> a"},
      {"[[steps]]\nid = \"a\"\nrun = [\"x\"]\n[[steps]]\nid = \"r\"\nkind = \"agent\"\nagent = { "
       "mode = \"external\" }\non_reject = { goto = \"nope\", max_loops = 2 }\n",
       "steps[1].on_reject.goto: unknown step \"nope\""},
      {"[[steps]]\nid = \"a\"\nrun = [\"x\"]\ntimeout = \"ten minutes\"\n",
       "steps[0].timeout: invalid duration"},
      {"[[steps]]\nid = \"a\"\nrun = []\n", "steps[0].run: must not be empty"},
      {"[[steps]]\nid = \"a\"\nkind = \"teleport\"\n", "steps[0].kind: must be one of"},
      {"[[steps]]\nid = \"a\"\nrun = [\"x\"]\n[[steps]]\nid = \"r\"\nkind = \"agent\"\nagent = { "
       "mode = \"external\" }\non_reject = { goto = \"a\" }\n",
       "steps[1].on_reject.max_loops: is required on a back edge"},
      {"[session]\ngoal = \"" + std::string(300 * 1024, 'x') +
           "\"\n[[steps]]\nid = \"a\"\nrun = "
           "[\"x\"]\n",
       "larger than the limit"},
  };
  for (const auto& [text, message] : cases) {
    auto r = cli({"session", "start", "--workflow", write_workflow(text)});
    EXPECT_NE(r.code, 0) << message;
    EXPECT_NE(r.err.find(message), std::string::npos) << "want: " << message << "\ngot: " << r.err;
  }
  auto list = cli({"session", "list", "-o", "json"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_TRUE(list.json()->find("sessions")->as_array().empty()) << list.out;
}

TEST_F(graph_fixture, failed_sessions_form_the_dead_letter_view_and_retry_links_a_new_run) {
  auto id = start(R"(
[session]
priority = 3
[[steps]]
id = "prepare"
run = ["true"]
[[steps]]
id = "check"
run = ["sh", "-c", "echo broken; exit 4"]
)");
  ASSERT_TRUE(ends(id, "failed"));
  auto ok = start("[session]\npriority = 8\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n");
  ASSERT_TRUE(ends(ok, "succeeded"));
  auto dead = cli({"session", "list", "--status", "failed", "-o", "json"});
  ASSERT_EQ(dead.code, 0) << dead.err;
  auto dj = dead.json();
  ASSERT_TRUE(dj.has_value()) << dead.out;
  const auto& rows = dj->find("sessions")->as_array();
  ASSERT_EQ(rows.size(), 1u) << dead.out;
  EXPECT_EQ(rows[0].get_string("id"), id);
  EXPECT_EQ(rows[0].get_string("failed_step"), "check");
  EXPECT_EQ(rows[0].get_string("reason"), "step check failed: exited with code 4");
  auto text = cli({"session", "list", "--status", "failed"});
  EXPECT_NE(text.out.find("check"), std::string::npos) << text.out;
  auto stats = cli({"stats", "-o", "json"});
  ASSERT_EQ(stats.code, 0) << stats.err;
  auto s = stats.json();
  ASSERT_TRUE(s.has_value()) << stats.out;
  EXPECT_EQ(s->find("by_priority")->find("3")->get_int("failed"), 1) << stats.out;
  EXPECT_EQ(s->find("by_priority")->find("8")->get_int("succeeded"), 1) << stats.out;
  EXPECT_EQ(s->find("sessions_by_status")->get_int("running"), 0) << stats.out;

  auto bad = cli({"session", "retry", id, "--from", "nope"});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("from: session " + id + " has no step \"nope\""), std::string::npos)
      << bad.err;
  auto retried = cli({"session", "retry", id, "--from", "check", "-o", "json"});
  ASSERT_EQ(retried.code, 0) << retried.err;
  auto again = retried.json()->get_string("id");
  ASSERT_NE(again, id);
  ASSERT_TRUE(ends(again, "failed"));
  EXPECT_EQ(test::session_field(*node, again, "retry_of"), id);
  EXPECT_TRUE(has_event(again, "step.skipped", "step", "prepare"));
  EXPECT_TRUE(has_event(again, "step.failed", "step", "check"));
}

TEST_F(graph_fixture, every_example_workflow_is_a_valid_graph) {
  int checked = 0;
  for (const auto& f :
       std::filesystem::directory_iterator(std::string(BERTH_SOURCE_DIR) + "/examples")) {
    if (f.path().extension() != ".toml") continue;
    auto r = cli({"session", "start", "--workflow", f.path().string(), "--repo",
                  "https://git.example.com/acme/app.git", "--dry-run"});
    EXPECT_EQ(r.code, 0) << f.path() << ": " << r.err;
    EXPECT_NE(r.out.find(": valid,"), std::string::npos) << r.out;
    ++checked;
  }
  EXPECT_GE(checked, 5);
  auto cycle = write_workflow(
      "[[steps]]\nid = \"a\"\nrun = [\"x\"]\nneeds = [\"b\"]\n[[steps]]\nid = \"b\"\nrun = "
      "[\"x\"]\n");
  auto r = cli({"session", "start", "--workflow", cycle, "--dry-run"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("the needs form a cycle: a -> b -> a"), std::string::npos) << r.err;
}
