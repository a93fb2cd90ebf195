#pragma once

#include "berth/base/error.hpp"
#include "berth/bus/client.hpp"
#include "berth/core/events.hpp"
#include "berth/session/committer.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace berth::session {

/// The fencing rule, spelled once. Event `n` of `session` is published with Nats-Msg-Id
/// "<session>:<n>" (a retried publish is dropped by JetStream as a duplicate) and
/// Nats-Expected-Last-Subject-Sequence = `after_seq`, the stream sequence of event n-1 (0 for
/// event 1: the journal must be empty). A writer whose view of the journal is stale — another
/// node took the session over and wrote — is refused with errc::fenced before anything lands.
[[nodiscard]] bus::publish_options journal_fence(std::string_view session, std::int64_t n,
                                                 std::uint64_t after_seq);

/// Every journal write goes through here. The session actor owns one per session: it holds
/// the outbox (events decided but not yet acknowledged by JetStream) and the journal position,
/// hands both to the committer, and takes its acknowledgements. The API writes event 1 with
/// write_first. Every payload the session decided passes the redactor. Not thread-safe: one owner.
class journal_writer {
 public:
  journal_writer() = default;
  journal_writer(std::string session, std::string subject)
      : session_(std::move(session)), subject_(std::move(subject)) {}

  /// After a load: what the snapshot still had to publish, and the journal's last sequence.
  void reset(std::vector<core::event> outbox, std::uint64_t position);
  /// Decided events, in order (the machine's take_emitted()).
  void add(std::vector<core::event> events);

  [[nodiscard]] const std::vector<core::event>& outbox() const { return outbox_; }
  [[nodiscard]] bool pending() const { return !outbox_.empty(); }
  /// Stream sequence of the last event the journal acknowledged (0: none).
  [[nodiscard]] std::uint64_t position() const { return position_; }
  [[nodiscard]] const std::string& subject() const { return subject_; }

  /// Fill a committer request's journal part: the outbox, redacted, after position().
  void fill(committer::request& r) const;
  /// The committer's answer: the first `published` outbox events are in the journal, the last
  /// at `position`.
  void acknowledged(std::size_t published, std::uint64_t position);

  /// The API's write of event 1 (session.accepted) on `subject`: fenced on an empty journal,
  /// so a repeated start (same id) is a no-op that reports errc::fenced or a duplicate.
  [[nodiscard]] static result<bus::pub_ack> write_first(bus::client& bus,
                                                        const std::string& subject,
                                                        const core::event& accepted);

 private:
  std::string session_;
  std::string subject_;
  std::vector<core::event> outbox_;
  std::uint64_t position_ = 0;
};

}  // namespace berth::session
