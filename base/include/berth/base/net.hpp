#pragma once

#include "berth/base/time.hpp"

namespace berth::net {

/// A TCP port on 127.0.0.1 that was free a moment ago (for a child that cannot report the port
/// it bound, such as lighttpd); -1 on failure.
[[nodiscard]] int free_loopback_port();

/// Whether something accepts connections on 127.0.0.1:`port` within `timeout`.
[[nodiscard]] bool wait_listening(int port, millis timeout);

}  // namespace berth::net
