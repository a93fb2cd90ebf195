#pragma once

#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace berth::session {

struct runtime;

/// Spawn the actor that owns one session on this node. It loads the snapshot (or folds the
/// journal when there is none), reconciles the outbox with the journal tail, marks a step that
/// was running as interrupted, and carries on. `fail_reason` non-empty: the supervisor gave up
/// restarting it, and the actor only records `session.failed` with that reason and finishes.
///
/// The owner epoch comes from the snapshot the placement wrote.
/// Messages it takes: input_atom (an input pushed with its stream sequence), wake_atom (re-read
/// inputs from its cursor, e.g. after a reconnect), stop_atom (graceful node stop).
/// It exits normally when the session is terminal and cleaned up, or when stopped.
caf::actor spawn_session(caf::actor_system& sys, std::shared_ptr<runtime> rt, std::string id,
                         std::string fail_reason);

/// The JSON stored in RocksDB for a session that was placed but has not run yet.
std::string placement_snapshot(const std::string& node, std::uint64_t epoch);

}  // namespace berth::session
