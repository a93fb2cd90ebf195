#pragma once

// Shared feeds: one ordered consumer per topic for every WebSocket that is live on it. A
// subscription starts on a consumer of its own (from its `since`); once that has delivered its
// backlog it joins the topic's shared feed, which keeps the last messages it saw so the joiner
// misses nothing in between, and its own consumer is dropped. The NATS server then sends each
// message once to the gateway, however many browsers watch.

#include "feed.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace berth::gateway {

class hub {
 public:
  /// Gets each message in order; runs with the feed's lock held on a nats.c or pool thread:
  /// it may only post.
  using sink = std::function<void(const std::shared_ptr<const bus::message>&)>;

  explicit hub(server::impl& g) : g_(g) {}
  /// Join the shared feed of `t` (creating its consumer from after `after` if there is none)
  /// so that `s` gets every message after `after`: those the feed still holds at once, then
  /// live ones. nullopt when the feed no longer holds everything after `after` (stay on the
  /// private consumer and try later). Blocks (may create a consumer): API pool only.
  [[nodiscard]] std::optional<std::uint64_t> join(const topic& t, std::uint64_t after, sink s);
  /// Stop a listener; the last one closes the feed. Never blocks.
  void leave(const topic& t, std::uint64_t token);
  /// Feeds open now (tests, metrics).
  [[nodiscard]] std::size_t feeds() const;

 private:
  struct shared {
    std::mutex mu;
    std::unique_ptr<bus::subscription> consumer;
    std::deque<std::shared_ptr<const bus::message>> recent;
    std::size_t recent_bytes = 0;
    std::uint64_t covered_after = 0;  ///< every message after this one is in `recent` or later
    std::map<std::uint64_t, sink> listeners;
    std::uint64_t next_token = 1;
  };
  static std::string key_of(const topic& t);
  server::impl& g_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<shared>> feeds_;
};

}  // namespace berth::gateway
