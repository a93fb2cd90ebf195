#include "berth/supervision/supervisor.hpp"

#include "berth/protocol/atoms.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

using namespace berth;
using namespace berth::supervision;

TEST(restart_tracker, backs_off_exponentially_and_gives_up_past_the_limit) {
  restart_tracker t({.max_restarts = 3,
                     .window = millis(10'000),
                     .initial_backoff = millis(100),
                     .max_backoff = millis(250)});
  auto d1 = t.on_failure(0);
  auto d2 = t.on_failure(1);
  auto d3 = t.on_failure(2);
  auto d4 = t.on_failure(3);
  EXPECT_TRUE(d1.restart);
  EXPECT_EQ(d1.delay, millis(100));
  EXPECT_EQ(d2.delay, millis(200));
  EXPECT_EQ(d3.delay, millis(250));  // capped
  EXPECT_FALSE(d4.restart);
}

TEST(restart_tracker, failures_outside_the_window_are_forgotten) {
  restart_tracker t({.max_restarts = 1, .window = millis(1000)});
  EXPECT_TRUE(t.on_failure(0).restart);
  EXPECT_FALSE(t.on_failure(500).restart);
  EXPECT_TRUE(t.on_failure(5000).restart);
}

namespace {
using crash_atom = caf::atom_constant<caf::atom("t_crash")>;

struct spawned {
  std::string key;
  std::string fail_reason;
  caf::actor handle;
};

// CAF 0.17 trips UBSan when spawning a function without arguments; give it one.
caf::behavior child(caf::event_based_actor* self, std::string) {
  return {[=](crash_atom) { self->quit(caf::make_error(caf::sec::runtime_error, "boom")); },
          [=](stop_atom) { self->quit(); }};
}

struct fixture : ::testing::Test {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  std::vector<spawned> log;

  void SetUp() override {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
  }
  void TearDown() override {
    for (auto& s : log) caf::anon_send_exit(s.handle, caf::exit_reason::kill);
    sched->run();
  }
  caf::actor make(restart_policy p) {
    return spawn_supervisor(
        *sys, p, [this](const std::string& key, const caf::message&, const std::string& reason) {
          auto h = sys->spawn(child, key);
          log.push_back({key, reason, h});
          return h;
        });
  }
  void settle() {
    for (int i = 0; i < 10; ++i) {
      sched->run();
      sched->trigger_timeouts();
    }
    sched->run();
  }
  caf::actor latest(const std::string& key) {
    for (auto it = log.rbegin(); it != log.rend(); ++it)
      if (it->key == key) return it->handle;
    return nullptr;
  }
  std::size_t spawns(const std::string& key) {
    std::size_t n = 0;
    for (auto& s : log) n += s.key == key;
    return n;
  }
};
}  // namespace

TEST_F(fixture, restarts_a_crashed_child_and_escalates_past_the_limit_leaving_siblings_alone) {
  auto sup = make({.max_restarts = 2, .window = millis(60'000), .initial_backoff = millis(10)});
  caf::anon_send(sup, spawn_atom::value, std::string("a"));
  caf::anon_send(sup, spawn_atom::value, std::string("b"));
  settle();
  ASSERT_EQ(spawns("a"), 1u);
  auto sibling = latest("b");
  for (int i = 0; i < 2; ++i) {
    caf::anon_send(latest("a"), crash_atom::value);
    settle();
  }
  EXPECT_EQ(spawns("a"), 3u);  // two restarts
  EXPECT_TRUE(log.back().fail_reason.empty());
  caf::anon_send(latest("a"), crash_atom::value);
  settle();
  ASSERT_EQ(spawns("a"), 4u);  // the escalation child
  EXPECT_NE(log.back().fail_reason.find("supervisor gave up after 3 failures"), std::string::npos)
      << log.back().fail_reason;
  EXPECT_EQ(spawns("b"), 1u);
  EXPECT_EQ(latest("b"), sibling);
}

TEST_F(fixture, a_normal_exit_is_not_restarted) {
  auto sup = make({});
  caf::anon_send(sup, spawn_atom::value, std::string("a"));
  settle();
  caf::anon_send(latest("a"), stop_atom::value);
  settle();
  EXPECT_EQ(spawns("a"), 1u);  // not restarted ...
  // ... and noticed: the key is free again, so a new spawn of it starts a child (while the
  // first ran, the same spawn was a no-op: spawn_is_idempotent_while_the_child_runs).
  caf::anon_send(sup, spawn_atom::value, std::string("a"));
  settle();
  EXPECT_EQ(spawns("a"), 2u);
  EXPECT_TRUE(log.back().fail_reason.empty());
}

TEST_F(fixture, spawn_is_idempotent_while_the_child_runs) {
  auto sup = make({});
  caf::anon_send(sup, spawn_atom::value, std::string("a"));
  caf::anon_send(sup, spawn_atom::value, std::string("a"));
  settle();
  EXPECT_EQ(spawns("a"), 1u);
}
