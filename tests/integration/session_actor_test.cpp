// The session actor in this process: CAF's deterministic scheduler (the test decides when the
// actor runs), a real nats-server, RocksDB in a temp dir, the committer, and the real
// plain-process runner behind an observer that looks at the durable state the moment a command
// is about to start. The rule it checks: commit, then act — a step's process starts only after
// its step.started is in the journal and in the synced snapshot, and the next step only after
// the previous one's result is.
#include "berth/session/session_actor.hpp"

#include "harness.hpp"

#include "berth/base/time.hpp"
#include "berth/base/worker_pool.hpp"
#include "berth/bus/client.hpp"
#include "berth/core/events.hpp"
#include "berth/core/inputs.hpp"
#include "berth/persistence/snapshot_store.hpp"
#include "berth/sandbox/runner.hpp"
#include "berth/session/committer.hpp"
#include "berth/session/journal_writer.hpp"
#include "berth/session/runtime.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>

using namespace berth;
namespace ev = core::ev;

namespace {

// What the journal and the snapshot said when a command was about to start.
struct seen_at_start {
  std::string step;       ///< BERTH_STEP of the command
  std::string last_type;  ///< the journal's last event
  std::string last_step;  ///< its data.step
  std::int64_t journal_n = 0;
  std::int64_t snapshot_n = -1;
  std::string snapshot_step_status;  ///< the step's status in the snapshot
  std::vector<std::string> journal_types;
};

// The real plain-process runner; before each start it reads the durable state from outside
// the actor (its own NATS connection, the store) and records it.
class observing_runner : public sandbox::step_runner {
 public:
  observing_runner(std::unique_ptr<sandbox::step_runner> real, std::shared_ptr<bus::client> bus,
                   std::shared_ptr<persistence::snapshot_store> store, bus::subjects names)
      : real_(std::move(real)),
        bus_(std::move(bus)),
        store_(std::move(store)),
        names_(std::move(names)) {}

  sandbox::layout layout_of(const std::string& s) const override { return real_->layout_of(s); }
  std::string name() const override { return real_->name(); }

  result<std::unique_ptr<sandbox::running_command>> start(const sandbox::command& cmd,
                                                          sandbox::output_fn out) override {
    seen_at_start seen;
    auto step = cmd.env.find("BERTH_STEP");
    seen.step = step == cmd.env.end() ? std::string() : step->second;
    auto read = bus_->read_subject(
        names_.stream_ev(), names_.journal(cmd.session), 1, [&](bus::message& m) {
          auto e = json::parse(m.data);
          if (!e) return false;
          seen.journal_types.push_back(e->get_string("type"));
          seen.last_type = e->get_string("type");
          const auto* d = e->find("data");
          seen.last_step = d && d->is_object() ? d->get_string("step") : std::string();
          seen.journal_n = e->get_int("n");
          return true;
        });
    if (!read) seen.last_type = "unreadable: " + read.err().message;
    if (auto snap = store_->get_session(cmd.session); snap && snap->has_value()) {
      if (auto doc = json::parse(**snap)) {
        if (const auto* state = doc->find("state")) seen.snapshot_n = state->get_int("n");
        if (const auto* steps = doc->find("steps"); steps && steps->is_array())
          for (const auto& s : steps->as_array())
            if (s.get_string("id") == seen.step) seen.snapshot_step_status = s.get_string("status");
      }
    }
    {
      std::lock_guard lock(mu);
      starts.push_back(std::move(seen));
    }
    return real_->start(cmd, std::move(out));
  }

  std::mutex mu;
  std::vector<seen_at_start> starts;

 private:
  std::unique_ptr<sandbox::step_runner> real_;
  std::shared_ptr<bus::client> bus_;
  std::shared_ptr<persistence::snapshot_store> store_;
  bus::subjects names_;
};

struct session_actor_fixture : ::testing::Test {
  test::temp_dir dir;
  test::nats_server server{dir / "nats"};
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  std::shared_ptr<session::runtime> rt = std::make_shared<session::runtime>();
  std::shared_ptr<bus::client> observer;
  observing_runner* runner = nullptr;

