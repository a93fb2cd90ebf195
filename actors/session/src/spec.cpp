#include "berth/session/spec.hpp"

#include "berth/base/ids.hpp"

namespace berth::session {

namespace {

error bad(const std::string& field, const std::string& why) {
  return error{errc::invalid_argument, field + ": " + why};
}

error wrong_type(const std::string& field, const char* expected, const json::value& v) {
  return bad(field, std::string("expected ") + expected + ", got " + json::kind_name(v.type()));
}

status only_known(const json::value& obj, const std::string& where,
                  std::initializer_list<const char*> known) {
  for (const auto& [k, _] : obj.as_object()) {
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    if (!ok) {
      std::string list;
      for (const char* n : known) list += (list.empty() ? "" : ", ") + std::string(n);
      return bad(where.empty() ? k : where + "." + k, "unknown field (known: " + list + ")");
    }
  }
  return {};
}

result<std::string> get_string(const json::value& obj, const char* key, const std::string& field,
                               bool required) {
  const auto* v = obj.find(key);
  if (!v || v->is_null()) {
    if (required) return bad(field, "is required");
    return std::string();
  }
  if (!v->is_string()) return wrong_type(field, "a string", *v);
  for (unsigned char c : v->as_string())
    if (c < 0x20 && c != '\n' && c != '\t') return bad(field, "contains a control character");
  return v->as_string();
}

result<std::optional<millis>> get_duration(const json::value& obj, const char* key,
                                           const std::string& field) {
  const auto* v = obj.find(key);
  if (!v || v->is_null()) return std::optional<millis>();
  if (!v->is_string()) return wrong_type(field, "a duration string such as \"30s\"", *v);
  auto d = parse_duration(v->as_string(), field);
  if (!d) return d.err();
  if (d->count() <= 0) return bad(field, "must be greater than zero");
  return std::optional<millis>(*d);
}

result<std::int64_t> get_int(const json::value& obj, const char* key, const std::string& field,
                             std::int64_t def, std::int64_t min, std::int64_t max) {
  const auto* v = obj.find(key);
  if (!v || v->is_null()) return def;
  if (!v->is_int()) return wrong_type(field, "an integer", *v);
  if (v->as_int() < min || v->as_int() > max)
    return bad(field, std::to_string(v->as_int()) + " is out of range [" + std::to_string(min) +
                          ", " + std::to_string(max) + "]");
  return v->as_int();
}

// The sandbox network policy: "none" (loopback only) or "host".
result<std::string> get_network(const json::value& v, const std::string& field) {
  auto n = get_string(v, "network", field, false);
  if (!n) return n.err();
  if (!n->empty() && *n != "none" && *n != "host")
    return bad(field, "must be \"none\" or \"host\", not \"" + *n + "\"");
  return *n;
}

result<step_spec> parse_step(const json::value& v, const std::string& at,
                             const spec_limits& limits) {
  if (!v.is_object()) return wrong_type(at, "an object", v);
  BERTH_TRY(only_known(v, at, {"id", "run", "timeout", "retry", "env", "network"}));
  step_spec s;
  auto id = get_string(v, "id", at + ".id", true);
  if (!id) return id.err();
  BERTH_TRY(validate_id(*id, at + ".id"));
  s.id = *id;
  const auto* run = v.find("run");
  if (!run || run->is_null())
    return bad(at + ".run", "is required (the command as an array of strings)");
  if (!run->is_array()) return wrong_type(at + ".run", "an array of strings", *run);
  if (run->as_array().empty()) return bad(at + ".run", "must not be empty");
  if (run->as_array().size() > limits.max_argv)
    return bad(at + ".run", "has more than " + std::to_string(limits.max_argv) + " arguments");
  for (std::size_t i = 0; i < run->as_array().size(); ++i) {
    const auto& a = run->as_array()[i];
    std::string f = at + ".run[" + std::to_string(i) + "]";
    if (!a.is_string()) return wrong_type(f, "a string", a);
    if (a.as_string().find('\0') != std::string::npos) return bad(f, "contains a NUL byte");
    s.run.push_back(a.as_string());
  }
  if (s.run[0].empty()) return bad(at + ".run[0]", "the program name must not be empty");
  auto t = get_duration(v, "timeout", at + ".timeout");
  if (!t) return t.err();
  s.timeout = *t;
  if (const auto* r = v.find("retry"); r && !r->is_null()) {
    std::string rat = at + ".retry";
    if (!r->is_object()) return wrong_type(rat, "an object", *r);
    BERTH_TRY(only_known(*r, rat, {"max_attempts", "backoff", "max_backoff"}));
    auto ma = get_int(*r, "max_attempts", rat + ".max_attempts", 1, 1, 100);
    if (!ma) return ma.err();
    s.retry.max_attempts = *ma;
    auto b = get_duration(*r, "backoff", rat + ".backoff");
    if (!b) return b.err();
    if (*b) s.retry.backoff = **b;
    auto mb = get_duration(*r, "max_backoff", rat + ".max_backoff");
    if (!mb) return mb.err();
    if (*mb) s.retry.max_backoff = **mb;
    if (s.retry.max_backoff < s.retry.backoff)
      return bad(rat + ".max_backoff", "must not be shorter than backoff");
  }
  if (const auto* e = v.find("env"); e && !e->is_null()) {
    if (!e->is_object()) return wrong_type(at + ".env", "an object of strings", *e);
    for (const auto& [k, val] : e->as_object()) {
      std::string f = at + ".env." + k;
      if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos)
        return bad(f, "is not a valid environment variable name");
      if (!val.is_string()) return wrong_type(f, "a string", val);
      s.env[k] = val.as_string();
    }
  }
  auto net = get_network(v, at.empty() ? "network" : at + ".network");
  if (!net) return net.err();
  s.network = *net;
  return s;
}

}  // namespace

