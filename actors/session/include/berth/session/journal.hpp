#pragma once

#include "berth/base/error.hpp"
#include "berth/bus/client.hpp"
#include "berth/core/machine.hpp"

#include <cstdint>
#include <string>
#include <utility>

namespace berth::session {

/// A session's state rebuilt from its whole journal, and the stream sequence of its last
/// message (0: empty journal). Malformed events are errc::corrupt; an event number seen twice
/// (a repeat past the de-duplication window) is skipped with a warning. Blocking: call from an
/// I/O thread. Used by the session actor (takeover, escalation) and the API (session.get).
[[nodiscard]] result<std::pair<core::machine, std::uint64_t>> fold_journal(
    bus::client& bus, const bus::subjects& names, const std::string& id,
    std::int64_t default_timeout_ms);

}  // namespace berth::session
