// The session's inputs (berth.in.<session>): pushed by the node's consumer as they arrive, and
// read from the stream to catch up (after a load, a reconnect or a gap). Applied in stream
// order, each exactly once (input.applied records the sequence).

#include "actor_state.hpp"

#include "berth/base/log.hpp"

namespace berth::session {

using namespace core;  // NOLINT(google-build-using-namespace): the session runs the core

namespace {
struct read_result {
  std::vector<bus::message> msgs;
  std::optional<error> failure;
};
}  // namespace

void read_inputs(actor_t* self) {
  auto& s = self->state;
  if (!s.m) return;
  if (s.in.reading) {
    s.in.read_again = true;
    return;
  }
  s.in.reading = true;
  s.in.read_again = false;
  auto from = std::max(s.in.cursor, s.m->state().last_input_seq) + 1;
  protocol::run_blocking(
      self, *s.rt->io,
      [rt = s.rt, id = s.id, from] {
        read_result out;
        auto st = rt->bus->read_subject(rt->names.stream_in(), rt->names.input(id), from,
                                        [&](bus::message& m) {
                                          out.msgs.push_back(std::move(m));
                                          return true;
                                        });
        if (!st) out.failure = st.err();
        return out;
      },
      [](actor_t* a, read_result r) {
        auto& st = a->state;
        st.in.reading = false;
        if (r.failure)
          session_logger()->warn("{}: reading inputs failed: {}", st.id, r.failure->message);
        for (auto& msg : r.msgs) st.in.pending.emplace(msg.seq, std::move(msg.data));
        if (!r.failure) st.in.caught_up = true;
        drain_inputs(a);  // the resume_job handler pumps what they decided
        if (r.failure)
          a->delayed_send(a, std::chrono::seconds(1), wake_atom::value);
        else if (st.in.read_again)
          read_inputs(a);
      });
}

// Only after the first catch-up read and while no read is in flight: then no older input can
// still be unseen (the node's push consumer started before this session loaded, and the
// catch-up covered everything before it).
bool drain_inputs(actor_t* self) {
  auto& s = self->state;
  if (!s.m || !s.in.caught_up || s.in.reading || s.in.pending.empty()) return false;
  bool applied = false;
  for (const auto& [seq, data] : s.in.pending) {
    if (seq <= std::max(s.in.cursor, s.m->state().last_input_seq)) continue;
    s.in.cursor = seq;
    auto parsed = json::parse(data);
    json::value v = parsed ? *parsed : json::value();
    if (!parsed) v.set("type", "malformed");
    if (!is_terminal(s.m->state().status)) {
      s.m->input(seq, v, now_unix_ms());
      applied = true;
    }
  }
  s.in.pending.clear();
  return applied;
}

}  // namespace berth::session
