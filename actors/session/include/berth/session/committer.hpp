#pragma once

#include "berth/base/error.hpp"
#include "berth/bus/client.hpp"
#include "berth/persistence/snapshot_store.hpp"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace berth::session {

/// The commit point of every session transition, as a group commit: one thread takes every
/// commit queued while it was busy and writes all their snapshots in one synced RocksDB
/// WriteBatch, while each session's outbox is published to its journal asynchronously. A
/// session's events are published one after the other, each fenced on the stream sequence its
/// predecessor was acknowledged with; sessions do not wait for each other.
///
/// A commit reports when both its snapshot is synced and its events are acknowledged; only
/// then does the session act. The two run at the same time (a step costs one fsync or one
/// publish round trip, not both): a crash between them leaves either the snapshot ahead of the
/// journal (its outbox is published again) or the journal ahead of the snapshot (the load
/// folds the journal). A session has at most one commit in flight.
class committer {
 public:
  struct outcome {
    std::size_t published = 0;      ///< outbox events the journal acknowledged, in order
    std::uint64_t journal_seq = 0;  ///< stream sequence of the last acknowledged one
    std::optional<error> failure;   ///< set when the snapshot or a publish failed
  };
  struct request {
    std::string session;
    std::string snapshot;  ///< serialized snapshot, outbox included
    std::string subject;   ///< the session's journal subject
    /// (n, envelope): each published under journal_fence (journal_writer.hpp).
    std::vector<std::pair<std::int64_t, std::string>> events;
    std::uint64_t journal_seq = 0;  ///< stream sequence of the event before the first one
    /// Runs once, on the committer's or a nats.c thread: hand off only.
    std::function<void(outcome)> done;
  };

  committer(std::shared_ptr<persistence::snapshot_store> store, std::shared_ptr<bus::client> bus);
  ~committer();  ///< stop()
  committer(const committer&) = delete;
  committer& operator=(const committer&) = delete;

  /// Queue a commit. Thread-safe. After stop(), `done` gets an error at once.
  void submit(request r);
  /// Commit what is queued, wait up to `drain` for publishes in flight, join. Idempotent.
  void stop(millis drain = std::chrono::seconds(5));

  struct core;   ///< internal: what publish callbacks share with the committer
  struct chain;  ///< internal: one request on its way through the journal

 private:
  void run();

  std::shared_ptr<persistence::snapshot_store> store_;
  std::shared_ptr<bus::client> bus_;
  std::shared_ptr<core> core_;
  std::deque<request> queue_;  ///< guarded by core_->mu
  bool stopping_ = false;      ///< guarded by core_->mu
  std::thread thread_;
};

}  // namespace berth::session
