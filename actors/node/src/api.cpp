#include "api.hpp"

#include "berth/base/ids.hpp"
#include "berth/base/log.hpp"
#include "berth/core/events.hpp"
#include "berth/core/inputs.hpp"
#include "berth/core/machine.hpp"
#include "berth/core/spec.hpp"
#include "berth/session/journal.hpp"
#include "berth/session/journal_writer.hpp"
#include "berth/workspace/git.hpp"

#include <algorithm>
#include <map>

namespace berth::node {

namespace ev = core::ev;

namespace {
std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("api");
  return l;
}

status only_fields(const json::value& req, std::initializer_list<const char*> known) {
  if (!req.is_object()) return error{errc::invalid_argument, "request: expected a JSON object"};
  for (const auto& [k, _] : req.as_object()) {
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    if (!ok) return error{errc::invalid_argument, k + ": unknown field"};
  }
  return {};
}

result<std::string> required_id(const json::value& req) {
  const auto* id = req.find("id");
  if (!id) return error{errc::invalid_argument, "id: is required"};
  if (!id->is_string())
    return error{errc::invalid_argument,
                 std::string("id: expected a string, got ") + json::kind_name(id->type())};
  BERTH_TRY(validate_id(id->as_string(), "id"));
  return id->as_string();
}

// Who made the call, as a gateway vouches for it (a token's name): journaled, never checked
// against anything here.
result<std::string> caller_of(const json::value& req) {
  const auto* c = req.find("caller");
  if (!c || c->is_null()) return std::string();
  if (!c->is_string() || c->as_string().empty() || c->as_string().size() > 128 ||
      !std::all_of(c->as_string().begin(), c->as_string().end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' ||
               ch == '-' || ch == ':' || ch == '@';
      }))
    return error{errc::invalid_argument,
                 "caller: expected 1 to 128 characters of [A-Za-z0-9_.:@-]"};
  return c->as_string();
}

// The spec without its id: two starts are "the same" when everything else matches.
json::value without_id(json::value spec) {
  if (spec.is_object()) {
    auto& o = spec.as_object();
    for (auto it = o.begin(); it != o.end(); ++it)
      if (it->first == "id") {
        o.erase(it);
        break;
      }
  }
  return spec;
}
}  // namespace

std::string error_reply(const error& e) {
  json::value v = json::value::make_object();
  json::value err = json::value::make_object();
  err.set("code", errc_name(e.code));
  err.set("message", e.message);
  v.set("error", std::move(err));
  return v.dump();
}

api_service::api_service(std::shared_ptr<session::runtime> rt) : rt_(std::move(rt)) {}

std::string api_service::handle(const std::string& verb, const std::string& payload) {
  auto max = rt_->cfg.session.max_spec_bytes + 4096;
  if (static_cast<std::int64_t>(payload.size()) > max)
    return error_reply(error{errc::too_large, "spec: request of " + std::to_string(payload.size()) +
                                                  " bytes is larger than the limit of " +
                                                  std::to_string(rt_->cfg.session.max_spec_bytes) +
                                                  " (session.max_spec_bytes)"});
  json::value req = json::value::make_object();
  if (!payload.empty()) {
    auto parsed = json::parse(payload);
    if (!parsed)
      return error_reply(error{errc::invalid_argument, "request: " + parsed.err().message});
    req = std::move(*parsed);
  }
  result<json::value> r =
      error{errc::not_found, "unknown API verb \"" + verb +
                                 "\"; known: session.start, "
                                 "session.get, session.list, session.cancel, session.input, "
                                 "session.retry, session.diff, stats, node.list"};
  if (verb == "session.start")
    r = start(req);
  else if (verb == "session.get")
    r = get(req);
  else if (verb == "session.list")
    r = list(req);
  else if (verb == "session.cancel")
    r = cancel_or_input(req, true);
  else if (verb == "session.input")
    r = cancel_or_input(req, false);
  else if (verb == "stats")
    r = stats(req);
  else if (verb == "node.list")
    r = nodes(req);
  else if (verb == "session.retry")
    r = retry(req);
  else if (verb == "session.diff")
    r = diff(req);
  if (!r) {
    if (!r.err().is(errc::invalid_argument) && !r.err().is(errc::not_found) &&
        !r.err().is(errc::conflict) && !r.err().is(errc::too_large))
      logger()->warn("{} failed: {}", verb, r.err().message);
    return error_reply(r.err());
  }
  return r->dump();
}

