#pragma once

#include "berth/base/worker_pool.hpp"
#include "berth/bus/client.hpp"
#include "berth/bus/subjects.hpp"
#include "berth/config/config.hpp"
#include "berth/persistence/snapshot_store.hpp"
#include "berth/sandbox/runner.hpp"

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace berth::session {

/// Counters a node reports in `stats`. Updated by session actors, read by the API.
struct node_counters {
  std::atomic<std::int64_t> sessions{0};  ///< session actors alive on this node
  std::atomic<std::int64_t> steps_running{0};
  std::atomic<std::int64_t> steps_started{0};
  std::atomic<std::int64_t> sessions_finished{0};
  std::atomic<std::int64_t> restarts{0};
  std::atomic<std::int64_t> escalations{0};
};

/// The session actors alive on this node, by session id: lets a nats.c callback hand an input
/// straight to its session. Thread-safe.
class session_registry {
 public:
  void add(const std::string& id, caf::actor a) {
    std::lock_guard lock(mu_);
    actors_[id] = std::move(a);
  }
  void remove(const std::string& id, const caf::actor_addr& a) {
    std::lock_guard lock(mu_);
    auto it = actors_.find(id);
    if (it != actors_.end() && it->second.address() == a) actors_.erase(it);
  }
  [[nodiscard]] caf::actor find(const std::string& id) const {
    std::lock_guard lock(mu_);
    auto it = actors_.find(id);
    return it == actors_.end() ? caf::actor() : it->second;
  }
  [[nodiscard]] std::vector<caf::actor> all() const {
    std::lock_guard lock(mu_);
    std::vector<caf::actor> out;
    for (const auto& [_, a] : actors_) out.push_back(a);
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, caf::actor> actors_;
};

/// What every actor of a node shares: the plain mechanisms it wraps. Owned by the node; lives
/// longer than every actor (the node joins the actor system before destroying it).
struct runtime {
  std::string node_id;
  config::config cfg;
  bus::subjects names;
  std::shared_ptr<bus::client> bus;
  std::shared_ptr<persistence::snapshot_store> store;
  std::shared_ptr<sandbox::step_runner> runner;
  std::shared_ptr<worker_pool> io;
  std::shared_ptr<worker_pool> launcher;  ///< bounded: starts step processes (no spawn storms)
  std::string work_root;                  ///< <data_dir>/work: one directory per session
  /// Sessions whose claim the start-up scan confirmed in one bulk read; their load skips the
  /// per-session owner lookup. Guarded by `verified_mu`.
  std::mutex verified_mu;
  std::set<std::string> verified_owned;
  session_registry sessions;
  std::int64_t started_ms = 0;
  node_counters counters;
};

}  // namespace berth::session
