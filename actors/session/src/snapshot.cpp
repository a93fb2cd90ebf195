// The session's snapshot: its encoding (what RocksDB holds per session), loading it, and
// reconciling it with the journal tail.

#include "actor_state.hpp"

#include "berth/base/log.hpp"
#include "berth/base/redact.hpp"
#include "berth/session/journal.hpp"

namespace berth::session {

using namespace core;  // NOLINT(google-build-using-namespace): the session runs the core

std::shared_ptr<spdlog::logger> session_logger() {
  static auto l = log::get("session");
  return l;
}

std::string workdir(const runtime& rt, const std::string& id) {
  return wsops::workdir(rt, id);
}

namespace {

json::value snapshot_json(const session_state_actor& s) {
  json::value v = json::value::make_object();
  v.set("v", 1);
  v.set("node", s.rt->node_id);
  v.set("epoch", s.owner.epoch);
  v.set("journal_seq", s.journal.position());
  if (s.m) v.set("state", s.m->state().to_json(false, false));
  json::value ob = json::value::make_array();
  for (const auto& e : s.journal.outbox()) ob.push(e.envelope());
  v.set("outbox", std::move(ob));
  json::value procs = json::value::make_array();
  for (const auto& [_, r] : s.cmds.steps) {
    if (r.pid <= 0) continue;
    json::value p = json::value::make_object();
    p.set("pid", r.pid);
    p.set("start_time", static_cast<std::int64_t>(r.start_time));
    procs.push(std::move(p));
  }
  if (!procs.as_array().empty()) v.set("procs", std::move(procs));
  return v;
}

result<std::pair<machine, std::uint64_t>> fold(runtime& rt, const std::string& id) {
  return fold_journal(*rt.bus, rt.names, id, rt.cfg.session.default_timeout.count());
}

// The state rebuilt from the journal (the source of truth); outbox events that never reached
// the journal had no effects yet, so nothing is lost by dropping them.
void take_fold(runtime& rt, const std::string& id, load_result& out) {
  auto folded = fold(rt, id);
  if (!folded) {
    out.failure = folded.err();
    return;
  }
  out.m.emplace(std::move(folded->first));
  out.journal_seq = folded->second;
  rt.counters.loads_folded++;
}

// A step process left over by a crashed node is killed before anything else runs.
void kill_leftovers(const std::string& id, const json::value& doc) {
  std::vector<json::value> procs;
  if (const auto* p = doc.find("proc"); p && p->is_object()) procs.push_back(*p);  // v1
  if (const auto* p = doc.find("procs"); p && p->is_array())
    for (const auto& e : p->as_array()) procs.push_back(e);
  for (const auto& p : procs) {
    auto pid = static_cast<pid_t>(p.get_int("pid"));
    auto st = static_cast<unsigned long long>(p.get_int("start_time"));
    if (sandbox::kill_leftover(pid, st))
      session_logger()->warn("{}: killed leftover step process group {}", id, pid);
  }
}

}  // namespace

// The spec, which never changes, is serialized and redacted once and spliced in at the top
// level: a 1,000-step graph's spec is written at every transition, and building it again each
// time was most of a step's cost.
std::string snapshot_text(session_state_actor& s) {
  auto body = redact::apply(snapshot_json(s).dump());
  if (!s.m || s.m->state().spec_json.is_null()) return body;
  const auto& st = s.m->state();
  auto& c = s.snap;
  if (c.spec_text.empty()) c.spec_text = redact::apply(st.spec_json.dump());
  c.step_texts.resize(st.steps.size());
  std::string steps = "[";
  for (std::size_t i = 0; i < st.steps.size(); ++i) {
    const auto& step = st.steps[i];
    if (step.pristine()) continue;
    auto& [seen, text] = c.step_texts[i];
    if (text.empty() || !(seen == step)) {
      seen = step;
      text = redact::apply(step.to_json().dump());
    }
    if (steps.size() > 1) steps += ',';
    steps += text;
  }
  steps += ']';
  return "{\"spec\":" + c.spec_text + ",\"steps\":" + steps + "," + body.substr(1);
}

// `escalated`: the supervisor gave up on this session; whatever made its actors fail may be in
// the local snapshot, so rebuild from the journal.
load_result load_session(runtime& rt, const std::string& id, const claim& owner, bool escalated) {
  load_result out;
  out.epoch = owner.epoch;
  auto snap = rt.store->get_session(id);
  if (escalated) {
    if (out.epoch == 0 && snap && snap->has_value())
      if (auto doc = json::parse(**snap))
        out.epoch = static_cast<std::uint64_t>(doc->get_int("epoch"));
    take_fold(rt, id, out);
    return out;
  }
  if (!snap) {
    out.failure = snap.err();
    return out;
  }
  std::optional<json::value> doc;
  if (snap->has_value()) {
    auto parsed = json::parse(**snap);
    if (!parsed) {
      out.failure = error{errc::corrupt, "snapshot of session " + id + ": " + parsed.err().message};
      return out;
    }
    doc = std::move(*parsed);
  }
  // Still ours? After a takeover the other node's journal writes would otherwise be adopted.
  // Placement (or the start-up scan) verified it when it passed an epoch.
  bool verified = owner.epoch != 0;
  if (!verified) {
    auto rec = rt.bus->kv_get(rt.names.bucket_owners(), id);
    if (rec && rec->has_value() && (*rec)->value != rt.node_id) {
      out.failure = error{errc::fenced, "session " + id + " is now owned by " + (*rec)->value};
      persistence::write_set w;
      w.deleted_sessions.push_back(id);
      // Best effort: a snapshot left behind is dropped again by the next load (fenced again).
      if (auto st = rt.store->commit(w); !st)
        session_logger()->warn("{}: deleting the fenced snapshot failed: {}", id, st.err().message);
      return out;
    }
    if (rec && rec->has_value()) {
      out.epoch = (*rec)->revision;
      verified = true;
    } else if (!rec) {
      session_logger()->warn("{}: cannot read its owner ({}); the journal fence still protects it",
                             id, rec.err().message);
    }
    if (out.epoch == 0 && doc) out.epoch = static_cast<std::uint64_t>(doc->get_int("epoch"));
  }
  if (doc) kill_leftovers(id, *doc);
  const json::value* state = doc ? doc->find("state") : nullptr;
  const json::value* ob = doc ? doc->find("outbox") : nullptr;
  if (verified && state && state->is_object() && ob && ob->is_array() && ob->as_array().empty() &&
      owner.journal_length >= 0) {
    // Still ours, nothing left to publish, and the journal exactly as long as the snapshot
    // says: no journal read. (A commit publishes while its snapshot is synced, so the journal
    // can be ahead of a snapshot; the count catches that.)
    auto st = session_state::from_json(*state, doc->find("spec"), doc->find("steps"));
    if (!st) {
      out.failure = st.err();
      return out;
    }
    if (owner.journal_length == st->n) {
      out.m.emplace(std::move(*st), rt.cfg.session.default_timeout.count());
      out.journal_seq = static_cast<std::uint64_t>(doc->get_int("journal_seq"));
      rt.counters.loads_snapshot++;
      return out;
    }
  }
  auto last = rt.bus->last_message(rt.names.stream_ev(), rt.names.journal(id));
  if (!last) {
    out.failure = last.err();
    return out;
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
      out.failure = st.err();
      return out;
    }
    if (journal_n <= st->n) {
      // Normal resume: the snapshot is at or ahead of the journal. Events the journal already
      // has leave the outbox; the rest are published again (same Nats-Msg-Id).
      out.m.emplace(std::move(*st), rt.cfg.session.default_timeout.count());
      if (ob && ob->is_array()) {
        for (const auto& e : ob->as_array()) {
          auto ev = event::from_envelope(e);
          if (ev && ev->n > journal_n) out.outbox.push_back(std::move(*ev));
        }
      }
      out.journal_seq = journal_seq;
      rt.counters.loads_reconciled++;
      return out;
    }
    session_logger()->warn(
        "{}: journal (n={}) is ahead of the snapshot (n={}); rebuilding from the journal", id,
        journal_n, st->n);
  }
  take_fold(rt, id, out);
  return out;
}

// Record a started step's pid (unsynced) so that a restarted node can kill what a crash left
// behind. Only while no commit is in flight: that commit's writes must not be overtaken.
void record_pid(actor_t* self) {
  auto& s = self->state;
  if (!s.snap.pid_dirty || s.committing) return;
  s.snap.pid_dirty = false;
  persistence::write_set w;
  w.sessions.emplace_back(s.id, snapshot_text(s));
  auto st = s.rt->store->commit_unsynced(w);
  if (!st) session_logger()->warn("{}: recording the step pid failed: {}", s.id, st.err().message);
}

}  // namespace berth::session