result<json::value> api_service::start(const json::value& req) {
  BERTH_TRY(only_fields(req, {"spec", "idempotency_key", "caller"}));
  auto caller = caller_of(req);
  if (!caller) return caller.err();
  const auto* spec_json = req.find("spec");
  if (!spec_json) return error{errc::invalid_argument, "spec: is required"};
  core::spec_limits limits;
  limits.max_spec_bytes = rt_->cfg.session.max_spec_bytes;
  auto spec = core::parse_spec(*spec_json, limits);
  if (!spec) return spec.err();
  BERTH_TRY(workspace::check_remote_allowed(spec->repo, rt_->cfg.workspace.file_allowlist));
  std::string key;
  if (const auto* k = req.find("idempotency_key"); k && !k->is_null()) {
    if (!k->is_string()) return error{errc::invalid_argument, "idempotency_key: expected a string"};
    key = k->as_string();
    if (key.empty() || key.size() > 256)
      return error{errc::invalid_argument, "idempotency_key: must be 1 to 256 characters"};
  }
  bool id_given = !spec->id.empty();
  if (!id_given) spec->id = new_ulid();
  if (key.empty()) key = spec->id;
  auto canonical = core::to_json(*spec);
  auto& rt = *rt_;

  auto existing_reply = [&](const std::string& id,
                            const bus::message& first) -> result<json::value> {
    auto prev = json::parse(first.data);
    json::value prev_spec =
        prev ? (prev->find("spec") ? *prev->find("spec") : json::value()) : json::value();
    if (without_id(prev_spec) != without_id(canonical))
      return error{errc::conflict, "idempotency_key: \"" + key +
                                       "\" was already used for session " + id +
                                       " with a different spec; use a new key or the same spec"};
    auto s = summary_of(id);
    json::value v = json::value::make_object();
    v.set("id", id);
    v.set("status",
          s ? s->get_string("status", core::states::pending) : std::string(core::states::pending));
    v.set("accepted_seq", first.seq);
    v.set("existing", true);
    return v;
  };

  // An explicit id that already has a session: same spec -> the same session, else conflict.
  if (id_given) {
    auto first = rt.bus->next_message(rt.names.stream_in(), rt.names.input(spec->id), 1);
    if (!first) return first.err();
    if (first->has_value()) return existing_reply(spec->id, **first);
  }

  json::value input = json::value::make_object();
  input.set("type", core::input_types::start);
  input.set("spec", canonical);
  input.set("idempotency_key", key);
  if (!caller->empty()) input.set("caller", *caller);
  bus::publish_options po;
  po.msg_id = "start:" + key;
  auto ack = rt.bus->publish(rt.names.input(spec->id), input.dump(), po);
  if (!ack) return ack.err();
  std::optional<json::value> existing;
  if (ack->duplicate) {
    auto first = rt.bus->message_at(rt.names.stream_in(), ack->seq);
    if (!first) return first.err();
    if (!first->has_value())
      return error{errc::internal, "idempotency_key: original start message vanished"};
    auto id = std::string(bus::subjects::last_token((*first)->subject));
    auto r = existing_reply(id, **first);
    if (!r) return r;
    existing = std::move(*r);
    spec->id = id;  // go on: make sure accepted + placement exist (both idempotent)
  }

  // session.accepted is event n=1: written once (the fence makes a repeat a no-op).
  core::event accepted;
  accepted.session = spec->id;
  accepted.n = 1;
  accepted.type = ev::session_accepted;
  accepted.ts_ms = now_unix_ms();
  json::value data = json::value::make_object();
  data.set("spec", canonical);
  data.set("accepted_seq", ack->seq);
  data.set("idempotency_key", key);
  if (!caller->empty()) data.set("caller", *caller);
  data.set("timeout_ms",
           spec->timeout ? spec->timeout->count() : rt.cfg.session.default_timeout.count());
  accepted.data = std::move(data);
  auto aack = session::journal_writer::write_first(*rt.bus, rt.names.journal(spec->id), accepted);
  if (!aack && !aack.err().is(errc::fenced)) return aack.err();

  // The queue entry (list, stats) before the placement: the owner's updates come after it.
  core::session_state entry;
  entry.id = spec->id;
  entry.spec = *spec;
  entry.status = core::states::pending;
  entry.created_ms = entry.updated_ms = accepted.ts_ms;
  if (!existing) {
    auto ist = rt.bus->kv_create(rt.names.bucket_sessions(), spec->id, entry.queue_entry().dump());
    if (!ist && !ist.err().is(errc::conflict)) return ist.err();
  }

  json::value place = json::value::make_object();
  place.set("session", spec->id);
  place.set("priority", spec->priority);
  bus::publish_options ppo;
  ppo.msg_id = "place:" + spec->id;
  auto pack = rt.bus->publish(rt.names.work(static_cast<int>(spec->priority)), place.dump(), ppo);
  if (!pack) return pack.err();

  if (existing) return std::move(*existing);
  json::value v = json::value::make_object();
  v.set("id", spec->id);
  v.set("status", core::states::pending);
  v.set("accepted_seq", ack->seq);
  logger()->info("accepted session {} ({} step(s), priority {})", spec->id, spec->steps.size(),
                 spec->priority);
  return v;
}

