#include "berth/session/committer.hpp"

#include "berth/base/crash.hpp"
#include "berth/session/journal_writer.hpp"

#include <pthread.h>

#include <atomic>

namespace berth::session {

// Publish callbacks run on nats.c's threads and may outlive the committer (a publish still in
// flight when stop() gave up waiting): they hold this, never the committer. The bus client
// owns the callbacks, so `bus` is alive whenever one runs.
struct committer::core {
  bus::client* bus = nullptr;
  std::mutex mu;
  std::condition_variable cv;
  std::size_t in_flight = 0;  ///< chains not finished yet
};

struct committer::chain {
  std::shared_ptr<core> shared;
  request req;
  std::size_t next = 0;
  // The snapshot write and the publishes run at the same time; `done` runs when both ended.
  std::atomic<int> parts{2};
  std::optional<error> sync_failure;     // set before its part arrives
  std::optional<error> publish_failure;  // likewise
  std::atomic<bool> published{false};    // the publish part has arrived
};

namespace {

void finish(const std::shared_ptr<committer::chain>& c, std::optional<error> failure);

// Publish the chain's next event, fenced on its predecessor's sequence; the ack continues it.
void publish_next(const std::shared_ptr<committer::chain>& c) {
  if (c->next == c->req.events.size()) {
    if (!c->req.events.empty()) crash_point("after_publish");
    finish(c, std::nullopt);
    return;
  }
  const auto& [n, payload] = c->req.events[c->next];
  auto po = journal_fence(c->req.session, n, c->req.journal_seq);
  auto st =
      c->shared->bus->publish_async(c->req.subject, payload, po, [c](result<bus::pub_ack> ack) {
        if (!ack) {
          finish(c, ack.err());
          return;
        }
        c->req.journal_seq = ack->seq;
        ++c->next;
        publish_next(c);
      });
  if (!st) finish(c, st.err());
}

// One part of a chain ended (its publishes, or the batch's snapshot write); the last one
// reports: published counts what the journal has even when the snapshot failed, so the
// session neither loses nor repeats an event when it commits again.
void arrive(const std::shared_ptr<committer::chain>& c) {
  if (c->parts.fetch_sub(1) != 1) return;
  auto failure = c->publish_failure ? std::move(c->publish_failure) : std::move(c->sync_failure);
  auto done = std::move(c->req.done);
  done(committer::outcome{c->next, c->req.journal_seq, std::move(failure)});
  auto& k = *c->shared;
  std::lock_guard lock(k.mu);
  if (--k.in_flight == 0) k.cv.notify_all();
}

void finish(const std::shared_ptr<committer::chain>& c, std::optional<error> failure) {
  c->publish_failure = std::move(failure);
  c->published = true;
  arrive(c);
}

}  // namespace

committer::committer(std::shared_ptr<persistence::snapshot_store> store,
                     std::shared_ptr<bus::client> bus)
    : store_(std::move(store)), bus_(std::move(bus)), core_(std::make_shared<core>()) {
  core_->bus = bus_.get();
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "berth-commit");
}

committer::~committer() {
  stop();
}

void committer::submit(request r) {
  {
    std::lock_guard lock(core_->mu);
    if (!stopping_) {
      queue_.push_back(std::move(r));
      core_->cv.notify_all();
      return;
    }
  }
  r.done(outcome{0, r.journal_seq, error{errc::cancelled, "the node is stopping"}});
}

void committer::stop(millis drain) {
  {
    std::lock_guard lock(core_->mu);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  core_->cv.notify_all();
  if (thread_.joinable()) thread_.join();
  std::unique_lock lock(core_->mu);
  core_->cv.wait_for(lock, drain, [&] { return core_->in_flight == 0; });
}

void committer::run() {
  for (;;) {
    std::vector<std::shared_ptr<chain>> batch;
    {
      std::unique_lock lock(core_->mu);
      core_->cv.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      batch.reserve(queue_.size());
      for (auto& r : queue_) {
        auto c = std::make_shared<chain>();
        c->shared = core_;
        c->req = std::move(r);
        batch.push_back(std::move(c));
      }
      queue_.clear();
      core_->in_flight += batch.size();
    }
    // The journal publishes start first and run while the batch is synced: a session acts
    // only when both ended, so neither waits for the other. One synced batch for every session
    // in it. A crash in between leaves the journal ahead of the snapshot, which the next load
    // sees and folds (session_actor.cpp, load_job).
    persistence::write_set w;
    w.sessions.reserve(batch.size());
    for (auto& c : batch) w.sessions.emplace_back(c->req.session, std::move(c->req.snapshot));
    for (auto& c : batch) publish_next(c);
    if (crash_armed("before_sync")) {
      // Chaos tests: the publishes land first, then the node dies before the fsync, leaving the
      // journal ahead of the snapshot (one order the two parts may end in).
      for (auto& c : batch)
        while (!c->published) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      crash_point("before_sync");
    }
    auto st = store_->commit(w);
    if (st) crash_point("after_snapshot");
    for (auto& c : batch) {
      if (!st) c->sync_failure = st.err();
      arrive(c);
    }
  }
}

}  // namespace berth::session
