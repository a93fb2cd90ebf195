#pragma once

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"

#include <vector>

namespace berth::sandbox::wire {

/// The node and the `berth-sandbox` helper inside a sandbox talk over one SOCK_SEQPACKET
/// socket: each message is one JSON object, optionally carrying file descriptors (pipes for a
/// command's stdio, memfds for file contents). A message too large for one packet travels in a
/// memfd and is read back transparently.
struct message {
  json::value body;
  std::vector<int> fds;  ///< owned by the receiver
};

/// Largest JSON sent inline; anything bigger goes through a memfd.
inline constexpr std::size_t max_inline = std::size_t{48} << 10;
/// Most descriptors one message may carry.
inline constexpr std::size_t max_fds = 4;

/// Send `body` with `fds` (which stay owned by the caller). Thread-safe per call only if the
/// caller serialises sends on the socket.
[[nodiscard]] status send(int sock, const json::value& body, const std::vector<int>& fds = {});

/// Receive one message; errc::unavailable when the peer closed the socket.
[[nodiscard]] result<message> receive(int sock);

/// A sealed-size memfd holding `data`, positioned at 0. The caller owns the descriptor.
[[nodiscard]] result<int> memfd_with(std::string_view data, const char* name = "berth");

/// Everything readable from `fd` from its current position, at most `limit` bytes (more is an
/// errc::too_large error naming `what`).
[[nodiscard]] result<std::string> read_all(int fd, std::size_t limit, const std::string& what);

}  // namespace berth::sandbox::wire