result<json::value> api_service::summary_of(const std::string& id) {
  auto folded =
      session::fold_journal(*rt_->bus, rt_->names, id, rt_->cfg.session.default_timeout.count());
  if (!folded) return folded.err();
  const auto& [m, last_seq] = *folded;
  if (m.state().status.empty()) return error{errc::not_found, "session " + id + " not found"};
  auto v = m.state().summary();
  v.set("journal_seq", last_seq);
  return v;
}

result<json::value> api_service::get(const json::value& req) {
  BERTH_TRY(only_fields(req, {"id"}));
  auto id = required_id(req);
  if (!id) return id.err();
  return summary_of(*id);
}

namespace {
namespace states = core::states;
const char* const phases[] = {states::pending,   states::running,   states::waiting,
                              states::retrying,  states::succeeded, states::failed,
                              states::cancelled, states::timed_out};
}  // namespace

result<json::value> api_service::list(const json::value& req) {
  BERTH_TRY(only_fields(req, {"status", "limit", "repo", "cursor"}));
  for (const char* k : {"status", "repo", "cursor"})
    if (const auto* s = req.find(k); s && !s->is_string())
      return error{errc::invalid_argument, std::string(k) + ": expected a string"};
  std::string repo_filter = req.get_string("repo");
  std::string cursor = req.get_string("cursor");
  if (!cursor.empty()) BERTH_TRY(validate_id(cursor, "cursor"));
  std::string status_filter = req.get_string("status");
  if (!status_filter.empty() &&
      std::find(std::begin(phases), std::end(phases), status_filter) == std::end(phases))
    return error{errc::invalid_argument,
                 "status: \"" + status_filter +
                     "\" is not one of pending, running, waiting, retrying, succeeded, failed, "
                     "cancelled, timed_out"};
  std::int64_t limit = 100;
  if (const auto* l = req.find("limit")) {
    if (!l->is_int() || l->as_int() < 1 || l->as_int() > 10000)
      return error{errc::invalid_argument, "limit: expected an integer from 1 to 10000"};
    limit = l->as_int();
  }
  auto& rt = *rt_;
  auto entries = rt.bus->kv_entries(rt.names.bucket_sessions());
  if (!entries) return entries.err();
  json::value arr = json::value::make_array();
  std::string last_id;
  bool more = false;
  // The bucket's newest revision: a client that lists, then follows the bucket's changes after
  // it, misses nothing and never goes back in time.
  std::uint64_t revision = 0;
  for (const auto& [_, e] : *entries) revision = std::max(revision, e.revision);
  // Newest first: ULIDs sort by creation time. A cursor is the last id of the page before.
  auto it =
      cursor.empty() ? entries->rbegin() : std::make_reverse_iterator(entries->lower_bound(cursor));
  for (; it != entries->rend(); ++it) {
    auto row = json::parse(it->second.value);
    if (!row || !row->is_object()) continue;
    if (!status_filter.empty() && row->get_string("status") != status_filter) continue;
    if (!repo_filter.empty() && row->get_string("repo").find(repo_filter) == std::string::npos)
      continue;
    if (static_cast<std::int64_t>(arr.as_array().size()) >= limit) {
      more = true;
      break;
    }
    json::value out = json::value::make_object();
    out.set("id", it->first);
    for (auto& [k, v] : row->as_object()) out.set(k, v);
    out.set("revision", static_cast<std::int64_t>(it->second.revision));
    arr.push(std::move(out));
    last_id = it->first;
  }
  json::value v = json::value::make_object();
  v.set("sessions", std::move(arr));
  v.set("revision", static_cast<std::int64_t>(revision));
  if (more) v.set("next_cursor", last_id);
  return v;
}

