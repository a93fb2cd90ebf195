#pragma once

// Many WebSocket clients of one gateway, for `berth bench gateway` (Beast stays in src/). Each
// authenticates with a token, may subscribe to one topic, and counts the items it receives; an
// item whose data carries "sent_ns" (CLOCK_MONOTONIC nanoseconds, same machine) gives its
// publish-to-socket latency.

#include "berth/base/error.hpp"
#include "berth/base/time.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace berth::gateway {

class ws_fleet {
 public:
  /// Open `n` authenticated WebSockets to `url` ("http://host:port").
  [[nodiscard]] static result<std::unique_ptr<ws_fleet>> open(const std::string& url,
                                                              const std::string& token,
                                                              std::size_t n);
  ~ws_fleet();
  ws_fleet(const ws_fleet&) = delete;
  ws_fleet& operator=(const ws_fleet&) = delete;

  /// Subscribe every socket to `topic` after sequence `since`; waits for every ack.
  [[nodiscard]] status subscribe(const std::string& topic, std::uint64_t since, millis timeout);
  /// Wait until every socket has received `items` items since the last reset; false on timeout.
  [[nodiscard]] bool wait_items(std::size_t items, millis timeout);
  /// The latencies (µs) of items with "sent_ns" since the last reset, and start counting anew.
  [[nodiscard]] std::vector<double> take_latencies();
  void reset();
  [[nodiscard]] std::size_t size() const;

  struct impl;

 private:
  explicit ws_fleet(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

/// CLOCK_MONOTONIC in nanoseconds (what "sent_ns" is measured in).
[[nodiscard]] std::int64_t monotonic_ns();

}  // namespace berth::gateway
