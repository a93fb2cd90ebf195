#include "berth/session/session_actor.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/log.hpp"
#include "berth/base/process.hpp"
#include "berth/base/redact.hpp"
#include "berth/session/atoms.hpp"
#include "berth/session/committer.hpp"
#include "berth/session/journal.hpp"
#include "berth/session/lease_actor.hpp"
#include "berth/session/machine.hpp"
#include "berth/session/runtime.hpp"
#include "berth/session/workspace_ops.hpp"
#include "berth/setup/environment.hpp"

#include <caf/all.hpp>

#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

namespace berth::session {

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("session");
  return l;
}

// What a load job hands back to the actor.
struct load_box {
  std::optional<machine> m;
  std::vector<event> outbox;
  std::uint64_t journal_seq = 0;
  std::uint64_t epoch = 0;
  std::optional<error> failure;
  bool takeover = false;  // state rebuilt from the journal
};

// What a commit job hands back.
struct commit_box {
  std::size_t published = 0;
  std::uint64_t journal_seq = 0;
  std::optional<error> failure;
};

struct inputs_box {
  std::vector<bus::message> msgs;
  std::optional<error> failure;
};

// A step's process, shared by the actor and the thread that starts and waits for it: the
// posix_spawn happens on that thread, never on an actor scheduler thread.
struct step_process {
  std::mutex mu;
  std::unique_ptr<sandbox::running_command> cmd;
  bool stop_requested = false;
  millis grace{0};
  std::optional<error> start_error;
  sandbox::outcome result;
  std::optional<error> over_quota;  // a scratch workspace's quota, checked when the command ended
  pid_t pid = -1;
  unsigned long long start_time = 0;
  std::shared_ptr<wsops::setup_job> setup;  // a setup step: seeded before, promoted after

  void stop(millis g) {
    std::lock_guard lock(mu);
    if (cmd) {
      cmd->stop(g);
    } else {
      stop_requested = true;
      grace = g;
    }
  }
};

struct running_step {
  std::string step;
  std::int64_t attempt = 0;
  std::shared_ptr<step_process> proc;
  std::string kill_reason;  // why we stopped it, if we did
  bool timed_out = false;
  bool interrupted = false;
  pid_t pid = -1;
  unsigned long long start_time = 0;
};

struct session_state_actor {
  std::shared_ptr<runtime> rt;
  std::string id;
  std::uint64_t epoch = 0;
  std::string fail_reason;
  std::optional<machine> m;
  std::vector<event> outbox;      // decided, not yet acknowledged by JetStream
  std::uint64_t journal_seq = 0;  // stream sequence of the last journal message
  bool busy = false;              // a commit job is in flight
  std::vector<action> after_commit;
  std::map<std::string, running_step> running;  // by step id: the steps whose command runs
  bool stopping = false;
  bool finalizing = false;
  bool reading_inputs = false;
  bool inputs_dirty = false;
  bool inputs_ready = false;       // the first catch-up read is done: pushes may apply at once
  std::uint64_t input_cursor = 0;  // highest input sequence applied
  std::map<std::uint64_t, std::string> pending_inputs;  // by stream sequence
  std::shared_ptr<load_box> load;
  std::shared_ptr<commit_box> commit;
  std::shared_ptr<inputs_box> inputs;
  int publish_failures = 0;
  bool pid_dirty = false;    // a started step's pid is not in RocksDB yet
  std::int64_t tick_ms = 0;  // when the pending tick fires
  // Tool calls this actor started (exec ones with their process), until their result is in.
  std::map<std::string, std::shared_ptr<step_process>> tools_running;
  bool preparing = false;  // the runner is building the session's sandbox
  // Workspace and credentials (workspace_ops.hpp). One job at a time; while it runs nothing
  // else is started, so a checkpoint sees the tree its step left.
  // The session's lease actor (lease_actor.hpp) owns its credentials; `grants` is the copy its
  // git jobs use, updated from each of the lease actor's answers.
  caf::actor lease;
  std::vector<lease::grant> grants;
  bool ws_busy = false;
  // Set when the session is cancelled, times out or stops while a workspace job runs: a
  // clone, fetch or push under way is abandoned.
  std::shared_ptr<std::atomic<bool>> ws_cancel = std::make_shared<std::atomic<bool>>(false);
  bool needs_restore = false;  // journaled ready, but the directory is not on this node
  std::optional<std::pair<std::string, exit_result>>
      exit_waiting;               // a step's exit, until its checkpoint
  bool wrapped = false;           // leases revoked and workspace removed after the end
  bool workspace_gone = false;    // wrap-up: workspace removed (workspace.removed noted)
  bool revoke_asked = false;      // wrap-up: the lease actor is revoking
  bool leases_gone = false;       // wrap-up: every lease revoked
  std::function<void()> ws_then;  // runs on the actor when the workspace job is done
  // Workspace jobs asked for while one ran (parallel steps end together): started in order.
  std::deque<std::function<void()>> ws_queue;
  // The session's entry in the berth-sessions bucket (list, stats): the phase last written,
  // and whether a write is in flight (one at a time, so they land in order).
  std::string indexed_key;  // phase, node, branch and PR as last written to the index
  std::string spec_text;    // the spec, serialized and redacted once (snapshot_text)
  // Each step's snapshot entry, serialized and redacted when the step last changed.
  std::vector<std::pair<step_state, std::string>> step_texts;
  bool index_busy = false;
  static inline const char* name = "berth.session";
};

using actor_t = caf::stateful_actor<session_state_actor>;

std::string workdir(const runtime& rt, const std::string& id) {
  return wsops::workdir(rt, id);
}

// The snapshot as RocksDB stores it, redacted. The spec, which never changes, is serialized and
// redacted once and spliced in at the top level: a 1,000-step graph's spec is written at every
// transition, and building it again each time was most of a step's cost.
std::string snapshot_text(session_state_actor& s);

json::value snapshot_json(const session_state_actor& s) {
  json::value v = json::value::make_object();
  v.set("v", 1);
  v.set("node", s.rt->node_id);
  v.set("epoch", s.epoch);
  v.set("journal_seq", s.journal_seq);
  if (s.m) v.set("state", s.m->state().to_json(false, false));
  json::value ob = json::value::make_array();
  for (const auto& e : s.outbox) ob.push(e.envelope());
  v.set("outbox", std::move(ob));
  json::value procs = json::value::make_array();
  for (const auto& [_, r] : s.running) {
    if (r.pid <= 0) continue;
    json::value p = json::value::make_object();
    p.set("pid", r.pid);
    p.set("start_time", static_cast<std::int64_t>(r.start_time));
    procs.push(std::move(p));
  }
  if (!procs.as_array().empty()) v.set("procs", std::move(procs));
  return v;
}

