#pragma once

#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace berth::session {

struct runtime;

/// What placement (or the node's start-up scan) knows when it hands a session to this node, so
/// the session does not learn it again.
struct claim {
  /// The revision of this node's record in the owners bucket: the owner's epoch, journaled in
  /// session.started. 0: not known or not verified — the session reads its owner record.
  std::uint64_t epoch = 0;
  /// The journal's length from the start-up scan; -1: unknown. When the snapshot is exactly
  /// that far and has nothing to publish, the session resumes without reading the journal.
  std::int64_t journal_length = -1;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, claim& x) {
  return f(caf::meta::type_name("claim"), x.epoch, x.journal_length);
}

/// Spawn the actor that owns one session on this node. It loads the snapshot (or folds the
/// journal when there is none), reconciles the outbox with the journal tail, marks a step that
/// was running as interrupted, and carries on. `fail_reason` non-empty: the supervisor gave up
/// restarting it, and the actor only records `session.failed` with that reason and finishes.
///
/// Messages it takes: input_atom (an input pushed with its stream sequence), wake_atom (re-read
/// inputs from its cursor, e.g. after a reconnect), stop_atom (graceful node stop).
/// It exits normally when the session is terminal and cleaned up, or when stopped; with
/// `user_shutdown` when it finds it lost ownership (fenced).
caf::actor spawn_session(caf::actor_system& sys, std::shared_ptr<runtime> rt, std::string id,
                         claim owner, std::string fail_reason);

/// The JSON stored in RocksDB for a session that was placed but has not run yet: what makes a
/// restarted node resume it.
std::string placement_snapshot(const std::string& node, std::uint64_t epoch);

}  // namespace berth::session
