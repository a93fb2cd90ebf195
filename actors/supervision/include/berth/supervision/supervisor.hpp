#pragma once

#include "berth/base/time.hpp"

#include <caf/fwd.hpp>
#include <caf/message.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>

namespace berth::supervision {

/// Restart intensity: at most `max_restarts` restarts of one child within `window`; the
/// delays before restarts double from `initial_backoff` up to `max_backoff`.
struct restart_policy {
  int max_restarts = 3;
  millis window{std::chrono::seconds(60)};
  millis initial_backoff{std::chrono::milliseconds(200)};
  millis max_backoff{std::chrono::seconds(10)};
};

/// Counts one child's failures in a sliding window and says whether to restart it and after
/// how long. Plain and deterministic (the caller passes the time).
class restart_tracker {
 public:
  explicit restart_tracker(restart_policy p = {}) : policy_(p) {}
  struct decision {
    bool restart = false;
    millis delay{0};
    int failures_in_window = 0;
  };
  decision on_failure(std::int64_t now_ms);

 private:
  restart_policy policy_;
  std::deque<std::int64_t> failures_;
};

/// Makes a child for `key`. `args` is what the spawn message carried (e.g. a session's claim);
/// restarts and escalations pass an empty message, so a restarted child learns again what may
/// have changed while it was down. `fail_reason` non-empty asks for a child that only records
/// the escalation (e.g. a session that marks itself failed with that reason) and exits.
using child_factory = std::function<caf::actor(const std::string& key, const caf::message& args,
                                               const std::string& fail_reason)>;

/// Spawn a supervisor. It holds strong handles to its children, spawns them monitored,
/// restarts a child that exits abnormally under `policy`, and past the limit escalates by
/// spawning the child once more with a fail reason; siblings are never touched. A child that
/// exits with `caf::exit_reason::user_shutdown` (e.g. fenced: it lost ownership) is not
/// restarted.
///
/// Messages: (spawn_atom, key[, caf::message args]) starts a child unless one runs;
/// (stop_atom) forwards stop_atom to every child, waits until all are gone, replies
/// stopped_atom to the sender and exits.
caf::actor spawn_supervisor(
    caf::actor_system& sys, restart_policy policy, child_factory factory,
    std::function<void(const std::string& key, const std::string& what)> on_event = {});

}  // namespace berth::supervision
