#include "berth/session/journal_writer.hpp"

#include "berth/base/redact.hpp"

#include <iterator>

namespace berth::session {

bus::publish_options journal_fence(std::string_view session, std::int64_t n,
                                   std::uint64_t after_seq) {
  bus::publish_options po;
  po.msg_id = std::string(session) + ":" + std::to_string(n);
  po.expected_last_subject_seq = after_seq;
  return po;
}

void journal_writer::reset(std::vector<core::event> outbox, std::uint64_t position) {
  outbox_ = std::move(outbox);
  position_ = position;
}

void journal_writer::add(std::vector<core::event> events) {
  outbox_.insert(outbox_.end(), std::make_move_iterator(events.begin()),
                 std::make_move_iterator(events.end()));
}

void journal_writer::fill(committer::request& r) const {
  r.subject = subject_;
  r.journal_seq = position_;
  r.events.reserve(outbox_.size());
  // No credential reaches a stream, whatever a command printed or a forge answered.
  for (const auto& e : outbox_) r.events.emplace_back(e.n, redact::apply(e.envelope().dump()));
}

void journal_writer::acknowledged(std::size_t published, std::uint64_t position) {
  outbox_.erase(outbox_.begin(), outbox_.begin() + static_cast<std::ptrdiff_t>(published));
  position_ = position;
}

result<bus::pub_ack> journal_writer::write_first(bus::client& bus, const std::string& subject,
                                                 const core::event& accepted) {
  BERTH_ASSERT(accepted.n == 1, "write_first is for event 1 only");
  // The client's spec as validated, like the start message on the input stream: not redacted
  // (a redacted spec would fold into a different program than the one the client sent).
  return bus.publish(subject, accepted.envelope().dump(), journal_fence(accepted.session, 1, 0));
}

}  // namespace berth::session
