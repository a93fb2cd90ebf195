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
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace berth::workspace {
class mirror_cache;
}
namespace berth::setup {
class cache_store;
}
namespace berth::lease {
class registry;
class vault;
}  // namespace berth::lease

namespace berth::session {

class committer;

/// Counters a node reports in `stats`. Updated by session actors, read by the API.
struct node_counters {
  std::atomic<std::int64_t> sessions{0};  ///< session actors alive on this node
  std::atomic<std::int64_t> steps_running{0};
  std::atomic<std::int64_t> steps_started{0};
  std::atomic<std::int64_t> sessions_finished{0};
  std::atomic<std::int64_t> restarts{0};
  std::atomic<std::int64_t> escalations{0};
  std::atomic<std::int64_t> lease_revoke_failures{0};  ///< attempts that failed (alarm)
  /// How session actors loaded their state: the snapshot as it was (no journal read), the
  /// snapshot reconciled with the journal's tail, or the journal folded from event 1 (new
  /// sessions, takeovers, a journal ahead of its snapshot, escalations).
  std::atomic<std::int64_t> loads_snapshot{0};
  std::atomic<std::int64_t> loads_reconciled{0};
  std::atomic<std::int64_t> loads_folded{0};
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

/// After a restart, step processes wait until every resumed session has journaled its recovery
/// (`step.interrupted`, republished outbox events), or until a deadline: bringing every
/// session's durable state up to date first keeps a thousand process starts from competing with
/// the recovery for the CPU. Thread-safe.
class resume_barrier {
 public:
  /// Hold `launcher` until every id in `ids` has settled or `deadline_ms` (unix ms) has passed.
  /// `on_open(sessions, late)` runs once when the barrier opens (on the settling thread).
  void arm(std::shared_ptr<worker_pool> launcher, std::vector<std::string> ids,
           std::int64_t deadline_ms,
           std::function<void(std::size_t sessions, std::size_t late)> on_open = {}) {
    std::lock_guard lock(mu_);
    if (ids.empty()) return;
    on_open_ = std::move(on_open);
    armed_ = ids.size();
    launcher_ = std::move(launcher);
    holding_.store(true, std::memory_order_release);
    pending_.insert(ids.begin(), ids.end());
    deadline_ms_ = deadline_ms;
    launcher_->hold();
  }
  /// `id` has journaled its recovery (or is gone). Idempotent; unknown ids are ignored.
  void settle(const std::string& id) {
    if (!holding_.load(std::memory_order_acquire)) return;  // every commit calls this: stay cheap
    std::lock_guard lock(mu_);
    if (pending_.erase(id) > 0 && pending_.empty()) open_locked(0);
  }
  /// Open the barrier if its deadline has passed; returns how many sessions had not settled.
  std::size_t expire(std::int64_t now_ms) {
    std::lock_guard lock(mu_);
    if (!launcher_ || now_ms < deadline_ms_) return 0;
    auto left = pending_.size();
    pending_.clear();
    open_locked(left);
    return left;
  }
  /// Open now without reporting (the node is stopping: held launches must run so that their
  /// sessions can stop them).
  void abandon() {
    std::lock_guard lock(mu_);
    pending_.clear();
    on_open_ = nullptr;
    open_locked(0);
  }

 private:
  void open_locked(std::size_t late) {
    holding_.store(false, std::memory_order_release);
    if (launcher_) launcher_->release();
    launcher_.reset();
    if (auto f = std::exchange(on_open_, nullptr)) f(armed_, late);
  }
  std::function<void(std::size_t, std::size_t)> on_open_;
  std::size_t armed_ = 0;
  std::mutex mu_;
  std::set<std::string> pending_;
  std::shared_ptr<worker_pool> launcher_;
  std::atomic<bool> holding_{false};  ///< armed and not yet open
  std::int64_t deadline_ms_ = 0;
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
  std::shared_ptr<committer> commits;     ///< group commit of every transition (committer.hpp)
  std::shared_ptr<worker_pool> launcher;  ///< bounded: starts step processes (no spawn storms)
  std::string work_root;                  ///< <data_dir>/work: one directory per session
  std::string home_root;                  ///< <data_dir>/home: each session's $HOME
  /// Mirrors of remote repositories (<data_dir>/mirrors), credential providers by URL prefix,
  /// and the vault of live leases (<data_dir>/leases). Null in unit tests without workspaces.
  std::shared_ptr<workspace::mirror_cache> mirrors;
  std::shared_ptr<lease::registry> credentials;
  std::shared_ptr<lease::vault> leases;
  /// The node's dependency cache (setup/cache.hpp); null when `[cache] enabled = false`.
  std::shared_ptr<setup::cache_store> cache;
  /// The owner of session workspaces (the sandbox user); -1: the node's own user.
  int ws_uid = -1;
  int ws_gid = -1;
  session_registry sessions;
  resume_barrier resume;
  std::int64_t started_ms = 0;
  node_counters counters;
};

}  // namespace berth::session
