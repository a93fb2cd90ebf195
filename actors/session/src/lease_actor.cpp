#include "berth/session/lease_actor.hpp"

#include "berth/base/log.hpp"
#include "berth/base/time.hpp"
#include "berth/session/runtime.hpp"
#include "berth/session/workspace_ops.hpp"

#include <caf/all.hpp>

#include <functional>
#include <optional>

namespace berth::session {

namespace {

struct lease_state {
  std::shared_ptr<runtime> rt;
  std::string session;
  caf::actor owner;
  std::vector<lease::grant> grants;
  bool busy = false;  // one provider call at a time
  // What is asked for, served in this order: revocation, acquisition, renewal.
  std::optional<caf::typed_response_promise<lease_answer>> revoke_rp;
  json::value journal_live;
  bool revoke_waiting = false;  // backing off after a failure
  int revoke_failures = 0;
  std::vector<std::pair<caf::typed_response_promise<lease_answer>, std::string>> acquire_rps;
  bool renew_due = false;
  std::int64_t renew_at_ms = 0;
  static inline const char* name = "berth.lease";
};

using lease_actor_t = caf::stateful_actor<lease_state, lease_actor::base>;

void kick(lease_actor_t* self);

void schedule_renewal(lease_actor_t* self) {
  auto& s = self->state;
  auto due = wsops::renew_due_ms(*s.rt, s.grants);
  if (due <= 0 || s.revoke_rp) return;
  if (s.renew_at_ms != 0 && s.renew_at_ms <= due) return;  // an earlier timer is set
  s.renew_at_ms = due;
  self->delayed_send(self,
                     std::chrono::milliseconds(std::max<std::int64_t>(0, due - now_unix_ms()) + 1),
                     renew_atom::value);
}

// One provider call at a time, on the I/O pool; `done` gets its outcome back on the actor.
template <class Job, class Done>
void run(lease_actor_t* self, Job job, Done done) {
  self->state.busy = true;
  protocol::run_blocking(self, *self->state.rt->io, std::move(job), std::move(done));
}

lease_answer answer(std::vector<std::pair<std::string, json::value>> notes,
                    std::vector<lease::grant> grants, std::string error = {}) {
  return lease_answer{std::move(notes), std::move(grants), std::move(error)};
}

void kick(lease_actor_t* self) {
  auto& s = self->state;
  if (s.busy) return;
  auto rt = s.rt;
  auto id = s.session;
  if (s.revoke_rp) {
    if (s.revoke_waiting) return;
    run(
        self,
        [rt, id, grants = s.grants, live = s.journal_live] {
          return wsops::revoke_all(*rt, id, grants, live);
        },
        [](lease_actor_t* a, wsops::outcome o) {
          auto& st = a->state;
          st.grants = std::move(o.grants);
          // What was revoked is journaled now, whatever remains.
          if (!o.notes.empty())
            caf::anon_send(st.owner, leasenote_atom::value, answer(o.notes, st.grants));
          st.journal_live = json::value::make_object();
          if (o.still_live.empty()) {
            st.revoke_rp->deliver(answer({}, {}));
            st.revoke_rp.reset();
            return;
          }
          auto delay = std::min<std::int64_t>(300'000, 1000LL << std::min(st.revoke_failures, 9));
          ++st.revoke_failures;
          st.revoke_waiting = true;
          a->delayed_send(a, std::chrono::milliseconds(delay), revokeall_atom::value);
        });
    return;
  }
  if (!s.acquire_rps.empty()) {
    auto url = s.acquire_rps.front().second;
    run(
        self, [rt, id, url, grants = s.grants] { return wsops::acquire(*rt, id, url, grants); },
        [](lease_actor_t* a, wsops::outcome o) {
          auto& st = a->state;
          st.grants = std::move(o.grants);
          auto rp = std::move(st.acquire_rps.front().first);
          st.acquire_rps.erase(st.acquire_rps.begin());
          rp.deliver(answer(o.notes, st.grants, o.failure ? o.failure->message : ""));
          schedule_renewal(a);
        });
    return;
  }
  if (s.renew_due) {
    s.renew_due = false;
    run(
        self, [rt, id, grants = s.grants] { return wsops::renew(*rt, id, grants); },
        [](lease_actor_t* a, wsops::outcome o) {
          auto& st = a->state;
          st.grants = std::move(o.grants);
          if (!o.notes.empty())
            caf::anon_send(st.owner, leasenote_atom::value, answer(o.notes, st.grants));
          auto due = wsops::renew_due_ms(*st.rt, st.grants);
          if (due > 0 && due <= now_unix_ms()) {
            // The renewal failed (logged): tried again in a while, before the token runs out.
            st.renew_at_ms = now_unix_ms() + 5000;
            a->delayed_send(a, std::chrono::seconds(5), renew_atom::value);
          } else {
            schedule_renewal(a);
          }
        });
  }
}

lease_actor::behavior_type lease_behavior(lease_actor_t* self, std::shared_ptr<runtime> rt,
                                          std::string session, caf::actor owner) {
  auto& s = self->state;
  s.rt = std::move(rt);
  s.session = std::move(session);
  s.owner = std::move(owner);
  s.journal_live = json::value::make_object();
  // A node that crashed left the session's grants in its vault: they are this actor's again.
  if (s.rt->leases) s.grants = s.rt->leases->of(s.session);
  schedule_renewal(self);
  return {
      [=](acquire_atom, const std::string& url) -> caf::result<lease_answer> {
        auto rp = self->make_response_promise<lease_answer>();
        self->state.acquire_rps.emplace_back(rp, url);
        kick(self);
        return rp;
      },
      [=](revokeall_atom, const std::string& journal_live) -> caf::result<lease_answer> {
        auto& st = self->state;
        auto rp = self->make_response_promise<lease_answer>();
        auto live = json::parse(journal_live);
        st.journal_live = live && live->is_object() ? *live : json::value::make_object();
        if (st.revoke_rp) st.revoke_rp->deliver(answer({}, st.grants, "superseded"));
        st.revoke_rp = rp;
        kick(self);
        return rp;
      },
      [=](revokeall_atom) {  // a backoff ended
        self->state.revoke_waiting = false;
        kick(self);
      },
      [=](renew_atom) {
        auto& st = self->state;
        st.renew_at_ms = 0;
        if (st.revoke_rp) return;
        st.renew_due = true;
        kick(self);
      },
      [=](protocol::resume_job& j) {
        self->state.busy = false;
        j.run();
        kick(self);
      },
  };
}

}  // namespace

lease_actor spawn_lease(caf::local_actor* parent, std::shared_ptr<runtime> rt,
                        std::string session) {
  auto owner = caf::actor_cast<caf::actor>(parent);
  return parent->spawn<caf::linked>(lease_behavior, std::move(rt), std::move(session),
                                    std::move(owner));
}

}  // namespace berth::session