std::string snapshot_text(session_state_actor& s) {
  auto body = redact::apply(snapshot_json(s).dump());
  if (!s.m || s.m->state().spec_json.is_null()) return body;
  const auto& st = s.m->state();
  if (s.spec_text.empty()) s.spec_text = redact::apply(st.spec_json.dump());
  s.step_texts.resize(st.steps.size());
  std::string steps = "[";
  for (std::size_t i = 0; i < st.steps.size(); ++i) {
    const auto& step = st.steps[i];
    if (step.pristine()) continue;
    auto& [seen, text] = s.step_texts[i];
    if (text.empty() || !(seen == step)) {
      seen = step;
      text = redact::apply(step.to_json().dump());
    }
    if (steps.size() > 1) steps += ',';
    steps += text;
  }
  steps += ']';
  return "{\"spec\":" + s.spec_text + ",\"steps\":" + steps + "," + body.substr(1);
}

// --- load (io thread) ------------------------------------------------------------------------

result<std::pair<machine, std::uint64_t>> fold_journal(runtime& rt, const std::string& id) {
  return session::fold_journal(*rt.bus, rt.names, id, rt.cfg.session.default_timeout.count());
}

// `escalated`: the supervisor gave up on this session; whatever made its actors fail may be in
// the local snapshot, so rebuild from the journal (the source of truth). Outbox events that
// never reached the journal had no effects yet, so nothing is lost by dropping them.
void load_job(runtime& rt, const std::string& id, load_box& box, bool escalated) {
  if (escalated) {
    auto folded = fold_journal(rt, id);
    if (!folded) {
      box.failure = folded.err();
      return;
    }
    auto snap = rt.store->get_session(id);
    if (snap && snap->has_value()) {
      auto doc = json::parse(**snap);
      if (doc) box.epoch = static_cast<std::uint64_t>(doc->get_int("epoch"));
    }
    box.m.emplace(std::move(folded->first));
    box.journal_seq = folded->second;
    box.takeover = true;
    return;
  }
  auto snap = rt.store->get_session(id);
  if (!snap) {
    box.failure = snap.err();
    return;
  }
  std::optional<json::value> doc;
  if (snap->has_value()) {
    auto parsed = json::parse(**snap);
    if (!parsed) {
      box.failure = error{errc::corrupt, "snapshot of session " + id + ": " + parsed.err().message};
      return;
    }
    doc = std::move(*parsed);
  }
  if (doc) box.epoch = static_cast<std::uint64_t>(doc->get_int("epoch"));
  // Still ours? After a takeover the other node's journal writes would otherwise be adopted.
  bool verified = false;
  {
    std::lock_guard lock(rt.verified_mu);
    verified = rt.verified_owned.erase(id) > 0;
  }
  result<std::optional<bus::kv_entry>> owner = std::optional<bus::kv_entry>();
  if (!verified) owner = rt.bus->kv_get(rt.names.bucket_owners(), id);
  if (owner && owner->has_value() && (*owner)->value != rt.node_id) {
    box.failure = error{errc::fenced, "session " + id + " is now owned by " + (*owner)->value};
    persistence::write_set w;
    w.deleted_sessions.push_back(id);
    (void)rt.store->commit(w);
    return;
  }
  if (!owner)
    logger()->warn("{}: cannot read its owner ({}); the journal fence still protects it", id,
                   owner.err().message);
  // A step process left over by a crashed node is killed before anything else runs.
  if (doc) {
    std::vector<json::value> procs;
    if (const auto* p = doc->find("proc"); p && p->is_object()) procs.push_back(*p);  // v1
    if (const auto* p = doc->find("procs"); p && p->is_array())
      for (const auto& e : p->as_array()) procs.push_back(e);
    for (const auto& p : procs) {
      auto pid = static_cast<pid_t>(p.get_int("pid"));
      auto st = static_cast<unsigned long long>(p.get_int("start_time"));
      if (sandbox::kill_leftover(pid, st))
        logger()->warn("{}: killed leftover step process group {}", id, pid);
    }
  }
  const json::value* state = doc ? doc->find("state") : nullptr;
  const json::value* ob = doc ? doc->find("outbox") : nullptr;
  std::optional<std::uint64_t> counted;  // the journal's length, from the start-up scan
  {
    std::lock_guard lock(rt.verified_mu);
    if (auto it = rt.journal_counts.find(id); it != rt.journal_counts.end()) {
      counted = it->second;
      rt.journal_counts.erase(it);
    }
  }
  if (owner && state && state->is_object() && ob && ob->is_array() && ob->as_array().empty() &&
      counted) {
    // Still ours, nothing left to publish, and the journal exactly as long as the snapshot
    // says: no journal read. (A commit publishes while its snapshot is synced, so the journal
    // can be ahead of a snapshot; the count catches that.)
    auto st = session_state::from_json(*state, doc->find("spec"), doc->find("steps"));
    if (!st) {
      box.failure = st.err();
      return;
    }
    if (static_cast<std::int64_t>(*counted) == st->n) {
      box.m.emplace(std::move(*st), rt.cfg.session.default_timeout.count());
      box.journal_seq = static_cast<std::uint64_t>(doc->get_int("journal_seq"));
      return;
    }
  }
  auto last = rt.bus->last_message(rt.names.stream_ev(), rt.names.journal(id));
  if (!last) {
    box.failure = last.err();
    return;
  }
  std::int64_t journal_n = 0;
  std::uint64_t journal_seq = 0;
  if (last->has_value()) {
    auto parsed = json::parse((*last)->data);
    if (parsed) journal_n = parsed->get_int("n");
    journal_seq = (*last)->seq;
  }
  if (state && state->is_object()) {
    auto st = session_state::from_json(*state, doc->find("spec"), doc->find("steps"));
    if (!st) {
      box.failure = st.err();
      return;
    }
    if (journal_n <= st->n) {
      // Normal resume: the snapshot is at or ahead of the journal. Events the journal already
      // has leave the outbox; the rest are published again (same Nats-Msg-Id).
      box.m.emplace(std::move(*st), rt.cfg.session.default_timeout.count());
      if (const auto* ob = doc->find("outbox"); ob && ob->is_array()) {
        for (const auto& e : ob->as_array()) {
          auto ev = event::from_envelope(e);
          if (ev && ev->n > journal_n) box.outbox.push_back(std::move(*ev));
        }
      }
      box.journal_seq = journal_seq;
      return;
    }
    logger()->warn(
        "{}: journal (n={}) is ahead of the snapshot (n={}); rebuilding from the journal", id,
        journal_n, st->n);
  }
  auto folded = fold_journal(rt, id);
  if (!folded) {
    box.failure = folded.err();
    return;
  }
  box.m.emplace(std::move(folded->first));
  box.journal_seq = folded->second;
  box.takeover = true;
}

// --- the actor -------------------------------------------------------------------------------

void pump(actor_t* self);

