#include "berth/base/worker_pool.hpp"

#include "berth/session/runtime.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

using namespace berth;
using namespace std::chrono_literals;

namespace {
bool eventually(const std::function<bool()>& f) {
  for (int i = 0; i < 500; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return f();
}
}  // namespace

TEST(worker_pool, a_held_pool_queues_jobs_until_released) {
  worker_pool pool(2, "test");
  std::atomic<int> ran{0};
  pool.hold();
  for (int i = 0; i < 5; ++i) pool.post([&] { ++ran; });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(ran.load(), 0);
  EXPECT_EQ(pool.queued(), 5u);
  pool.release();
  EXPECT_TRUE(eventually([&] { return ran.load() == 5; }));
}

TEST(worker_pool, shutdown_runs_what_a_held_pool_queued) {
  std::atomic<int> ran{0};
  {
    worker_pool pool(1, "test");
    pool.hold();
    pool.post([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 1);
}

TEST(resume_barrier, opens_when_every_resumed_session_settled) {
  auto pool = std::make_shared<worker_pool>(1, "test");
  std::atomic<int> ran{0};
  session::resume_barrier b;
  std::vector<std::pair<std::size_t, std::size_t>> opened;
  b.arm(pool, {"a", "b"}, std::numeric_limits<std::int64_t>::max(),
        [&](std::size_t n, std::size_t late) { opened.emplace_back(n, late); });
  pool->post([&] { ++ran; });
  b.settle("a");
  b.settle("a");        // idempotent
  b.settle("unknown");  // ignored
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(ran.load(), 0);
  EXPECT_TRUE(opened.empty());
  b.settle("b");
  EXPECT_TRUE(eventually([&] { return ran.load() == 1; }));
  EXPECT_EQ(opened, (std::vector<std::pair<std::size_t, std::size_t>>{{2, 0}}));
}

TEST(resume_barrier, opens_at_its_deadline_and_reports_who_was_late) {
  auto pool = std::make_shared<worker_pool>(1, "test");
  std::atomic<int> ran{0};
  session::resume_barrier b;
  std::vector<std::pair<std::size_t, std::size_t>> opened;
  b.arm(pool, {"a", "b", "c"}, 1000,
        [&](std::size_t n, std::size_t late) { opened.emplace_back(n, late); });
  pool->post([&] { ++ran; });
  b.settle("a");
  EXPECT_EQ(b.expire(999), 0u);
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(ran.load(), 0);
  EXPECT_EQ(b.expire(1000), 2u);
  EXPECT_TRUE(eventually([&] { return ran.load() == 1; }));
  EXPECT_EQ(b.expire(5000), 0u);  // already open
  b.settle("b");                  // late, and harmless
  EXPECT_EQ(opened, (std::vector<std::pair<std::size_t, std::size_t>>{{3, 2}}));
}

TEST(resume_barrier, nothing_to_resume_holds_nothing) {
  auto pool = std::make_shared<worker_pool>(1, "test");
  std::atomic<int> ran{0};
  session::resume_barrier b;
  b.arm(pool, {}, std::numeric_limits<std::int64_t>::max());
  pool->post([&] { ++ran; });
  EXPECT_TRUE(eventually([&] { return ran.load() == 1; }));
}

TEST(resume_barrier, abandon_opens_at_once_without_reporting) {
  auto pool = std::make_shared<worker_pool>(1, "test");
  std::atomic<int> ran{0};
  int reports = 0;
  session::resume_barrier b;
  b.arm(pool, {"a"}, std::numeric_limits<std::int64_t>::max(),
        [&](std::size_t, std::size_t) { ++reports; });
  pool->post([&] { ++ran; });
  b.abandon();
  EXPECT_TRUE(eventually([&] { return ran.load() == 1; }));
  b.settle("a");
  EXPECT_EQ(reports, 0);
}
