// The session actor: its behaviour (every message handler), the commit of what the machine
// decided, and pump(), which turns decisions into actions. The concerns it drives live in
// their own files (actor_state.hpp lists them).

#include "berth/session/session_actor.hpp"

#include "actor_state.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/log.hpp"
#include "berth/base/redact.hpp"
#include "berth/session/committer.hpp"

#include <filesystem>

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(berth::session::committer::outcome)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(berth::session::load_result)

namespace berth::session {

using namespace core;  // NOLINT(google-build-using-namespace): the session runs the core

void schedule_tick(actor_t* self, std::int64_t until_ms) {
  auto& s = self->state;
  auto now = now_unix_ms();
  if (s.cmds.tick_ms > now && s.cmds.tick_ms <= until_ms) return;
  s.cmds.tick_ms = until_ms;
  auto delay = std::max<std::int64_t>(0, until_ms - now);
  self->delayed_send(self, std::chrono::milliseconds(delay + 1), tick_atom::value);
}

namespace {

// Every exit goes through here, so that pump() (and a continuation after it) knows.
void quit(actor_t* self, caf::error reason = caf::none) {
  self->state.stopping = true;
  self->state.finalizing = true;
  self->quit(std::move(reason));
}

// The snapshot (synced) and the outbox's publishes at once (committer.hpp); the commit_atom
// handler acts once both are durable.
void start_commit(actor_t* self) {
  auto& s = self->state;
  s.committing = true;
  committer::request r;
  r.session = s.id;
  // Every event and snapshot passes the redactor: no credential reaches RocksDB or a stream,
  // whatever a command printed or a forge answered.
  r.snapshot = snapshot_text(s);
  s.journal.fill(r);
  // No second write to record the trimmed outbox afterwards: it would cost a RocksDB write per
  // transition. A started step's pid record (record_pid) writes the trimmed state anyway, and a
  // snapshot that still lists published events is reconciled with the journal tail on resume.
  r.done = [me = caf::actor_cast<caf::actor>(self)](committer::outcome o) {
    caf::anon_send(me, commit_atom::value, std::move(o));
  };
  s.rt->commits->submit(std::move(r));
}

// What of a queue entry, when it changes, is written again: phase, node, branch, PR.
std::string index_key(const json::value& entry) {
  return entry.get_string("status") + '\x1f' + entry.get_string("node") + '\x1f' +
         entry.get_string("branch") + '\x1f' + entry.get_string("pr_url");
}

// Write the session's queue entry when its phase (or node, branch, PR) changed; after a commit,
// so the index never runs ahead of the journal.
void update_index(actor_t* self) {
  auto& s = self->state;
  if (!s.m || s.index_busy || s.m->state().status.empty()) return;
  auto entry = s.m->state().queue_entry();
  auto key = index_key(entry);
  if (key == s.indexed_key) return;
  s.index_busy = true;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  s.rt->io->post([rt = s.rt, id = s.id, me, key, body = redact::apply(entry.dump())] {
    auto st = rt->bus->kv_put(rt->names.bucket_sessions(), id, body);
    if (!st)
      session_logger()->warn("{}: updating its queue entry failed: {}", id, st.err().message);
    caf::anon_send(me, indexed_atom::value, key, st.ok());
  });
}

void finalize(actor_t* self) {
  auto& s = self->state;
  if (s.finalizing) return;
  s.finalizing = true;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  s.rt->io->post([rt = s.rt, id = s.id, me] {
    // Release ownership only if it is still ours; then forget the snapshot and the workdir.
    auto owner = rt->bus->kv_get(rt->names.bucket_owners(), id);
    if (owner && owner->has_value() && (*owner)->value == rt->node_id) {
      auto st = rt->bus->kv_delete(rt->names.bucket_owners(), id);
      if (!st) session_logger()->warn("{}: releasing ownership failed: {}", id, st.err().message);
    }
    persistence::write_set w;
    w.deleted_sessions.push_back(id);
    // Unsynced: a snapshot of a finished session that survives a crash is loaded, found
    // terminal and finalized again.
    auto st = rt->store->commit_unsynced(w);
    if (!st) session_logger()->warn("{}: deleting snapshot failed: {}", id, st.err().message);
    rt->runner->release(id);  // the session's sandbox, before its workspace goes
    fs::remove_tree(workdir(*rt, id));
    caf::anon_send(me, final_atom::value);
  });
}

void execute(actor_t* self, const action& a) {
  auto& s = self->state;
  switch (a.what) {
    case action::kind::idle:
      break;
    case action::kind::wait_until:
      schedule_tick(self, a.until_ms);
      break;
    case action::kind::launch:
      if (s.stopping) break;  // step.started is journaled; the next owner records it interrupted
      launch_step(self, a);
      schedule_tick(self, s.m->state().deadline_ms());
      break;
    case action::kind::prepare:
      if (s.stopping) break;
      start_prepare(self, false);
      schedule_tick(self, s.m->state().deadline_ms());  // a timeout abandons a long clone
      break;
    case action::kind::kill:
      kill_step(self, a.step, a.cause);
      break;
  }
}

void execute_all(actor_t* self, const std::vector<action>& actions) {
  for (const auto& a : actions) execute(self, a);
  // A command whose step the journal no longer has running at that attempt (sent back by a
  // loop) is stopped; its end is then stale and ignored.
  auto& s = self->state;
  std::vector<std::string> stale;
  for (auto& [step, r] : s.cmds.steps) {
    const auto* st = s.m->state().step(step);
    if (!st || st->status != step_status::running || st->attempt != r.attempt)
      stale.push_back(step);
  }
  for (const auto& step : stale) kill_step(self, step, stop_cause::sent_back);
}

// The load is done: adopt the state, start the lease actor and the sandbox, record the
// recovery. The loaded_atom handler pumps and reads the inputs after it.
bool adopt(actor_t* self, load_result& r) {
  auto& s = self->state;
  if (r.failure) {
    if (r.failure->is(errc::fenced)) {
      session_logger()->warn("{}: {}; dropped the local snapshot", s.id, r.failure->message);
      quit(self, caf::exit_reason::user_shutdown);
      return false;
    }
    session_logger()->error("{}: cannot load: {}", s.id, r.failure->message);
    quit(self, caf::make_error(caf::sec::runtime_error, r.failure->message));
    return false;
  }
  s.m = std::move(r.m);
  s.owner.epoch = r.epoch;
  s.m->set_owner(s.rt->node_id, s.owner.epoch);
  s.journal.reset(std::move(r.outbox), r.journal_seq);
  s.in.cursor = s.m->state().last_input_seq;
  const auto& st = s.m->state();
  bool live = !is_terminal(st.status);
  if (st.has_repo()) s.ws.lease = spawn_lease(self, s.rt, s.id);
  if (st.has_repo() && st.workspace_ready() && live &&
      !std::filesystem::exists(workdir(*s.rt, s.id) + "/.git"))
    s.ws.needs_restore = true;
  // A resumed session with its workspace in place: the lease actor has its grants back from
  // the vault (or mints one); the git jobs need a copy.
  if (st.has_repo() && st.workspace_ready() && live && !s.ws.needs_restore)
    self->request(s.ws.lease, caf::infinite, acquire_atom::value, st.spec.repo)
        .then([self](const lease_answer& a) {
          take_lease_answer(self, a);
          pump(self);
        });
  if (st.status == states::pending) {
    // A new session: its sandbox starts now, so the first step does not wait for it. (Resumed
    // sessions build theirs on their next command, after the resume barrier.)
    s.cmds.sandbox_preparing = true;  // not finalized (its sandbox released) before this ends
    caf::actor me = caf::actor_cast<caf::actor>(self);
    s.rt->launcher->post([r = s.rt, id = s.id, net = st.spec.network == "host", me] {
      r->runner->prepare(id, net);
      caf::anon_send(me, prepared_atom::value);
    });
  }
  if (s.rt->runner->name() == "process")
    session_logger()->warn(
        "{}: runs unsandboxed (sandbox.mode = \"none\"): its commands have the node's "
        "privileges",
        s.id);
  if (!s.fail_reason.empty()) {
    s.m->resume(now_unix_ms(), "session actor failed");
    s.m->fail(s.fail_reason, now_unix_ms());
  } else {
    s.m->resume(now_unix_ms(), "node restarted while the step was running");
  }
  return true;
}

// The commit is durable (or failed). Returns whether to pump.
bool committed(actor_t* self, committer::outcome& o) {
  auto& s = self->state;
  s.committing = false;
  s.journal.acknowledged(o.published, o.journal_seq);
  if (o.failure) {
    if (o.failure->is(errc::fenced)) {
      session_logger()->error(
          "{}: lost ownership (journal moved under us): {}; stopping without touching it", s.id,
          o.failure->message);
      for (auto& [_, r] : s.cmds.steps) r.proc->stop(millis(0));
      quit(self, caf::exit_reason::user_shutdown);
      return false;
    }
    // NATS or disk trouble: keep the outbox (it is in the snapshot) and try again.
    auto delay = std::min(5000, 100 << std::min(s.publish_failures, 6));
    ++s.publish_failures;
    session_logger()->warn("{}: commit failed ({}); retrying in {} ms", s.id, o.failure->message,
                           delay);
    self->delayed_send(self, std::chrono::milliseconds(delay), retry_atom::value);
    return false;
  }
  s.publish_failures = 0;
  if (!s.journal.pending()) s.rt->resume.settle(s.id);
  record_pid(self);
  update_index(self);
  execute_all(self, std::exchange(s.after_commit, {}));
  return true;
}

// A step's command ended. Returns whether to pump (not while its checkpoint runs).
bool step_ended(actor_t* self, const std::string& step, std::int64_t attempt) {
  auto& s = self->state;
  auto end = take_step_end(self, step, attempt);
  if (!end) return false;
  auto& x = end->exit;
  // A command may have changed the workspace: quota and checkpoint before the next one.
  if (!x.start_failed && !x.interrupted && !s.stopping && s.m->state().has_repo()) {
    start_after_change(self, step, std::make_pair(step, std::move(x)), attempt);
    return false;
  }
  s.m->step_exited(step, attempt, x, now_unix_ms());
  if (end->over_quota && !is_terminal(s.m->state().status))
    s.m->fail(end->over_quota->message, now_unix_ms());
  return true;
}

// A tool call ended. Returns whether to pump (not while its checkpoint runs).
bool tool_ended(actor_t* self, const std::string& call_id, const std::string& result) {
  auto& s = self->state;
  s.cmds.tools.erase(call_id);
  std::string tool;
  if (auto it = s.m->state().tool_args.find(call_id); it != s.m->state().tool_args.end())
    tool = it->second.get_string("tool");
  auto r = json::parse(result);
  s.m->tool_finished(call_id, r ? std::move(*r) : tool_error(r.err()), now_unix_ms());
  if (tool_changes_files(tool) && !s.stopping && !is_terminal(s.m->state().status) &&
      (s.m->state().has_repo() || s.rt->cfg.workspace.quota_bytes > 0)) {
    start_after_change(self, "tool:" + call_id, std::nullopt, 0);
    return false;
  }
  return true;
}

// The session is terminal and nothing of it runs: wrap up, write the last index entry, let go.
void end_of_session(actor_t* self) {
  auto& s = self->state;
  if (!s.cmds.steps.empty() || !s.cmds.tools.empty() || s.cmds.sandbox_preparing) return;
  if (!s.wrap.done())
    start_wrap_up(self);
  else if (s.indexed_key != index_key(s.m->state().queue_entry()))
    update_index(self);  // the terminal entry lands before the session lets go
  else
    finalize(self);
}

// Decide what happens next and queue the events for the commit; the actions wait for it.
void decide(actor_t* self, std::vector<action>& next) {
  auto& s = self->state;
  if (!s.stopping) next = s.m->advance(now_unix_ms());
  s.journal.add(s.m->take_emitted());
}

}  // namespace

// The heart of the durability argument: snapshot (synced) and outbox published -> act / take
// the next input. A step that cannot start is decided at once, so this loops until the machine
// has nothing new to say.
void pump(actor_t* self) {
  auto& s = self->state;
  for (;;) {
    if (!s.m || s.committing || s.finalizing) return;
    if (s.ws.busy) {
      // A workspace job runs; its answer pumps again. Only commit what is already decided, and
      // abandon the job's transfer if the session is ending.
      const auto& st = s.m->state();
      if (s.stopping || st.cancel_requested || is_terminal(st.status) ||
          now_unix_ms() >= st.deadline_ms())
        s.ws.cancel->store(true);
      s.journal.add(s.m->take_emitted());
      if (s.journal.pending()) start_commit(self);
      return;
    }
    std::vector<action> next;
    decide(self, next);
    if (s.journal.pending()) {
      s.after_commit = std::move(next);
      start_commit(self);
      return;
    }
    // Everything decided is committed: tool calls journaled as tool.call may run now.
    if (!s.stopping) dispatch_tools(self);
    if (is_terminal(s.m->state().status)) {
      end_of_session(self);
      return;
    }
    if (s.ws.needs_restore && !s.stopping) {
      start_prepare(self, true);
      return;
    }
    if (s.stopping) {
      if (s.cmds.steps.empty()) quit(self);
      return;
    }
    execute_all(self, next);
    if (!s.m->has_emitted()) return;
  }
}

namespace {

caf::behavior session_behavior(actor_t* self, std::shared_ptr<runtime> rt, std::string id,
                               claim owner, std::string fail_reason) {
  auto& s = self->state;
  s.rt = std::move(rt);
  s.id = std::move(id);
  s.owner = owner;
  s.fail_reason = std::move(fail_reason);
  s.journal = journal_writer(s.id, s.rt->names.journal(s.id));
  s.rt->counters.sessions++;
  s.rt->sessions.add(s.id, caf::actor_cast<caf::actor>(self));
  self->attach_functor([rt = s.rt, id = s.id, addr = self->address()] {
    rt->resume.settle(id);
    rt->sessions.remove(id, addr);
    rt->counters.sessions--;
  });
  {
    caf::actor me = caf::actor_cast<caf::actor>(self);
    s.rt->io->post([r = s.rt, sid = s.id, me, owner, escalated = !s.fail_reason.empty()] {
      caf::anon_send(me, loaded_atom::value, load_session(*r, sid, owner, escalated));
    });
  }
  return {
      [=](loaded_atom, load_result& r) {
        if (!adopt(self, r)) return;
        pump(self);
        auto& st = self->state;
        if (!st.committing && !st.journal.pending()) st.rt->resume.settle(st.id);
        read_inputs(self);
      },
      [=](commit_atom, committer::outcome& o) {
        if (committed(self, o)) pump(self);
      },
      [=](retry_atom) {
        auto& st = self->state;
        if (!st.committing && st.journal.pending()) start_commit(self);
      },
      [=](protocol::resume_job& j) {
        j.run();
        pump(self);
      },
      [=](exited_atom, const std::string& step, std::int64_t attempt) {
        if (step_ended(self, step, attempt)) pump(self);
      },
      [=](tooldone_atom, const std::string& call_id, const std::string& result) {
        if (tool_ended(self, call_id, result)) pump(self);
      },
      [=](leasenote_atom, const lease_answer& a) {
        // A renewal, or revocations while the session ends: journaled as they happen.
        take_lease_answer(self, a);
        pump(self);
      },
      [=](prepared_atom) {
        self->state.cmds.sandbox_preparing = false;
        pump(self);
      },
      [=](tooltmo_atom, const std::string& call_id) {
        auto& st = self->state;
        auto it = st.cmds.tools.find(call_id);
        if (it != st.cmds.tools.end() && it->second)
          it->second->stop(st.rt->cfg.session.kill_grace);
      },
      [=](stepup_atom, const std::string& step, std::int64_t attempt) {
        auto& st = self->state;
        auto it = st.cmds.steps.find(step);
        if (it == st.cmds.steps.end() || it->second.attempt != attempt) return;
        {
          auto& r = it->second;
          std::lock_guard lock(r.proc->mu);
          r.pid = r.proc->pid;
          r.start_time = r.proc->start_time;
        }
        // A host pid (sandbox.mode = "none") is recorded at once: a restarted node kills what
        // a crash left. Otherwise a step still running after a moment gets its trimmed
        // snapshot written, so that a restart resumes it without reading the journal; short
        // steps never pay for that write.
        if (it->second.pid > 0) {
          st.snap.pid_dirty = true;
          record_pid(self);
        } else {
          self->delayed_send(self, std::chrono::milliseconds(50), cleansnap_atom::value, step,
                             attempt);
        }
      },
      [=](cleansnap_atom, const std::string& step, std::int64_t attempt) {
        auto& st = self->state;
        auto it = st.cmds.steps.find(step);
        if (it == st.cmds.steps.end() || it->second.attempt != attempt) return;
        st.snap.pid_dirty = true;
        record_pid(self);
      },
      [=](steptmo_atom, const std::string& step, std::int64_t attempt) {
        auto& st = self->state;
        auto it = st.cmds.steps.find(step);
        if (it == st.cmds.steps.end() || it->second.attempt != attempt) return;
        const step_spec* spec = st.m->state().spec.step(step);
        kill_step(self, step, stop_cause::step_timeout,
                  "timed out after " +
                      format_duration(spec && spec->timeout ? *spec->timeout : millis(0)));
      },
      [=](tick_atom) {
        if (self->state.cmds.tick_ms <= now_unix_ms()) self->state.cmds.tick_ms = 0;
        pump(self);
      },
      [=](wake_atom) { read_inputs(self); },
      [=](input_atom, std::uint64_t seq, const std::string& data) {
        self->state.in.pending.emplace(seq, data);
        if (drain_inputs(self)) pump(self);
      },
      [=](stop_atom) {
        auto& st = self->state;
        if (st.stopping) return;
        st.stopping = true;
        if (!st.cmds.steps.empty())
          self->delayed_send(self, st.rt->cfg.node.shutdown_grace, stopnow_atom::value);
        pump(self);
      },
      [=](stopnow_atom) {
        std::vector<std::string> steps;
        for (auto& [step, _] : self->state.cmds.steps) steps.push_back(step);
        for (const auto& step : steps) kill_step(self, step, stop_cause::node_stop);
      },
      [=](indexed_atom, const std::string& key, bool ok) {
        auto& st = self->state;
        st.index_busy = false;
        if (ok) {
          st.indexed_key = key;
          update_index(self);  // the phase may have moved on meanwhile
          pump(self);
        } else {
          self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
        }
      },
      [=](final_atom) {
        self->state.rt->counters.sessions_finished++;
        self->quit();
      },
  };
}

}  // namespace

caf::actor spawn_session(caf::actor_system& sys, std::shared_ptr<runtime> rt, std::string id,
                         claim owner, std::string fail_reason) {
  return sys.spawn(session_behavior, std::move(rt), std::move(id), owner, std::move(fail_reason));
}

std::string placement_snapshot(const std::string& node, std::uint64_t epoch) {
  json::value v = json::value::make_object();
  v.set("v", 1);
  v.set("node", node);
  v.set("epoch", epoch);
  v.set("outbox", json::value::make_array());
  return v.dump();
}

}  // namespace berth::session
