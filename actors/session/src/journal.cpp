#include "berth/session/journal.hpp"

#include "berth/base/log.hpp"

namespace berth::session {

using namespace core;  // NOLINT(google-build-using-namespace): the session runs the core

result<std::pair<machine, std::uint64_t>> fold_journal(bus::client& bus, const bus::subjects& names,
                                                       const std::string& id,
                                                       std::int64_t default_timeout_ms) {
  machine m(id, default_timeout_ms);
  std::uint64_t last = 0;
  auto subject = names.journal(id);
  std::optional<error> failure;
  auto st = bus.read_subject(names.stream_ev(), subject, 1, [&](bus::message& msg) {
    auto parsed = json::parse(msg.data);
    if (!parsed) {
      failure = error{errc::corrupt, subject + " sequence " + std::to_string(msg.seq) + ": " +
                                         parsed.err().message};
      return false;
    }
    auto ev = event::from_envelope(*parsed);
    if (!ev) {
      failure = ev.err();
      return false;
    }
    if (ev->n <= m.state().n) {
      // A repeat that slipped past the de-duplication window: the fence makes this impossible
      // for a session's own writes; skip it rather than fold it twice.
      log::get("session")->warn(
          "{}: journal holds event n={} twice (sequence {}); ignoring the repeat", id, ev->n,
          msg.seq);
    } else if (auto applied = m.apply(*ev); !applied) {
      failure = applied.err();
      return false;
    }
    last = msg.seq;
    return true;
  });
  if (!st) return st.err();
  if (failure) return *failure;
  return std::make_pair(std::move(m), last);
}

}  // namespace berth::session
