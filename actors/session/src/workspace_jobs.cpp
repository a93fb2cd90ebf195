// The session's workspace and credentials: clone or restore, checkpoints after changes, git
// steps, and the wrap-up after the end. Each is a job on the I/O pool, one at a time; the
// lease actor (lease_actor.hpp) is asked for credentials first.

#include "actor_state.hpp"

#include "berth/base/log.hpp"

namespace berth::session {

using namespace core;  // NOLINT(google-build-using-namespace): the session runs the core

namespace {

// Journal what a workspace job reports. (Its grants are the copy it was given: the lease
// actor's answers, which may have renewed them meanwhile, are the ones kept.)
void take_outcome(actor_t* self, wsops::outcome& o) {
  auto now = now_unix_ms();
  for (auto& [type, data] : o.notes) self->state.m->note(type, std::move(data), now);
}

// Run `job` on the I/O pool as the session's one workspace job; `then` gets its outcome on the
// actor (in the resume_job handler, which pumps after it).
template <class Job, class Then>
void ws_job(actor_t* self, Job job, Then then) {
  auto& s = self->state;
  if (s.ws.busy) {
    // One job at a time: this one starts when the one running ends.
    s.ws.queue.emplace_back([self, job = std::move(job), then = std::move(then)]() mutable {
      ws_job(self, std::move(job), std::move(then));
    });
    return;
  }
  s.ws.busy = true;
  protocol::run_blocking(self, *s.rt->io, std::move(job),
                         [then = std::move(then)](actor_t* a, wsops::outcome o) mutable {
                           auto& ws = a->state.ws;
                           ws.busy = false;
                           then(a, o);
                           if (!ws.queue.empty()) {
                             auto next = std::move(ws.queue.front());
                             ws.queue.pop_front();
                             next();
                           }
                         });
}

}  // namespace

void take_lease_answer(actor_t* self, const lease_answer& a) {
  auto& s = self->state;
  auto now = now_unix_ms();
  // After the session's end only its clean-up is journaled (leases revoked, workspace
  // removed). A renewal that was already under way when the session ended is not: the lease
  // actor holds the new grant, and the revocation asked for at the end revokes it with the
  // rest, journaling lease.revoked for it.
  const bool ended = core::is_terminal(s.m->state().status);
  for (const auto& [type, data] : a.notes)
    if (!ended || type != core::ev::lease_renewed) s.m->note(type, data, now);
  if (a.error.empty() || !a.grants.empty()) s.ws.grants = a.grants;
}

void start_prepare(actor_t* self, bool restore) {
  auto& s = self->state;
  if (s.ws.busy) return;
  s.ws.needs_restore = false;
  s.ws.busy = true;  // from the lease request to the end of the clone
  auto prepare = [restore](actor_t* a) {
    auto& st = a->state;
    st.ws.busy = false;  // held from the lease request; the clone job takes it over
    ws_job(
        a,
        [rt = st.rt, state = st.m->state(), grants = st.ws.grants, restore, cancel = st.ws.cancel] {
          return wsops::prepare(*rt, state, grants, restore, cancel.get());
        },
        [](actor_t* b, wsops::outcome& o) {
          auto& st2 = b->state;
          take_outcome(b, o);
          // Abandoned because the session is ending: pump records how it ends.
          if (o.failure && o.failure->is(errc::cancelled)) return;
          if (o.failure)
            st2.m->fail(o.failure->message, now_unix_ms());
          else if (o.ready)
            st2.m->workspace_ready(std::move(*o.ready), now_unix_ms());
        });
  };
  if (!s.ws.lease) {
    prepare(self);
    return;
  }
  // The credential first: the clone of a private repository needs it.
  self->request(s.ws.lease, caf::infinite, acquire_atom::value, s.m->state().spec.repo)
      .then(
          [self, prepare](const lease_answer& a) {
            auto& st = self->state;
            take_lease_answer(self, a);
            if (!a.error.empty()) {
              st.ws.busy = false;
              if (!is_terminal(st.m->state().status)) st.m->fail(a.error, now_unix_ms());
              pump(self);
              return;
            }
            prepare(self);
          },
          [self](caf::error& e) {
            auto& st = self->state;
            st.ws.busy = false;
            if (!is_terminal(st.m->state().status))
              st.m->fail("lease: the lease actor did not answer: " + caf::to_string(e),
                         now_unix_ms());
            pump(self);
          });
}

// The workspace is removed (a job) while the lease actor revokes every lease (retrying with
// backoff as long as the provider fails). Both are journaled after the terminal event; the
// session is finalized once both are done.
void start_wrap_up(actor_t* self) {
  auto& s = self->state;
  if (!s.wrap.revoke_asked) {
    s.wrap.revoke_asked = true;
    if (!s.ws.lease) {
      s.wrap.leases_gone = true;
    } else {
      json::value live = json::value::make_object();
      if (const auto* l = s.m->state().ws.find("leases"); l && l->is_object()) live = *l;
      self->request(s.ws.lease, caf::infinite, revokeall_atom::value, live.dump())
          .then(
              [self](const lease_answer& a) {
                take_lease_answer(self, a);
                self->state.wrap.leases_gone = true;
                pump(self);
              },
              [self](caf::error& e) {
                // The lease actor is gone: its vault entries are revoked at the next start.
                session_logger()->error("{}: the lease actor failed while revoking: {}",
                                        self->state.id, caf::to_string(e));
                self->state.wrap.leases_gone = true;
                pump(self);
              });
    }
  }
  if (!s.wrap.workspace_gone && !s.ws.busy) {
    ws_job(
        self, [rt = s.rt, st = s.m->state()] { return wsops::remove_workspace(*rt, st); },
        [](actor_t* a, wsops::outcome& o) {
          take_outcome(a, o);
          a->state.wrap.workspace_gone = true;
        });
  }
}

void start_after_change(actor_t* self, const std::string& what,
                        std::optional<std::pair<std::string, exit_result>> exit,
                        std::int64_t attempt) {
  auto& s = self->state;
  ws_job(
      self,
      [rt = s.rt, id = s.id, repo = s.m->state().spec.repo,
       base = s.m->state().ws.get_string("commit"), grants = s.ws.grants, what,
       cancel = s.ws.cancel] {
        return wsops::after_change(*rt, id, repo, base, grants, what, cancel.get());
      },
      [exit = std::move(exit), attempt](actor_t* a, wsops::outcome& o) {
        auto& st = a->state;
        auto now = now_unix_ms();
        if (exit) st.m->step_exited(exit->first, attempt, exit->second, now);
        take_outcome(a, o);
        if (o.failure && !is_terminal(st.m->state().status)) st.m->fail(o.failure->message, now);
      });
}

void start_git_step(actor_t* self, const action& a, const step_spec& spec) {
  auto& s = self->state;
  ws_job(
      self,
      [rt = s.rt, st = s.m->state(), grants = s.ws.grants, sp = spec, cancel = s.ws.cancel] {
        return wsops::git_step(*rt, st, grants, sp, cancel.get());
      },
      [step = a.step, attempt = a.attempt](actor_t* self2, wsops::outcome& o) {
        take_outcome(self2, o);  // git.committed, git.pushed, pr.opened: before the step's end
        self2->state.m->step_exited(step, attempt, o.exit, now_unix_ms());
      });
}

}  // namespace berth::session
