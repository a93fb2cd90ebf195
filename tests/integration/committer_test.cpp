#include "berth/session/committer.hpp"

#include "bus_fixture.hpp"

#include "berth/base/json.hpp"
#include "berth/persistence/snapshot_store.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>

using namespace berth;

namespace {
struct committer_fixture : test::bus_fixture {
  std::shared_ptr<persistence::snapshot_store> store;
  std::unique_ptr<session::committer> commits;

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, session::committer::outcome> done;

  void SetUp() override {
    test::bus_fixture::SetUp();
    if (HasFatalFailure()) return;
    auto s = persistence::snapshot_store::open(dir / "db");
    ASSERT_TRUE(s.ok()) << s.err().message;
    store = std::move(*s);
    commits = std::make_unique<session::committer>(store, c);
  }

  session::committer::request make(const std::string& id, int first_n, int count,
                                   std::uint64_t seq) {
    session::committer::request r;
    r.session = id;
    r.snapshot = R"({"n":)" + std::to_string(first_n + count - 1) + "}";
    r.subject = names.journal(id);
    for (int n = first_n; n < first_n + count; ++n)
      r.events.emplace_back(n, R"({"n":)" + std::to_string(n) + "}");
    r.journal_seq = seq;
    r.done = [this, id](session::committer::outcome o) {
      std::lock_guard lock(mu);
      done[id] = std::move(o);
      cv.notify_all();
    };
    return r;
  }

  bool wait_for(std::size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(10), [&] { return done.size() >= n; });
  }

  std::vector<std::int64_t> journal_ns(const std::string& id) {
    std::vector<std::int64_t> out;
    auto st = c->read_subject(names.stream_ev(), names.journal(id), 1, [&](bus::message& m) {
      out.push_back(json::parse(m.data)->get_int("n"));
      return true;
    });
    EXPECT_TRUE(st.ok()) << st.err().message;
    return out;
  }
};
}  // namespace

TEST_F(committer_fixture, every_session_of_a_batch_is_snapshotted_then_journaled_in_order) {
  const int sessions = 40;
  for (int i = 0; i < sessions; ++i)
    commits->submit(make("s" + std::to_string(i), 1, 1 + i % 3, 0));
  ASSERT_TRUE(wait_for(sessions));
  for (int i = 0; i < sessions; ++i) {
    auto id = "s" + std::to_string(i);
    const auto& o = done[id];
    ASSERT_FALSE(o.failure) << id << ": " << o.failure->message;
    EXPECT_EQ(o.published, static_cast<std::size_t>(1 + i % 3));
    std::vector<std::int64_t> want;
    for (int n = 1; n <= 1 + i % 3; ++n) want.push_back(n);
    EXPECT_EQ(journal_ns(id), want) << id;
    auto last = c->last_message(names.stream_ev(), names.journal(id));
    ASSERT_TRUE(last.ok() && last->has_value());
    EXPECT_EQ(o.journal_seq, (*last)->seq);
    auto snap = store->get_session(id);
    ASSERT_TRUE(snap.ok() && snap->has_value());
    EXPECT_EQ(json::parse(**snap)->get_int("n"), i % 3 + 1);
  }
}

TEST_F(committer_fixture, a_stale_fence_fails_that_session_only_and_keeps_its_snapshot) {
  commits->submit(make("a", 1, 1, 0));
  ASSERT_TRUE(wait_for(1));
  auto a_seq = done["a"].journal_seq;
  done.clear();
  commits->submit(make("a", 2, 2, 0));  // a writer that has not seen event 1: fenced
  commits->submit(make("b", 1, 1, 0));
  ASSERT_TRUE(wait_for(2));
  ASSERT_TRUE(done["a"].failure);
  EXPECT_TRUE(done["a"].failure->is(errc::fenced)) << done["a"].failure->message;
  EXPECT_EQ(done["a"].published, 0u);
  EXPECT_EQ(done["a"].journal_seq, 0u);
  EXPECT_FALSE(done["b"].failure);
  EXPECT_EQ(journal_ns("a"), std::vector<std::int64_t>{1});
  // The snapshot was written before the publish (the commit point), so a restart republishes.
  EXPECT_EQ(json::parse(**store->get_session("a"))->get_int("n"), 3);
  // The retry with the right fence continues the chain.
  done.clear();
  commits->submit(make("a", 2, 2, a_seq));
  ASSERT_TRUE(wait_for(1));
  EXPECT_FALSE(done["a"].failure);
  EXPECT_EQ(journal_ns("a"), (std::vector<std::int64_t>{1, 2, 3}));
}

TEST_F(committer_fixture, a_commit_without_events_only_writes_the_snapshot) {
  commits->submit(make("quiet", 1, 0, 7));
  ASSERT_TRUE(wait_for(1));
  EXPECT_FALSE(done["quiet"].failure);
  EXPECT_EQ(done["quiet"].published, 0u);
  EXPECT_EQ(done["quiet"].journal_seq, 7u);
  EXPECT_TRUE(store->get_session("quiet")->has_value());
}

TEST_F(committer_fixture, after_stop_a_commit_is_refused_clearly_and_nothing_is_written) {
  commits->stop();
  commits->submit(make("late", 1, 1, 0));
  ASSERT_TRUE(wait_for(1));
  ASSERT_TRUE(done["late"].failure);
  EXPECT_TRUE(done["late"].failure->is(errc::cancelled));
  EXPECT_NE(done["late"].failure->message.find("stopping"), std::string::npos);
  EXPECT_FALSE(store->get_session("late")->has_value());
  EXPECT_TRUE(journal_ns("late").empty());
}
