#pragma once

#include "berth/base/error.hpp"

#include <nats/nats.h>

#include <string>

namespace berth::bus {

/// Translate a natsStatus / jsErrCode pair into a berth error, once, with nats.c's text.
/// `what` says what was being done ("publish to berth.ev.X").
error translate(natsStatus s, jsErrCode js, const std::string& what);

/// True for answers that mean "try again shortly" (no responders, JetStream not ready,
/// timeout during a leader election).
bool is_transient(natsStatus s, jsErrCode js);

}  // namespace berth::bus