  void SetUp() override {
    server.start();
    auto connect = [&](const std::string& name) {
      bus::client::options o;
      o.servers = {server.url()};
      o.name = name;
      o.send_asap = true;
      o.request_timeout = millis(5000);
      auto c = bus::client::connect(o);
      if (!c) throw std::runtime_error(c.err().message);
      return std::shared_ptr<bus::client>(std::move(*c));
    };
    rt->node_id = "node-test";
    rt->cfg = config::defaults();
    rt->names = bus::subjects("berth");
    rt->bus = connect("session-actor-test");
    observer = connect("observer");
    ASSERT_TRUE(rt->bus->provision(rt->names, {}).ok());
    auto store = persistence::snapshot_store::open(dir / "snapshots");
    ASSERT_TRUE(store.ok()) << store.err().message;
    rt->store = std::shared_ptr<persistence::snapshot_store>(std::move(*store));
    rt->work_root = dir / "work";
    rt->home_root = dir / "home";
    std::filesystem::create_directories(rt->work_root);
    std::filesystem::create_directories(rt->home_root);
    auto obs = std::make_shared<observing_runner>(
        sandbox::make_process_runner(rt->work_root, rt->home_root), observer, rt->store, rt->names);
    runner = obs.get();
    rt->runner = obs;
    rt->io = std::make_shared<worker_pool>(2);
    rt->launcher = std::make_shared<worker_pool>(1, "berth-launch");
    rt->commits = std::make_shared<session::committer>(rt->store, rt->bus);
    rt->started_ms = now_unix_ms();
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
  }

  // As the node stops: actors first, then the pools and the committer are joined here, so the
  // runtime is never released on one of their own threads.
  void TearDown() override {
    for (auto& a : rt->sessions.all()) caf::anon_send_exit(a, caf::exit_reason::kill);
    if (sched) sched->run();
    rt->io->shutdown();
    rt->launcher->shutdown();
    rt->commits->stop();
    if (sched) sched->run();
    sys.reset();
  }

  // What the API does for session.start, then what placement does: the start input, event 1,
  // the owner record, the placement snapshot; then the actor.
  caf::actor start(const std::string& id, const std::string& spec_json) {
    auto spec = json::parse(spec_json);
    EXPECT_TRUE(spec.ok());
    json::value input = json::value::make_object();
    input.set("type", core::input_types::start);
    input.set("spec", *spec);
    auto ack = rt->bus->publish(rt->names.input(id), input.dump());
    EXPECT_TRUE(ack.ok());
    core::event accepted;
    accepted.session = id;
    accepted.n = 1;
    accepted.type = ev::session_accepted;
    accepted.ts_ms = now_unix_ms();
    json::value data = json::value::make_object();
    data.set("spec", *spec);
    data.set("accepted_seq", ack->seq);
    data.set("timeout_ms", rt->cfg.session.default_timeout.count());
    accepted.data = std::move(data);
    EXPECT_TRUE(session::journal_writer::write_first(*rt->bus, rt->names.journal(id), accepted));
    auto epoch = rt->bus->kv_create(rt->names.bucket_owners(), id, rt->node_id);
    EXPECT_TRUE(epoch.ok());
    persistence::write_set w;
    w.sessions.emplace_back(id, session::placement_snapshot(rt->node_id, *epoch));
    EXPECT_TRUE(rt->store->commit(w).ok());
    return session::spawn_session(*sys, rt, id, session::claim{*epoch, -1}, "");
  }

  // Run the actor whenever something reached its mailbox, until `pred` holds.
  template <class Pred>
  bool run_until(Pred pred, std::chrono::seconds limit = std::chrono::seconds(30)) {
    return test::eventually(
        [&] {
          sched->run();
          sched->trigger_timeouts();
          sched->run();
          return pred();
        },
        limit);
  }

  std::string last_type(const std::string& id) {
    auto m = observer->last_message(rt->names.stream_ev(), rt->names.journal(id));
    if (!m || !m->has_value()) return {};
    auto e = json::parse((*m)->data);
    return e ? e->get_string("type") : std::string();
  }
};

}  // namespace

TEST_F(session_actor_fixture, a_step_starts_only_after_its_start_is_journaled_and_snapshotted) {
  const std::string id = "actor-order";
  start(id, R"({"steps":[{"id":"a","run":["sh","-c","exit 0"]},)"
            R"({"id":"b","run":["sh","-c","exit 0"]}]})");
  ASSERT_TRUE(run_until([&] { return core::is_terminal_event(last_type(id)); }))
      << "journal ends with " << last_type(id);
  EXPECT_EQ(last_type(id), ev::session_succeeded);
  std::lock_guard lock(runner->mu);
  ASSERT_EQ(runner->starts.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& s = runner->starts[i];
    SCOPED_TRACE("step " + s.step);
    EXPECT_EQ(s.step, i == 0 ? "a" : "b");
    // The journal's last event is this step's start: decided, published and acknowledged.
    EXPECT_EQ(s.last_type, ev::step_started);
    EXPECT_EQ(s.last_step, s.step);
    // The snapshot was synced with it: same event count, the step running.
    EXPECT_EQ(s.snapshot_n, s.journal_n);
    EXPECT_EQ(s.snapshot_step_status, "running");
  }
  // b's process started after a's result was durable.
  const auto& b = runner->starts[1].journal_types;
  auto finished_a = std::find(b.begin(), b.end(), ev::step_finished);
  EXPECT_NE(finished_a, b.end());
}
