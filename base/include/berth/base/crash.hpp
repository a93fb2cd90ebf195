#pragma once

#include <string_view>

namespace berth {

/// Deterministic crash points for tests: when the environment variable BERTH_CRASH_AT names
/// `point` (e.g. "after_snapshot", "after_publish", "before_ack"), the process aborts there.
/// BERTH_CRASH_AFTER=N lets the point pass N times first. Costs one branch when unset.
void crash_point(std::string_view point);

/// Whether BERTH_CRASH_AT names `point`: a test wants the process to die there, so the code may
/// first bring about the state that point is about (e.g. wait for publishes to land).
[[nodiscard]] bool crash_armed(std::string_view point);

}  // namespace berth