result<json::value> api_service::diff(const json::value& req) {
  BERTH_TRY(only_fields(req, {"id"}));
  auto id = required_id(req);
  if (!id) return id.err();
  auto& rt = *rt_;
  auto entry = rt.bus->kv_get(rt.names.bucket_diffs(), *id);
  if (!entry) return entry.err();
  if (entry->has_value()) {
    auto v = json::parse((*entry)->value);
    if (!v) return error{errc::corrupt, "the changes of session " + *id + " are unreadable"};
    v->set("checkpoint", true);
    return std::move(*v);
  }
  auto last = rt.bus->last_message(rt.names.stream_ev(), rt.names.journal(*id));
  if (!last) return last.err();
  if (!last->has_value()) return error{errc::not_found, "session " + *id + " not found"};
  // A session with no checkpoint yet (or a scratch workspace): nothing changed that we know of.
  json::value v = json::value::make_object();
  v.set("session", *id);
  v.set("checkpoint", false);
  v.set("files", json::value::make_array());
  v.set("additions", 0);
  v.set("deletions", 0);
  v.set("patch", "");
  v.set("truncated", false);
  return v;
}

result<json::value> api_service::cancel_or_input(const json::value& req, bool cancel) {
  if (cancel)
    BERTH_TRY(only_fields(req, {"id", "caller"}));
  else
    BERTH_TRY(only_fields(req, {"id", "data", "caller"}));
  auto caller = caller_of(req);
  if (!caller) return caller.err();
  auto id = required_id(req);
  if (!id) return id.err();
  auto& rt = *rt_;
  auto last = rt.bus->last_message(rt.names.stream_ev(), rt.names.journal(*id));
  if (!last) return last.err();
  if (!last->has_value()) return error{errc::not_found, "session " + *id + " not found"};
  auto parsed = json::parse((*last)->data);
  std::string type = parsed ? parsed->get_string("type") : std::string();
  json::value v = json::value::make_object();
  v.set("id", *id);
  if (type.rfind("session.", 0) == 0 && core::is_terminal(type.substr(8))) {
    if (!cancel)
      return error{errc::conflict,
                   "session " + *id + " is already " + type.substr(8) + "; it takes no input"};
    v.set("status", type.substr(8));
    v.set("note", "session already finished; nothing to cancel");
    return v;
  }
  json::value input = json::value::make_object();
  input.set("type", cancel ? "cancel" : "input");
  if (!caller->empty()) input.set("caller", *caller);
  if (!cancel) {
    const auto* data = req.find("data");
    if (!data) return error{errc::invalid_argument, "data: is required"};
    input.set("data", *data);
  }
  auto ack = rt.bus->publish(rt.names.input(*id), input.dump());
  if (!ack) return ack.err();
  v.set("status", cancel ? "cancelling" : "accepted");
  v.set("input_seq", ack->seq);
  return v;
}

result<json::value> api_service::nodes(const json::value& req) {
  BERTH_TRY(only_fields(req, {}));
  auto entries = rt_->bus->kv_entries(rt_->names.bucket_nodes());
  if (!entries) return entries.err();
  auto now = now_unix_ms();
  json::value list = json::value::make_array();
  for (const auto& [id, e] : *entries) {
    auto rec = json::parse(e.value);
    if (!rec || !rec->is_object()) continue;  // not a heartbeat of ours
    auto ts = rec->get_int("ts_ms");
    if (ts == 0) ts = parse_timestamp(rec->get_string("ts"));  // records of older nodes
    auto beat = rec->get_int("heartbeat_ms", rt_->cfg.cluster.heartbeat.count());
    auto age = now - ts;
    const char* state = age <= 3 * beat                            ? "ready"
                        : age <= rt_->cfg.cluster.node_ttl.count() ? "suspect"
                                                                   : "dead";
    json::value n = *rec;
    n.set("id", id);
    n.set("last_heartbeat", format_timestamp(ts));
    n.set("age_ms", age);
    n.set("state", state);
    list.push(std::move(n));
  }
  json::value v = json::value::make_object();
  v.set("nodes", std::move(list));
  return v;
}

