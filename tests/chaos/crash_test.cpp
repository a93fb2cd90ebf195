#include "harness.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <random>
#include <set>

using namespace berth;
using test::run_berth;

namespace {

// Eight steps of random short length: long enough that inputs sent at start arrive while the
// session runs, short enough that kills land during steps, between steps and during commits.
std::string chaos_workflow() {
  std::string wf;
  for (int i = 0; i < 8; ++i)
    wf += "[[steps]]\nid = \"s" + std::to_string(i) +
          "\"\nrun = [\"sh\", \"-c\", \"sleep 0.$(( $(od -An -N1 -tu1 /dev/urandom) % 3 ))$(( $(od "
          "-An -N1 -tu1 "
          "/dev/urandom) % 10 ))\"]\n";
  return wf;
}

struct started {
  std::string id;
  std::vector<std::int64_t> inputs;  // input sequences the API accepted
};

std::int64_t send_input(const test::node_process& node, const std::string& id, int k) {
  auto r = run_berth({"--data-dir", node.data_dir(), "session", "input", id, "--data",
                      std::to_string(k), "-o", "json"});
  auto v = r.json();
  return r.code == 0 && v ? v->get_int("input_seq") : 0;
}

std::string status_of(const test::node_process& node, const std::string& id) {
  auto r = run_berth({"--data-dir", node.data_dir(), "session", "show", id, "-o", "json"});
  auto v = r.json();
  return v ? v->get_string("status") : std::string();
}

void check_all(const test::node_process& node, const std::vector<started>& sessions) {
  for (const auto& s : sessions) {
    ASSERT_TRUE(test::eventually([&] { return status_of(node, s.id) == "succeeded"; },
                                 std::chrono::seconds(120)))
        << s.id << " is " << status_of(node, s.id) << "\n"
        << node.log();
    auto evs = test::journal(node, s.id);
    EXPECT_EQ(test::journal_problems(evs), "") << s.id;
    std::set<std::int64_t> applied;
    for (const auto& e : evs)
      if (e.get_string("type") == "input.applied")
        applied.insert(e.find("data")->get_int("input_seq"));
    for (auto seq : s.inputs)
      EXPECT_TRUE(applied.count(seq)) << s.id << ": input " << seq << " lost";
  }
}

}  // namespace

TEST(chaos, twenty_plus_random_sigkills_lose_nothing_and_repeat_nothing) {
  test::temp_dir dir;
  test::node_process node(dir / "node");
  node.start();
  auto wf = dir / "chaos.toml";
  test::write_file(wf, chaos_workflow());
  std::mt19937 rng(std::random_device{}());
  std::vector<started> sessions;
  auto add_sessions = [&](int n) {
    for (int i = 0; i < n; ++i) {
      started s;
      s.id = test::start_session(node, wf);
      ASSERT_FALSE(s.id.empty());
      for (int k = 0; k < 2; ++k)
        if (auto seq = send_input(node, s.id, k)) s.inputs.push_back(seq);
      ASSERT_EQ(s.inputs.size(), 2u) << s.id << ": the API refused an input";
      sessions.push_back(s);
    }
  };
  add_sessions(4);
  const int kills = 22;
  for (int k = 0; k < kills; ++k) {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 900)(rng)));
    node.signal(SIGKILL);
    ASSERT_NE(node.wait_exit(), -1);
    node.start();
    if (k % 5 == 0) add_sessions(1);
  }
  check_all(node, sessions);
  int interrupted = 0;
  for (const auto& s : sessions)
    for (const auto& e : test::journal(node, s.id))
      interrupted += e.get_string("type") == "step.interrupted";
  // Kills landed while steps ran (else the test would only prove idle restarts).
  EXPECT_GT(interrupted, 0);
  RecordProperty("interrupted_steps", interrupted);
  RecordProperty("kills", kills);
}

class crash_point : public ::testing::TestWithParam<std::pair<std::string, int>> {};

TEST_P(crash_point, the_node_aborts_there_and_the_restart_completes_the_session) {
  auto [point, after] = GetParam();
  test::temp_dir dir;
  auto wf = dir / "wf.toml";
  test::write_file(
      wf,
      "[[steps]]\nid = \"a\"\nrun = [\"true\"]\n[[steps]]\nid = \"b\"\nrun = [\"true\"]\n"
      "[[steps]]\nid = \"c\"\nrun = [\"true\"]\n");
  std::string id;
  {
    test::node_process crashing(
        dir / "node", {},
        {{"BERTH_CRASH_AT", point}, {"BERTH_CRASH_AFTER", std::to_string(after)}});
    crashing.start();
    id = test::start_session(crashing, wf);
    ASSERT_FALSE(id.empty());
    int st = crashing.wait_exit(std::chrono::seconds(60));
    ASSERT_TRUE(WIFEXITED(st)) << crashing.log();
    EXPECT_EQ(WEXITSTATUS(st), 134);
    EXPECT_NE(crashing.log().find("BERTH_CRASH_AT=" + point + " reached"), std::string::npos);
  }
  test::node_process node(dir / "node");
  node.start();
  check_all(node, {started{id, {}}});
  // Killed after its events were journaled but before their snapshot was synced: the restart
  // found the journal ahead of its snapshot and rebuilt the session from the journal.
  if (point == "before_sync" && after > 0) {
    EXPECT_NE(node.log().find("is ahead of the snapshot"), std::string::npos) << node.log();
  }
}

INSTANTIATE_TEST_SUITE_P(named, crash_point,
                         ::testing::Values(std::make_pair(std::string("after_snapshot"), 0),
                                           std::make_pair(std::string("after_snapshot"), 3),
                                           std::make_pair(std::string("after_publish"), 0),
                                           std::make_pair(std::string("after_publish"), 2),
                                           std::make_pair(std::string("before_ack"), 0),
                                           std::make_pair(std::string("before_sync"), 0),
                                           std::make_pair(std::string("before_sync"), 2)),
                         [](const auto& info) {
                           return info.param.first + "_" + std::to_string(info.param.second);
                         });