// One pending tick at a time: the earliest one wanted.
void schedule_tick(actor_t* self, std::int64_t until_ms) {
  auto& s = self->state;
  auto now = now_unix_ms();
  if (s.tick_ms > now && s.tick_ms <= until_ms) return;
  s.tick_ms = until_ms;
  auto delay = std::max<std::int64_t>(0, until_ms - now);
  self->delayed_send(self, std::chrono::milliseconds(delay + 1), tick_atom::value);
}

void start_commit(actor_t* self) {
  auto& s = self->state;
  s.busy = true;
  s.commit = std::make_shared<commit_box>();
  committer::request r;
  r.session = s.id;
  // Every event and snapshot passes the redactor: no credential reaches RocksDB or a stream,
  // whatever a command printed or a forge answered.
  r.snapshot = snapshot_text(s);
  r.subject = s.rt->names.journal(s.id);
  r.events.reserve(s.outbox.size());
  for (const auto& e : s.outbox)
    r.events.emplace_back(s.id + ":" + std::to_string(e.n), redact::apply(e.envelope().dump()));
  r.journal_seq = s.journal_seq;
  // No second write to record the trimmed outbox afterwards: it would cost a RocksDB write per
  // transition. A started step's pid record (record_pid) writes the trimmed state anyway, and a
  // snapshot that still lists published events is reconciled with the journal tail on resume.
  r.done = [box = s.commit, me = caf::actor_cast<caf::actor>(self)](committer::outcome o) {
    box->published = o.published;
    box->journal_seq = o.journal_seq;
    box->failure = std::move(o.failure);
    caf::anon_send(me, commit_atom::value);
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
  auto rt = s.rt;
  auto id = s.id;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  rt->io->post([rt, id, me, key, body = redact::apply(entry.dump())] {
    auto st = rt->bus->kv_put(rt->names.bucket_sessions(), id, body);
    if (!st) logger()->warn("{}: updating its queue entry failed: {}", id, st.err().message);
    caf::anon_send(me, indexed_atom::value, key, st.ok());
  });
}

void finalize(actor_t* self) {
  auto& s = self->state;
  if (s.finalizing) return;
  s.finalizing = true;
  auto rt = s.rt;
  auto id = s.id;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  rt->io->post([rt, id, me] {
    // Release ownership only if it is still ours; then forget the snapshot and the workdir.
    auto owner = rt->bus->kv_get(rt->names.bucket_owners(), id);
    if (owner && owner->has_value() && (*owner)->value == rt->node_id) {
      auto st = rt->bus->kv_delete(rt->names.bucket_owners(), id);
      if (!st) logger()->warn("{}: releasing ownership failed: {}", id, st.err().message);
    }
    persistence::write_set w;
    w.deleted_sessions.push_back(id);
    auto st = rt->store->commit_unsynced(w);
    if (!st) logger()->warn("{}: deleting snapshot failed: {}", id, st.err().message);
    rt->runner->release(id);  // the session's sandbox, before its workspace goes
    fs::remove_tree(workdir(*rt, id));
    caf::anon_send(me, final_atom::value);
  });
}

// --- workspace and credentials ------------------------------------------------------------

void pump(actor_t* self);

// Journal what a workspace job reports. (Its grants are the copy it was given: the lease
// actor's answers, which may have renewed them meanwhile, are the ones kept.)
void take_outcome(actor_t* self, wsops::outcome& o) {
  auto& s = self->state;
  auto now = now_unix_ms();
  for (auto& [type, data] : o.notes) s.m->note(type, std::move(data), now);
}

// The same for an answer of the lease actor.
void take_lease_answer(actor_t* self, const lease_answer& a) {
  auto& s = self->state;
  auto now = now_unix_ms();
  for (const auto& [type, data] : a.notes) s.m->note(type, data, now);
  if (a.error.empty() || !a.grants.empty()) s.grants = a.grants;
}

// Run `job` on the I/O pool as the session's one workspace job; `then` gets its outcome on the
// actor.
void ws_job(actor_t* self, std::function<wsops::outcome()> job,
            std::function<void(actor_t*, wsops::outcome&)> then) {
  auto& s = self->state;
  if (s.ws_busy) {
    // One job at a time: this one starts when the one running ends (wsdone_atom).
    s.ws_queue.emplace_back([self, job = std::move(job), then = std::move(then)]() mutable {
      ws_job(self, std::move(job), std::move(then));
    });
    return;
  }
  s.ws_busy = true;
  auto box = std::make_shared<wsops::outcome>();
  caf::actor me = caf::actor_cast<caf::actor>(self);
  // One job at a time: the continuation waits in the state for the job's message.
  s.ws_then = [self, box, then = std::move(then)] { then(self, *box); };
  s.rt->io->post([job = std::move(job), box, me] {
    *box = job();
    caf::anon_send(me, wsdone_atom::value);
  });
}

void start_prepare(actor_t* self, bool restore) {
  auto& s = self->state;
  if (s.ws_busy) return;
  s.needs_restore = false;
  s.ws_busy = true;  // from the lease request to the end of the clone
  auto prepare = [restore](actor_t* a) {
    auto& st = a->state;
    st.ws_busy = false;  // held from the lease request; the clone job takes it over
    auto rt = st.rt;
    auto state = st.m->state();
    ws_job(
        a,
        [rt, state, grants = st.grants, restore, cancel = st.ws_cancel] {
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
  if (!s.lease) {
    prepare(self);
    return;
  }
  // The credential first: the clone of a private repository needs it.
  self->request(s.lease, caf::infinite, acquire_atom::value, s.m->state().spec.repo)
      .then(
          [self, prepare](const std::string& reply) {
            auto& st = self->state;
            auto a = parse_lease_reply(reply);
            take_lease_answer(self, a);
            if (!a.error.empty()) {
              st.ws_busy = false;
              if (!is_terminal(st.m->state().status)) st.m->fail(a.error, now_unix_ms());
              pump(self);
              return;
            }
            prepare(self);
          },
          [self](caf::error& e) {
            auto& st = self->state;
            st.ws_busy = false;
            if (!is_terminal(st.m->state().status))
              st.m->fail("lease: the lease actor did not answer: " + caf::to_string(e),
                         now_unix_ms());
            pump(self);
          });
}

// The session is over: the workspace is removed (a job) while the lease actor revokes every
// lease (retrying with backoff as long as the provider fails). Both are journaled after the
// terminal event; the session is finalized once both are done.
void start_wrap_up(actor_t* self) {
  auto& s = self->state;
  if (!s.revoke_asked) {
    s.revoke_asked = true;
    if (!s.lease) {
      s.leases_gone = true;
    } else {
      json::value live = json::value::make_object();
      if (const auto* l = s.m->state().ws.find("leases"); l && l->is_object()) live = *l;
      self->request(s.lease, caf::infinite, revokeall_atom::value, live.dump())
          .then(
              [self](const std::string& reply) {
                auto& st = self->state;
                take_lease_answer(self, parse_lease_reply(reply));
                st.leases_gone = true;
                st.wrapped = st.workspace_gone;
                pump(self);
              },
              [self](caf::error& e) {
                // The lease actor is gone: its vault entries are revoked at the next start.
                logger()->error("{}: the lease actor failed while revoking: {}", self->state.id,
                                caf::to_string(e));
                self->state.leases_gone = true;
                self->state.wrapped = self->state.workspace_gone;
                pump(self);
              });
    }
  }
  if (!s.workspace_gone && !s.ws_busy) {
    auto rt = s.rt;
    auto st = s.m->state();
    ws_job(
        self, [rt, st] { return wsops::remove_workspace(*rt, st); },
        [](actor_t* a, wsops::outcome& o) {
          auto& st2 = a->state;
          auto now = now_unix_ms();
          for (auto& [type, data] : o.notes) st2.m->note(type, std::move(data), now);
          st2.workspace_gone = true;
          st2.wrapped = st2.leases_gone;
        });
  }
}

// After a step or tool call that may have changed files: quota, then checkpoint. `exit`: the
// step's result, reported to the machine first.
void start_after_change(actor_t* self, const std::string& what,
                        std::optional<std::pair<std::string, exit_result>> exit,
                        std::int64_t attempt) {
  auto& s = self->state;
  auto rt = s.rt;
  ws_job(
      self,
      [rt, id = s.id, repo = s.m->state().spec.repo, base = s.m->state().ws.get_string("commit"),
       grants = s.grants, what, cancel = s.ws_cancel] {
        return wsops::after_change(*rt, id, repo, base, grants, what, cancel.get());
      },
      [exit = std::move(exit), attempt](actor_t* a, wsops::outcome& o) {
        auto& s = a->state;
        auto now = now_unix_ms();
        if (exit) s.m->step_exited(exit->first, attempt, exit->second, now);
        take_outcome(a, o);
        if (o.failure && !is_terminal(s.m->state().status)) s.m->fail(o.failure->message, now);
      });
}

// Record a started step's pid (unsynced) so that a restarted node can kill what a crash left
// behind. Only while no commit job is in flight: that job's writes must not be overtaken.
void record_pid(actor_t* self) {
  auto& s = self->state;
  if (!s.pid_dirty || s.busy) return;
  s.pid_dirty = false;
  persistence::write_set w;
  w.sessions.emplace_back(s.id, snapshot_text(s));
  auto st = s.rt->store->commit_unsynced(w);
  if (!st) logger()->warn("{}: recording the step pid failed: {}", s.id, st.err().message);
}

void launch(actor_t* self, const action& a) {
  auto& s = self->state;
  auto& rt = *s.rt;
  const step_spec* spec = s.m->state().spec.step(a.step);
  BERTH_ASSERT(spec != nullptr, "launch of unknown step " + a.step);
  auto dir = workdir(rt, s.id);
  if (spec->kind != step_kind::run && spec->kind != step_kind::setup &&
      spec->kind != step_kind::agent) {
    // commit, push, pull_request: git and forge work of the node, on the I/O pool.
    rt.counters.steps_started++;
    auto r = s.rt;
    auto st = s.m->state();
    ws_job(
        self,
        [r, st, grants = s.grants, sp = *spec, cancel = s.ws_cancel] {
          return wsops::git_step(*r, st, grants, sp, cancel.get());
        },
        [step = a.step, attempt = a.attempt](actor_t* self2, wsops::outcome& o) {
          take_outcome(self2, o);  // git.committed, git.pushed, pr.opened: before the step's end
          self2->state.m->step_exited(step, attempt, o.exit, now_unix_ms());
        });
    return;
  }
  sandbox::command cmd;
  cmd.session = s.id;
  cmd.argv = spec->run;
  const auto& net = spec->network.empty() ? s.m->state().spec.network : spec->network;
  cmd.network = net == "host";
  std::shared_ptr<wsops::setup_job> setup_job;
  if (spec->kind == step_kind::setup) {
    setup_job = std::make_shared<wsops::setup_job>(
        wsops::plan_setup(rt, s.id, spec->run, spec->env, cmd.network));
    cmd.argv = setup_job->argv;
  }
  const auto& state = s.m->state();
  const auto* st = state.step(a.step);
  if (spec->kind == step_kind::agent) {
    // A command agent: its argv with {goal}, {step}, {session}, {attempt} and {loop} filled in.
    std::map<std::string, std::string> vars = {{"{goal}", state.spec.goal},
                                               {"{step}", a.step},
                                               {"{session}", s.id},
                                               {"{attempt}", std::to_string(a.attempt)},
                                               {"{loop}", std::to_string(st ? st->loops : 0)}};
    cmd.argv.clear();
    for (auto arg : spec->agent_run) {
      for (const auto& [k, v] : vars)
        for (auto p = arg.find(k); p != std::string::npos; p = arg.find(k, p + v.size()))
          arg.replace(p, k.size(), v);
      cmd.argv.push_back(std::move(arg));
    }
  }
  // Paths as the command sees them (the sandbox's), never the node's.
  auto where = rt.runner->layout_of(s.id);
  cmd.cwd = where.work;
  cmd.env = setup::base_environment(where, s.id, rt.cfg.sandbox.env);
  cmd.env["BERTH_STEP"] = a.step;
  cmd.env["BERTH_ATTEMPT"] = std::to_string(a.attempt);
  if (!state.spec.goal.empty()) cmd.env["BERTH_GOAL"] = state.spec.goal;
  if (spec->kind == step_kind::agent) {
    // The step's context: how the steps it needs ended, and why it runs again after a loop.
    json::value ctx = json::value::make_object();
    ctx.set("goal", state.spec.goal);
    ctx.set("step", a.step);
    ctx.set("loop", st ? st->loops : 0);
    ctx.set("needs", state.needs_of(*spec));
    cmd.env["BERTH_CONTEXT"] = ctx.dump();
    cmd.env["BERTH_LOOP"] = std::to_string(st ? st->loops : 0);
  }
  for (const auto& [k, v] : spec->env) cmd.env[k] = v;
  cmd.max_output_bytes = rt.cfg.session.max_output_bytes;
  cmd.chunk_bytes = static_cast<std::size_t>(rt.cfg.session.output_chunk_bytes);

  auto fail_start = [&](const std::string& why) {
    exit_result r;
    r.start_failed = true;
    r.error = why;
    s.m->step_exited(a.step, a.attempt, r, now_unix_ms());
  };
  if (cmd.argv.empty() || cmd.argv[0].empty()) {
    fail_start(std::string(spec->kind == step_kind::setup ? "setup" : "step") +
               " has no command to run");
    return;
  }
  // The work root was checked for writability at start-up; here only make the directory.
  std::error_code dir_ec;
  std::filesystem::create_directories(dir, dir_ec);
  if (dir_ec) {
    fail_start("session working directory " + dir + ": " + dir_ec.message());
    return;
  }
  auto bus = rt.bus;
  auto subject = rt.names.log(s.id, a.step);
  auto attempt = std::to_string(a.attempt);
  auto on_output = [bus, subject, attempt](int stream, std::string_view chunk, bool truncated) {
    std::map<std::string, std::string> h = {{"Berth-Stream", stream == 1 ? "stdout" : "stderr"},
                                            {"Berth-Attempt", attempt}};
    if (truncated) h["Berth-Truncated"] = "true";
    (void)bus->publish_core(subject, redact::apply(chunk), h);
  };
  running_step r;
  r.step = a.step;
  r.attempt = a.attempt;
  r.proc = std::make_shared<step_process>();
  r.proc->setup = setup_job;
  if (auto old = s.running.find(a.step); old != s.running.end()) {
    // An earlier attempt sent back by a loop, still stopping: its end is stale now.
    old->second.proc->stop(millis(0));
    rt.counters.steps_running--;
  }
  s.running[a.step] = r;
  rt.counters.steps_running++;
  rt.counters.steps_started++;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  // A scratch workspace has no checkpoint to take: its quota is checked on the thread that
  // waited for the command, not in a workspace job of its own (one hop less per step).
  bool quota_here = !state.has_repo() && rt.cfg.workspace.quota_bytes > 0;
  rt.launcher->post([runner = rt.runner, cmd = std::move(cmd), on_output, proc = r.proc, me,
                     step = a.step, att = a.attempt, quota_here, rtp = s.rt, id = s.id]() mutable {
    if (proc->setup) {
      wsops::begin_setup(*rtp, *proc->setup);
      cmd.argv = proc->setup->argv;  // without npm ci when the node restored its tree
    }
    auto started = runner->start(cmd, on_output);
    {
      std::lock_guard lock(proc->mu);
      if (!started) {
        proc->start_error = started.err();
      } else {
        proc->cmd = std::move(*started);
        proc->pid = proc->cmd->pid();  // -1 in a sandbox: nothing to record for a leftover kill
        if (proc->pid > 0) proc->start_time = process::start_time(proc->pid).value_or(0);
        if (proc->stop_requested) proc->cmd->stop(proc->grace);
      }
    }
    if (!started) {
      caf::anon_send(me, exited_atom::value, step, att);
      return;
    }
    caf::anon_send(me, stepup_atom::value, step, att);
    // Waiting blocks for as long as the command runs: its own thread, not the launcher's.
    std::thread([proc, me, step, att, quota_here, rtp, id] {
      auto out = proc->cmd->wait();
      if (proc->setup) wsops::end_setup(*rtp, *proc->setup);
      std::optional<error> over;
      if (quota_here)
        if (auto q = wsops::check_quota(*rtp, id); !q) over = q.err();
      {
        std::lock_guard lock(proc->mu);
        proc->result = out;
        proc->over_quota = std::move(over);
      }
      caf::anon_send(me, exited_atom::value, step, att);
    }).detach();
  });
  if (spec->timeout)
    self->delayed_send(self, *spec->timeout, steptmo_atom::value, a.step, a.attempt);
  schedule_tick(self, state.deadline_ms());
}

// Stop a step's command (cancel, timeout, or the step was sent back by a loop).
void kill_step(actor_t* self, const std::string& step, const std::string& why) {
  auto& s = self->state;
  auto it = s.running.find(step);
  if (it == s.running.end() || !it->second.kill_reason.empty()) return;
  it->second.kill_reason = why;
  it->second.proc->stop(s.rt->cfg.session.kill_grace);
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
      launch(self, a);
      break;
    case action::kind::prepare:
      if (s.stopping) break;
      start_prepare(self, false);
      schedule_tick(self, s.m->state().deadline_ms());  // a timeout abandons a long clone
      break;
    case action::kind::kill:
      kill_step(self, a.step, a.kill_reason);
      break;
  }
}

void execute_all(actor_t* self, const std::vector<action>& actions) {
  for (const auto& a : actions) execute(self, a);
  // A command whose step the journal no longer has running at that attempt (sent back by a
  // loop) is stopped; its end is then stale and ignored.
  auto& s = self->state;
  for (auto& [step, r] : s.running) {
    const auto* st = s.m->state().step(step);
    if (!st || st->status != step_status::running || st->attempt != r.attempt)
      kill_step(self, step, "sent back by a loop");
  }
}

// Commit what the machine decided, then act. The heart of the durability argument: snapshot
// (synced) and outbox published (the two at once, committer.hpp) -> act / take the next input.
void dispatch_tools(actor_t* self);

void pump(actor_t* self) {
  auto& s = self->state;
  if (!s.m || s.busy || s.finalizing) return;
  if (s.ws_busy) {
    // A workspace job runs; its answer pumps again. Only commit what is already decided, and
    // abandon the job's transfer if the session is ending.
    const auto& st = s.m->state();
    if (s.stopping || st.cancel_requested || is_terminal(st.status) ||
        now_unix_ms() >= st.deadline_ms())
      s.ws_cancel->store(true);
    auto emitted = s.m->take_emitted();
    for (auto& e : emitted) s.outbox.push_back(std::move(e));
    if (!s.outbox.empty()) start_commit(self);
    return;
  }
  std::vector<action> next;
  if (!s.stopping) next = s.m->advance(now_unix_ms());
  auto emitted = s.m->take_emitted();
  for (auto& e : emitted) s.outbox.push_back(std::move(e));
  if (!s.outbox.empty()) {
    s.after_commit = next;
    start_commit(self);
    return;
  }
  // Everything decided is committed: tool calls journaled as tool.call may run now.
  if (!s.stopping) dispatch_tools(self);
  if (is_terminal(s.m->state().status)) {
    if (s.running.empty() && s.tools_running.empty() && !s.preparing) {
      if (!s.wrapped) {
        start_wrap_up(self);
      } else if (s.indexed_key != index_key(s.m->state().queue_entry())) {
        update_index(self);  // the terminal entry lands before the session lets go
      } else {
        finalize(self);
      }
    }
    return;
  }
  if (s.needs_restore && !s.stopping) {
    start_prepare(self, true);
    return;
  }
  if (s.stopping) {
    if (s.running.empty()) self->quit();
    return;
  }
  execute_all(self, next);
  // A step that could not start is decided at once: run the machine again.
  if (!s.m->has_emitted()) return;
  pump(self);
}

// --- tool calls ---------------------------------------------------------------------------------

constexpr std::size_t inline_result_bytes = 64 * 1024;  // larger results go to BERTH_LOG
constexpr std::size_t inline_output_bytes = 16 * 1024;  // of exec's stdout/stderr, in the result

json::value tool_error(const error& e) {
  json::value r = json::value::make_object();
  r.set("ok", false);
  r.set("code", std::string(errc_name(e.code)));
  r.set("error", e.message);
  return r;
}

// A result too large for the journal is stored on the call's BERTH_LOG subject; the journal
// gets a pointer to it.
json::value offload(runtime& rt, const std::string& session, const std::string& call_id,
                    json::value result) {
  auto text = result.dump();
  if (text.size() <= inline_result_bytes) return result;
  auto subject = rt.names.log(session, "tool-" + call_id);
  auto ack = rt.bus->publish(subject, text);
  if (!ack)
    return tool_error(error{ack.err().code, "storing the tool result: " + ack.err().message});
  json::value r = json::value::make_object();
  r.set("ok", result.get_bool("ok"));
  r.set("result_subject", subject);
  r.set("result_seq", ack->seq);
  r.set("result_bytes", static_cast<std::int64_t>(text.size()));
  return r;
}

// `exec`: a command in the session's sandbox, output streamed to berth.log.<id>.tool-<call>.
void start_exec_tool(actor_t* self, const std::string& call_id, const json::value& args) {
  auto& s = self->state;
  auto& rt = *s.rt;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  auto fail = [&](const std::string& field, const std::string& why) {
    auto r = tool_error(error{errc::invalid_argument, "args." + field + ": " + why});
    caf::anon_send(me, tooldone_atom::value, call_id, r.dump());
  };
  s.tools_running[call_id] = nullptr;  // started (or refused) once
  sandbox::command cmd;
  cmd.session = s.id;
  const auto* argv = args.find("argv");
  if (!argv || !argv->is_array() || argv->as_array().empty())
    return fail("argv", "required, a non-empty array of strings");
  for (const auto& a : argv->as_array()) {
    if (!a.is_string()) return fail("argv", "must hold strings only");
    cmd.argv.push_back(a.as_string());
  }
  auto dir = workdir(rt, s.id);
  auto where = rt.runner->layout_of(s.id);
  cmd.cwd = where.work;
  if (auto cwd = args.get_string("cwd"); !cwd.empty())
    cmd.cwd = cwd[0] == '/' ? cwd : where.work + "/" + cwd;
  cmd.env = setup::base_environment(where, s.id, rt.cfg.sandbox.env);
  cmd.env["BERTH_TOOL_CALL"] = call_id;
  if (const auto* env = args.find("env"); env && env->is_object())
    for (const auto& [k, v] : env->as_object()) {
      if (!v.is_string()) return fail("env." + k, "must be a string");
      cmd.env[k] = v.as_string();
    }
  if (const auto* in = args.find("stdin"); in && in->is_string()) cmd.stdin_data = in->as_string();
  millis timeout = std::chrono::minutes(10);
  if (auto t = args.get_string("timeout"); !t.empty()) {
    auto d = parse_duration(t, "args.timeout");
    if (!d) {
      caf::anon_send(me, tooldone_atom::value, call_id,
                     tool_error(error{errc::invalid_argument, d.err().message}).dump());
      return;
    }
    timeout = *d;
  }
  cmd.network = s.m->state().spec.network == "host";
  cmd.max_output_bytes = rt.cfg.session.max_output_bytes;
  cmd.chunk_bytes = static_cast<std::size_t>(rt.cfg.session.output_chunk_bytes);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  auto proc = std::make_shared<step_process>();
  s.tools_running[call_id] = proc;
  struct captured {
    std::mutex mu;
    std::string out, err;
  };
  auto cap = std::make_shared<captured>();
  auto bus = rt.bus;
  auto subject = rt.names.log(s.id, "tool-" + call_id);
  auto on_output = [bus, subject, cap](int stream, std::string_view chunk, bool truncated) {
    std::map<std::string, std::string> h = {{"Berth-Stream", stream == 1 ? "stdout" : "stderr"}};
    if (truncated) h["Berth-Truncated"] = "true";
    (void)bus->publish_core(subject, redact::apply(chunk), h);
    std::lock_guard lock(cap->mu);
    auto& keep = stream == 1 ? cap->out : cap->err;
    if (keep.size() < inline_output_bytes)
      keep.append(chunk.substr(0, inline_output_bytes - keep.size()));
  };
  auto r = s.rt;
  auto id = s.id;
  rt.launcher->post([r, id, call_id, cmd = std::move(cmd), on_output, proc, cap, me, subject] {
    auto started = r->runner->start(cmd, on_output);
    if (!started) {
      caf::anon_send(me, tooldone_atom::value, call_id, tool_error(started.err()).dump());
      return;
    }
    {
      std::lock_guard lock(proc->mu);
      proc->cmd = std::move(*started);
      if (proc->stop_requested) proc->cmd->stop(proc->grace);
    }
    std::thread([r, id, call_id, proc, cap, me, subject] {
      auto out = proc->cmd->wait();
      json::value res = json::value::make_object();
      res.set("ok", true);
      if (out.signal)
        res.set("signal", out.signal);
      else
        res.set("exit_code", out.exit_code);
      res.set("duration_ms", out.duration_ms);
      res.set("peak_memory_bytes", out.peak_memory_bytes);
      if (out.oom_killed) res.set("oom_killed", true);
      bool timed_out;
      {
        std::lock_guard lock(proc->mu);
        timed_out = proc->stop_requested;
      }
      if (timed_out) res.set("timed_out", true);
      {
        std::lock_guard lock(cap->mu);
        res.set("stdout", cap->out);
        res.set("stderr", cap->err);
      }
      res.set("stdout_bytes", static_cast<std::int64_t>(out.stdout_bytes));
      res.set("stderr_bytes", static_cast<std::int64_t>(out.stderr_bytes));
      if (out.truncated) res.set("truncated", true);
      res.set("log_subject", subject);
      caf::anon_send(me, tooldone_atom::value, call_id,
                     offload(*r, id, call_id, std::move(res)).dump());
    }).detach();
  });
  self->delayed_send(self, timeout, tooltmo_atom::value, call_id);
}

// Run the next tool call journaled as running, if none runs: one at a time, in journal order,
// so a call sees the effects of the calls before it.
void dispatch_tools(actor_t* self) {
  auto& s = self->state;
  if (!s.tools_running.empty()) return;
  std::string next;
  std::int64_t next_n = 0;
  for (const auto& [call_id, status] : s.m->state().tool_calls) {
    if (status != "running") continue;
    auto a = s.m->state().tool_args.find(call_id);
    auto n = a != s.m->state().tool_args.end() ? a->second.get_int("n") : 0;
    if (next.empty() || n < next_n) {
      next = call_id;
      next_n = n;
    }
  }
  if (!next.empty()) {
    const auto& call_id = next;
    auto a = s.m->state().tool_args.find(call_id);
    json::value spec = a != s.m->state().tool_args.end() ? a->second : json::value::make_object();
    auto tool = spec.get_string("tool");
    json::value args = spec.find("args") ? *spec.find("args") : json::value::make_object();
    if (tool == "exec") {
      start_exec_tool(self, call_id, args);
      return;
    }
    s.tools_running[call_id] = nullptr;
    auto r = s.rt;
    auto id = s.id;
    caf::actor me = caf::actor_cast<caf::actor>(self);
    r->io->post([r, id, call_id, tool, args, me] {
      auto res = r->runner->file_tool(id, tool, args);
      json::value out;
      if (res) {
        out = std::move(*res);
        out.set("ok", true);
      } else {
        out = tool_error(res.err());
      }
      caf::anon_send(me, tooldone_atom::value, call_id,
                     offload(*r, id, call_id, std::move(out)).dump());
    });
  }
}

void read_inputs(actor_t* self) {
  auto& s = self->state;
  if (!s.m) return;
  if (s.reading_inputs) {
    s.inputs_dirty = true;
    return;
  }
  s.reading_inputs = true;
  s.inputs_dirty = false;
  s.inputs = std::make_shared<inputs_box>();
  auto box = s.inputs;
  auto rt = s.rt;
  auto id = s.id;
  auto from = std::max(s.input_cursor, s.m->state().last_input_seq) + 1;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  rt->io->post([rt, id, from, box, me] {
    auto st = rt->bus->read_subject(rt->names.stream_in(), rt->names.input(id), from,
                                    [&](bus::message& m) {
                                      box->msgs.push_back(std::move(m));
                                      return true;
                                    });
    if (!st) box->failure = st.err();
    caf::anon_send(me, inputs_atom::value);
  });
}

// Apply buffered inputs in stream order. Only after the first catch-up read and while no read
// is in flight: then no older input can still be unseen (the node's push consumer started
// before this session loaded, and the catch-up covered everything before it).
void drain_inputs(actor_t* self) {
  auto& s = self->state;
  if (!s.m || !s.inputs_ready || s.reading_inputs || s.pending_inputs.empty()) return;
  for (const auto& [seq, data] : s.pending_inputs) {
    if (seq <= std::max(s.input_cursor, s.m->state().last_input_seq)) continue;
    s.input_cursor = seq;
    auto parsed = json::parse(data);
    json::value v = parsed ? *parsed : json::value();
    if (!parsed) v.set("type", "malformed");
    if (!is_terminal(s.m->state().status)) s.m->input(seq, v, now_unix_ms());
  }
  s.pending_inputs.clear();
  pump(self);
}

void loaded(actor_t* self) {
  auto& s = self->state;
  auto box = std::move(s.load);
  if (box->failure) {
    if (box->failure->is(errc::fenced)) {
      logger()->warn("{}: {}; dropped the local snapshot", s.id, box->failure->message);
      self->quit(caf::exit_reason::user_shutdown);
      return;
    }
    logger()->error("{}: cannot load: {}", s.id, box->failure->message);
    self->quit(caf::make_error(caf::sec::runtime_error, box->failure->message));
    return;
  }
  s.m = std::move(box->m);
  s.epoch = box->epoch;
  s.m->set_owner(s.rt->node_id, s.epoch);
  s.outbox = std::move(box->outbox);
  s.journal_seq = box->journal_seq;
  s.input_cursor = s.m->state().last_input_seq;
  const auto& st = s.m->state();
  if (st.has_repo()) s.lease = spawn_lease(self, s.rt, s.id);
  if (st.has_repo() && st.workspace_ready() && !is_terminal(st.status) &&
      !std::filesystem::exists(workdir(*s.rt, s.id) + "/.git"))
    s.needs_restore = true;
  // A resumed session with its workspace in place: the lease actor has its grants back from
  // the vault (or mints one); the git jobs need a copy.
  if (st.has_repo() && st.workspace_ready() && !is_terminal(st.status) && !s.needs_restore)
    self->request(s.lease, caf::infinite, acquire_atom::value, st.spec.repo)
        .then([self](const std::string& reply) {
          take_lease_answer(self, parse_lease_reply(reply));
          pump(self);
        });
  if (st.status == "pending") {
    // A new session: its sandbox starts now, so the first step does not wait for it. (Resumed
    // sessions build theirs on their next command, after the resume barrier.)
    auto r = s.rt;
    auto id = s.id;
    bool net = st.spec.network == "host";
    caf::actor me = caf::actor_cast<caf::actor>(self);
    s.preparing = true;  // the session is not finalized (its sandbox released) before this ends
    r->launcher->post([r, id, net, me] {
      r->runner->prepare(id, net);
      caf::anon_send(me, prepared_atom::value);
    });
  }
  if (s.rt->runner->name() == "process")
    logger()->warn(
        "{}: runs unsandboxed (sandbox.mode = \"none\"): its commands have the node's "
        "privileges",
        s.id);
  if (!s.fail_reason.empty()) {
    s.m->resume(now_unix_ms(), "session actor failed");
    s.m->fail(s.fail_reason, now_unix_ms());
  } else {
    s.m->resume(now_unix_ms(), "node restarted while the step was running");
  }
  pump(self);
  if (!s.busy && s.outbox.empty()) s.rt->resume.settle(s.id);
  read_inputs(self);
}

caf::behavior session_behavior(actor_t* self, std::shared_ptr<runtime> rt, std::string id,
                               std::string fail_reason) {
  auto& s = self->state;
  s.rt = std::move(rt);
  s.id = std::move(id);
  s.fail_reason = std::move(fail_reason);
  s.rt->counters.sessions++;
  s.rt->sessions.add(s.id, caf::actor_cast<caf::actor>(self));
  self->attach_functor([rt = s.rt, id = s.id, addr = self->address()] {
    rt->resume.settle(id);
    rt->sessions.remove(id, addr);
    rt->counters.sessions--;
  });
  s.load = std::make_shared<load_box>();
  {
    auto box = s.load;
    auto r = s.rt;
    auto sid = s.id;
    caf::actor me = caf::actor_cast<caf::actor>(self);
    bool escalated = !s.fail_reason.empty();
    r->io->post([r, sid, box, me, escalated] {
      load_job(*r, sid, *box, escalated);
      caf::anon_send(me, loaded_atom::value);
    });
  }
  return {
      [=](loaded_atom) { loaded(self); },
      [=](commit_atom) {
        auto& st = self->state;
        auto box = std::move(st.commit);
        st.busy = false;
        st.outbox.erase(st.outbox.begin(),
                        st.outbox.begin() + static_cast<std::ptrdiff_t>(box->published));
        st.journal_seq = box->journal_seq;
        if (box->failure) {
          if (box->failure->is(errc::fenced)) {
            logger()->error(
                "{}: lost ownership (journal moved under us): {}; stopping without touching it",
                st.id, box->failure->message);
            for (auto& [_, r] : st.running) r.proc->stop(millis(0));
            self->quit(caf::exit_reason::user_shutdown);
            return;
          }
          // NATS or disk trouble: keep the outbox (it is in the snapshot) and try again.
          auto delay = std::min(5000, 100 << std::min(st.publish_failures, 6));
          ++st.publish_failures;
          logger()->warn("{}: commit failed ({}); retrying in {} ms", st.id, box->failure->message,
                         delay);
          self->delayed_send(self, std::chrono::milliseconds(delay), retry_atom::value);
          return;
        }
        st.publish_failures = 0;
        if (st.outbox.empty()) st.rt->resume.settle(st.id);
        record_pid(self);
        update_index(self);
        execute_all(self, std::exchange(st.after_commit, {}));
        pump(self);
      },
      [=](retry_atom) {
        auto& st = self->state;
        if (!st.busy && !st.outbox.empty()) start_commit(self);
      },
      [=](exited_atom, const std::string& step, std::int64_t attempt) {
        auto& st = self->state;
        auto it = st.running.find(step);
        if (it == st.running.end() || it->second.attempt != attempt) return;
        auto r = std::move(it->second);
        st.running.erase(it);
        st.rt->counters.steps_running--;
        exit_result x;
        {
          std::lock_guard lock(r.proc->mu);
          if (r.proc->start_error) {
            x.start_failed = true;
            x.error = r.proc->start_error->message;
          }
          x.exit_code = r.proc->result.exit_code;
          x.signal = r.proc->result.signal;
          x.duration_ms = r.proc->result.duration_ms;
          x.duration_us = r.proc->result.duration_us;
          x.truncated = r.proc->result.truncated;
          x.oom_killed = r.proc->result.oom_killed;
          x.peak_memory_bytes = r.proc->result.peak_memory_bytes;
        }
        if (x.start_failed) {
          // could not start: nothing else to say
        } else if (r.interrupted) {
          x.interrupted = true;
        } else if (r.timed_out) {
          x.timed_out = true;
          x.error = r.kill_reason;
        } else if (!r.kill_reason.empty()) {
          x.error = r.kill_reason;
          x.timed_out = r.kill_reason == "session timeout";
        }
        if (r.proc->setup) wsops::describe_setup(*r.proc->setup, x);
        // A command may have changed the workspace: quota and checkpoint before the next one.
        if (!x.start_failed && !x.interrupted && !st.stopping && st.m->state().has_repo()) {
          start_after_change(self, step, std::make_pair(step, std::move(x)), attempt);
          return;
        }
        std::optional<error> over;
        {
          std::lock_guard lock(r.proc->mu);
          over = r.proc->over_quota;
        }
        st.m->step_exited(step, attempt, x, now_unix_ms());
        if (over && !is_terminal(st.m->state().status)) st.m->fail(over->message, now_unix_ms());
        pump(self);
      },
      [=](tooldone_atom, const std::string& call_id, const std::string& result) {
        auto& st = self->state;
        st.tools_running.erase(call_id);
        std::string tool;
        if (auto it = st.m->state().tool_args.find(call_id); it != st.m->state().tool_args.end())
          tool = it->second.get_string("tool");
        auto r = json::parse(result);
        st.m->tool_finished(call_id, r ? std::move(*r) : tool_error(r.err()), now_unix_ms());
        bool changes = tool == "exec" || tool == "write_file" || tool == "edit";
        if (changes && !st.stopping && !is_terminal(st.m->state().status) &&
            (st.m->state().has_repo() || st.rt->cfg.workspace.quota_bytes > 0)) {
          start_after_change(self, "tool:" + call_id, std::nullopt, 0);
          return;
        }
        pump(self);
      },
      [=](wsdone_atom) {
        auto& st = self->state;
        st.ws_busy = false;
        if (auto then = std::exchange(st.ws_then, nullptr)) then();
        if (!st.ws_queue.empty()) {
          auto next = std::move(st.ws_queue.front());
          st.ws_queue.pop_front();
          next();
        }
        pump(self);
      },
      [=](leasenote_atom, const std::string& reply) {
        // A renewal, or revocations while the session ends: journaled as they happen.
        take_lease_answer(self, parse_lease_reply(reply));
        pump(self);
      },
      [=](prepared_atom) {
        self->state.preparing = false;
        pump(self);
      },
      [=](tooltmo_atom, const std::string& call_id) {
        auto& st = self->state;
        auto it = st.tools_running.find(call_id);
        if (it != st.tools_running.end() && it->second)
          it->second->stop(st.rt->cfg.session.kill_grace);
      },
      [=](stepup_atom, const std::string& step, std::int64_t attempt) {
        auto& st = self->state;
        auto it = st.running.find(step);
        if (it == st.running.end() || it->second.attempt != attempt) return;
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
          st.pid_dirty = true;
          record_pid(self);
        } else {
          self->delayed_send(self, std::chrono::milliseconds(50), cleansnap_atom::value, step,
                             attempt);
        }
      },
      [=](cleansnap_atom, const std::string& step, std::int64_t attempt) {
        auto& st = self->state;
        auto it = st.running.find(step);
        if (it == st.running.end() || it->second.attempt != attempt) return;
        st.pid_dirty = true;
        record_pid(self);
      },
      [=](steptmo_atom, const std::string& step, std::int64_t attempt) {
        auto& st = self->state;
        auto it = st.running.find(step);
        if (it == st.running.end() || it->second.attempt != attempt) return;
        auto& r = it->second;
        if (!r.kill_reason.empty()) return;
        const step_spec* spec = st.m->state().spec.step(step);
        r.timed_out = true;
        r.kill_reason = "timed out after " +
                        format_duration(spec && spec->timeout ? *spec->timeout : millis(0));
        r.proc->stop(st.rt->cfg.session.kill_grace);
      },
      [=](tick_atom) {
        if (self->state.tick_ms <= now_unix_ms()) self->state.tick_ms = 0;
        pump(self);
      },
      [=](wake_atom) { read_inputs(self); },
      [=](input_atom, std::uint64_t seq, const std::string& data) {
        auto& st = self->state;
        st.pending_inputs.emplace(seq, data);
        drain_inputs(self);
      },
      [=](inputs_atom) {
        auto& st = self->state;
        auto box = std::move(st.inputs);
        st.reading_inputs = false;
        if (box->failure)
          logger()->warn("{}: reading inputs failed: {}", st.id, box->failure->message);
        for (auto& msg : box->msgs) st.pending_inputs.emplace(msg.seq, std::move(msg.data));
        if (!box->failure) st.inputs_ready = true;
        drain_inputs(self);
        if (st.inputs_dirty || box->failure) {
          if (box->failure)
            self->delayed_send(self, std::chrono::seconds(1), wake_atom::value);
          else
            read_inputs(self);
        }
      },
      [=](stop_atom) {
        auto& st = self->state;
        if (st.stopping) return;
        st.stopping = true;
        if (!st.running.empty())
          self->delayed_send(self, st.rt->cfg.node.shutdown_grace, stopnow_atom::value);
        pump(self);
      },
      [=](stopnow_atom) {
        auto& st = self->state;
        for (auto& [_, r] : st.running) {
          if (!r.kill_reason.empty()) continue;
          r.interrupted = true;
          r.kill_reason = "node shutting down";
          r.proc->stop(st.rt->cfg.session.kill_grace);
        }
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
                         std::string fail_reason) {
  return sys.spawn(session_behavior, std::move(rt), std::move(id), std::move(fail_reason));
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