result<json::value> api_service::stats(const json::value& req) {
  BERTH_TRY(only_fields(req, {}));
  auto& rt = *rt_;
  json::value v = json::value::make_object();
  v.set("node", rt.node_id);
  v.set("runner", rt.runner->name());
  v.set("max_sessions", rt.cfg.node.max_sessions);
  v.set("sessions", rt.counters.sessions.load());
  v.set("steps_running", rt.counters.steps_running.load());
  v.set("steps_started", rt.counters.steps_started.load());
  v.set("sessions_finished", rt.counters.sessions_finished.load());
  v.set("restarts", rt.counters.restarts.load());
  v.set("escalations", rt.counters.escalations.load());
  v.set("lease_revoke_failures", rt.counters.lease_revoke_failures.load());
  json::value loads = json::value::make_object();
  loads.set("snapshot", rt.counters.loads_snapshot.load());
  loads.set("reconciled", rt.counters.loads_reconciled.load());
  loads.set("folded", rt.counters.loads_folded.load());
  v.set("session_loads", std::move(loads));
  v.set("uptime_ms", now_unix_ms() - rt.started_ms);
  auto queued = rt.bus->stream_subjects(rt.names.stream_work(), rt.names.work_wildcard());
  if (queued) {
    std::int64_t total = 0;
    for (const auto& [subject, n] : *queued) total += static_cast<std::int64_t>(n);
    v.set("placements_queued", total);
  }
  // The cluster's sessions by priority and phase, from the berth-sessions bucket.
  auto entries = rt.bus->kv_entries(rt.names.bucket_sessions());
  if (!entries) return entries.err();
  std::map<std::int64_t, std::map<std::string, std::int64_t>> by;
  std::map<std::string, std::int64_t> totals;
  for (const auto& p : phases) totals[p] = 0;
  for (const auto& [id, e] : *entries) {
    auto row = json::parse(e.value);
    if (!row) continue;
    auto phase = row->get_string("status");
    auto& counts = by[row->get_int("priority", 5)];
    if (counts.empty())
      for (const auto& p : phases) counts[p] = 0;
    counts[phase]++;
    totals[phase]++;
  }
  json::value queue = json::value::make_object();
  for (auto it = by.rbegin(); it != by.rend(); ++it) {  // highest priority first
    json::value c = json::value::make_object();
    for (const auto& p : phases) c.set(p, it->second[p]);
    queue.set(std::to_string(it->first), std::move(c));
  }
  json::value t = json::value::make_object();
  for (const auto& p : phases) t.set(p, totals[p]);
  v.set("sessions_by_status", std::move(t));
  v.set("by_priority", std::move(queue));
  return v;
}

result<json::value> api_service::retry(const json::value& req) {
  BERTH_TRY(only_fields(req, {"id", "from", "idempotency_key", "caller"}));
  auto id = required_id(req);
  if (!id) return id.err();
  // One fold of the journal gives both the spec and how the session ended.
  auto folded =
      session::fold_journal(*rt_->bus, rt_->names, *id, rt_->cfg.session.default_timeout.count());
  if (!folded) return folded.err();
  const auto& old = folded->first.state();
  if (old.status.empty()) return error{errc::not_found, "session " + *id + " not found"};
  if (!core::is_terminal(old.status))
    return error{errc::conflict, "id: session " + *id + " is still " + old.status +
                                     "; cancel it first or wait for it to end"};
  json::value again = old.spec_json;
  auto& o = again.as_object();
  for (const char* k : {"id", "retry_of", "start_at"})
    for (auto it = o.begin(); it != o.end(); ++it)
      if (it->first == k) {
        o.erase(it);
        break;
      }
  again.set("retry_of", *id);
  if (const auto* from = req.find("from"); from && !from->is_null()) {
    if (!from->is_string()) return error{errc::invalid_argument, "from: expected a step id"};
    if (old.spec.index_of(from->as_string()) < 0) {
      std::string known;
      for (const auto& st : old.spec.steps) known += (known.empty() ? "" : ", ") + st.id;
      return error{errc::invalid_argument, "from: session " + *id + " has no step \"" +
                                               from->as_string() + "\" (its steps: " + known + ")"};
    }
    again.set("start_at", from->as_string());
  }
  json::value start_req = json::value::make_object();
  start_req.set("spec", std::move(again));
  if (const auto* k = req.find("idempotency_key")) start_req.set("idempotency_key", *k);
  if (const auto* c = req.find("caller")) start_req.set("caller", *c);
  auto r = start(start_req);
  if (!r) return r;
  r->set("retry_of", *id);
  return r;
}

}  // namespace berth::node
