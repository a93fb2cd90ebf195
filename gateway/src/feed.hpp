#pragma once

// What a client can follow (a topic), how its items look on the wire, and the ordered consumer
// behind each. Shared by SSE and WebSocket.

#include "internal.hpp"

#include "berth/bus/client.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace berth::gateway {

/// A followed stream of items, each with its JetStream sequence.
struct topic {
  enum class kind { events, logs, sessions };
  kind k = kind::events;
  std::string session;  ///< events, logs
  std::string step;     ///< logs of one step; empty: every step
  std::string status;   ///< sessions: only this status (phase)
  std::string repo;     ///< sessions: only repos whose URL contains this
  std::string name;     ///< as the client wrote it: "sessions", "session/<id>/events", ...

  /// The item's "type" on the wire: "event", "log", "session".
  [[nodiscard]] const char* item_type() const;
};

/// "sessions" (with `filter` {status, repo}, may be null), "session/<id>/events",
/// "session/<id>/logs", "session/<id>/logs/<step>". Errors name the field.
[[nodiscard]] result<topic> parse_topic(const std::string& name, const json::value* filter);

/// The JSON of a delivered item's `data`: events, the journal event; logs, {step, attempt,
/// stream, text[, truncated]}; sessions, {id, ...its queue entry} or {id, deleted: true}.
[[nodiscard]] std::string item_data(const topic& t, const bus::message& m);

/// Whether a sessions-topic row passes its filter (a deleted entry never does).
[[nodiscard]] bool passes(const topic& t, const bus::message& m);

/// How many messages the consumer had still to deliver after `m` (from the JetStream reply
/// subject's metadata); nullopt when the message carries none.
[[nodiscard]] std::optional<std::uint64_t> pending_after(const bus::message& m);

/// A journal message that ends its session (session.succeeded|failed|cancelled|timed_out).
[[nodiscard]] bool ends_session(const bus::message& m);

/// Follow `t` from sequence since+1 with an ordered consumer; `fn` runs on a nats.c thread.
/// Blocks on NATS: API pool only. errc::not_found for a session with no journal.
[[nodiscard]] result<std::unique_ptr<bus::subscription>> open_feed(
    server::impl& g, const topic& t, std::uint64_t since, std::function<void(bus::message)> fn);

/// Drop consumers off the I/O threads (unsubscribing waits for nats.c).
void close_feed(server::impl& g, std::unique_ptr<bus::subscription> s);

}  // namespace berth::gateway