result<session_spec> parse_spec(const json::value& v, const spec_limits& limits) {
  if (!v.is_object()) return wrong_type("spec", "an object", v);
  auto size = v.dump().size();
  if (static_cast<std::int64_t>(size) > limits.max_spec_bytes)
    return error{errc::too_large,
                 "spec: " + std::to_string(size) + " bytes, larger than the limit of " +
                     std::to_string(limits.max_spec_bytes) + " (session.max_spec_bytes)"};
  BERTH_TRY(
      only_known(v, "", {"id", "repo", "ref", "goal", "timeout", "priority", "network", "steps"}));
  session_spec s;
  auto id = get_string(v, "id", "id", false);
  if (!id) return id.err();
  if (const auto* given = v.find("id"); given && !given->is_null())
    BERTH_TRY(validate_id(*id, "id"));
  s.id = *id;
  auto repo = get_string(v, "repo", "repo", true);
  if (!repo) return repo.err();
  if (repo->empty()) return bad("repo", "must not be empty");
  for (char c : *repo)
    if (c == ' ' || c == '\n' || c == '\t') return bad("repo", "must not contain white space");
  s.repo = *repo;
  auto ref = get_string(v, "ref", "ref", false);
  if (!ref) return ref.err();
  s.ref = *ref;
  auto goal = get_string(v, "goal", "goal", false);
  if (!goal) return goal.err();
  s.goal = *goal;
  auto t = get_duration(v, "timeout", "timeout");
  if (!t) return t.err();
  s.timeout = *t;
  auto p = get_int(v, "priority", "priority", 5, 0, 9);
  if (!p) return p.err();
  s.priority = *p;
  auto net = get_network(v, "network");
  if (!net) return net.err();
  s.network = *net;
  const auto* steps = v.find("steps");
  if (!steps || steps->is_null())
    return bad("steps", "is required: a session needs at least one step");
  if (!steps->is_array()) return wrong_type("steps", "an array of step objects", *steps);
  if (steps->as_array().empty()) return bad("steps", "must contain at least one step");
  if (steps->as_array().size() > limits.max_steps)
    return bad("steps", "has more than " + std::to_string(limits.max_steps) + " steps");
  for (std::size_t i = 0; i < steps->as_array().size(); ++i) {
    auto st = parse_step(steps->as_array()[i], "steps[" + std::to_string(i) + "]", limits);
    if (!st) return st.err();
    for (const auto& prev : s.steps)
      if (prev.id == st->id)
        return bad("steps[" + std::to_string(i) + "].id", "duplicate step id \"" + st->id + "\"");
    s.steps.push_back(std::move(*st));
  }
  return s;
}

json::value to_json(const session_spec& s) {
  json::value v = json::value::make_object();
  if (!s.id.empty()) v.set("id", s.id);
  v.set("repo", s.repo);
  if (!s.ref.empty()) v.set("ref", s.ref);
  if (!s.goal.empty()) v.set("goal", s.goal);
  if (s.timeout) v.set("timeout", format_duration(*s.timeout));
  v.set("priority", s.priority);
  if (!s.network.empty()) v.set("network", s.network);
  json::value steps = json::value::make_array();
  for (const auto& st : s.steps) {
    json::value j = json::value::make_object();
    j.set("id", st.id);
    json::value run = json::value::make_array();
    for (const auto& a : st.run) run.push(a);
    j.set("run", std::move(run));
    if (st.timeout) j.set("timeout", format_duration(*st.timeout));
    if (st.retry.max_attempts != 1 || st.retry.backoff != millis(1000) ||
        st.retry.max_backoff != millis(60'000)) {
      json::value r = json::value::make_object();
      r.set("max_attempts", st.retry.max_attempts);
      r.set("backoff", format_duration(st.retry.backoff));
      r.set("max_backoff", format_duration(st.retry.max_backoff));
      j.set("retry", std::move(r));
    }
    if (!st.env.empty()) {
      json::value e = json::value::make_object();
      for (const auto& [k, val] : st.env) e.set(k, val);
      j.set("env", std::move(e));
    }
    if (!st.network.empty()) j.set("network", st.network);
    steps.push(std::move(j));
  }
  v.set("steps", std::move(steps));
  return v;
}

}  // namespace berth::session
