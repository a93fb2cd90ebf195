#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace berth {

/// A fixed set of threads for blocking work (synced RocksDB writes, JetStream round trips), so
/// that actors never block their scheduler threads. Jobs run in FIFO order across the pool.
class worker_pool {
 public:
  explicit worker_pool(std::size_t threads, std::string name = "berth-io");
  ~worker_pool();  ///< finishes queued jobs, then joins
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  /// Queue a job. Thread-safe. Jobs posted after shutdown() are dropped.
  void post(std::function<void()> job);
  /// Stop accepting jobs, run what is queued, join the threads. Idempotent.
  void shutdown();
  [[nodiscard]] std::size_t queued() const;
  /// While held, queued jobs wait (new ones are still accepted); release() lets them run.
  void hold();
  void release();

 private:
  void run();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
  bool held_ = false;
};

}  // namespace berth
