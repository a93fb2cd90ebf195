#include "berth/session/spec.hpp"

#include "berth/base/ids.hpp"

#include <cctype>

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
  BERTH_TRY(only_known(v, at,
                       {"id", "kind", "run", "timeout", "retry", "env", "network", "message",
                        "title", "body", "forge"}));
  step_spec s;
  auto id = get_string(v, "id", at + ".id", true);
  if (!id) return id.err();
  BERTH_TRY(validate_id(*id, at + ".id"));
  s.id = *id;
  auto kind = get_string(v, "kind", at + ".kind", false);
  if (!kind) return kind.err();
  if (kind->empty() || *kind == "run")
    s.kind = step_kind::run;
  else if (*kind == "setup")
    s.kind = step_kind::setup;
  else if (*kind == "commit")
    s.kind = step_kind::commit;
  else if (*kind == "push")
    s.kind = step_kind::push;
  else if (*kind == "pull_request")
    s.kind = step_kind::pull_request;
  else
    return bad(at + ".kind",
               "must be one of \"run\", \"setup\", \"commit\", \"push\", "
               "\"pull_request\", not \"" +
                   *kind + "\"");
  // Fields that belong to other kinds are errors, not silently ignored.
  auto only_for = [&](const char* field, std::initializer_list<step_kind> kinds) -> status {
    const auto* f = v.find(field);
    if (!f || f->is_null()) return {};
    for (auto k : kinds)
      if (k == s.kind) return {};
    return bad(at + "." + field,
               std::string("is not used by a step of kind \"") + to_string(s.kind) + "\"");
  };
  BERTH_TRY(only_for("run", {step_kind::run}));
  BERTH_TRY(only_for("env", {step_kind::run, step_kind::setup}));
  BERTH_TRY(only_for("network", {step_kind::run, step_kind::setup}));
  BERTH_TRY(only_for("message", {step_kind::commit}));
  BERTH_TRY(only_for("title", {step_kind::pull_request}));
  BERTH_TRY(only_for("body", {step_kind::pull_request}));
  BERTH_TRY(only_for("forge", {step_kind::pull_request}));
  if (s.kind == step_kind::commit) {
    auto m = get_string(v, "message", at + ".message", true);
    if (!m) return m.err();
    if (m->find_first_not_of(" \t\n") == std::string::npos)
      return bad(at + ".message", "must not be empty");
    s.message = *m;
  }
  if (s.kind == step_kind::pull_request) {
    auto t = get_string(v, "title", at + ".title", true);
    if (!t) return t.err();
    if (t->find_first_not_of(" \t\n") == std::string::npos)
      return bad(at + ".title", "must not be empty");
    s.title = *t;
    auto b = get_string(v, "body", at + ".body", false);
    if (!b) return b.err();
    s.body = *b;
    auto f = get_string(v, "forge", at + ".forge", false);
    if (!f) return f.err();
    s.forge = f->empty() ? "github" : *f;
    if (s.forge != "github" && s.forge != "gitlab" && s.forge != "none")
      return bad(at + ".forge",
                 "must be \"github\", \"gitlab\" or \"none\", not \"" + s.forge + "\"");
  }
  if (s.kind == step_kind::run) {
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
  }
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

const char* to_string(step_kind k) {
  switch (k) {
    case step_kind::run:
      return "run";
    case step_kind::setup:
      return "setup";
    case step_kind::commit:
      return "commit";
    case step_kind::push:
      return "push";
    case step_kind::pull_request:
      return "pull_request";
  }
  return "run";
}

status validate_repo_url(const std::string& url, const std::string& field) {
  if (url.empty()) return bad(field, "must not be empty");
  if (url.size() > 2048) return bad(field, "is longer than 2048 characters");
  for (unsigned char c : url)
    if (c <= 0x20 || c == 0x7f)
      return bad(field, "must not contain white space or control characters");
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) {
    if (url.find(':') != std::string::npos && url.find('@') != std::string::npos)
      return bad(
          field,
          "\"" + url + "\": ssh remotes (user@host:path) are not supported; use an https:// URL");
    return bad(field, "\"" + url +
                          "\" is not a URL; use https://host/owner/repo.git (file:// only where "
                          "workspace.file_allowlist allows)");
  }
  auto scheme = url.substr(0, scheme_end);
  if (scheme != "https" && scheme != "http" && scheme != "file")
    return bad(field, "the " + scheme + ":// scheme is not supported (https://, http://, file://)");
  auto rest = url.substr(scheme_end + 3);
  if (scheme == "file") {
    if (rest.empty() || rest.front() != '/')
      return bad(field, "a file:// URL needs an absolute path (file:///srv/git/repo.git)");
    if (rest.find("/../") != std::string::npos || rest.ends_with("/.."))
      return bad(field, "a file:// URL must not contain \"..\"");
    return {};
  }
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  if (authority.empty()) return bad(field, "\"" + url + "\" has no host");
  if (authority.find('@') != std::string::npos)
    return bad(field,
               "must not carry credentials (user@ or user:password@); configure a "
               "[[credentials.*]] provider for the URL instead");
  if (slash == std::string::npos || slash + 1 >= rest.size())
    return bad(field, "\"" + url + "\" has no repository path");
  return {};
}

status validate_branch(const std::string& name, const std::string& field) {
  auto fail = [&](const std::string& why) { return bad(field, "\"" + name + "\" " + why); };
  if (name.empty()) return bad(field, "must not be empty");
  if (name.size() > 200) return fail("is longer than 200 characters");
  if (name.front() == '-' || name.front() == '/' || name.back() == '/' || name.back() == '.')
    return fail("must not start with - or /, nor end with / or .");
  if (name.ends_with(".lock")) return fail("must not end with .lock");
  if (name.find("..") != std::string::npos || name.find("//") != std::string::npos ||
      name.find("@{") != std::string::npos || name.find("/.") != std::string::npos ||
      name.front() == '.')
    return fail("is not a valid branch name (.., //, @{ or a component starting with .)");
  if (name == "HEAD" || name == "@") return fail("is reserved");
  for (unsigned char c : name)
    if (!(std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '/'))
      return fail("may only contain letters, digits, -, _, . and /");
  return {};
}

std::string session_branch(const session_spec& spec, const std::string& session) {
  if (!spec.branch.empty()) return spec.branch;
  auto shortid = session.size() <= 16 ? session : session.substr(session.size() - 12);
  std::string out;
  for (char c : shortid) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return "berth/" + out;
}

result<session_spec> parse_spec(const json::value& v, const spec_limits& limits) {
  if (!v.is_object()) return wrong_type("spec", "an object", v);
  auto size = v.dump().size();
  if (static_cast<std::int64_t>(size) > limits.max_spec_bytes)
    return error{errc::too_large,
                 "spec: " + std::to_string(size) + " bytes, larger than the limit of " +
                     std::to_string(limits.max_spec_bytes) + " (session.max_spec_bytes)"};
  BERTH_TRY(only_known(v, "",
                       {"id", "repo", "ref", "branch", "submodules", "goal", "timeout", "priority",
                        "network", "steps"}));
  session_spec s;
  auto id = get_string(v, "id", "id", false);
  if (!id) return id.err();
  if (const auto* given = v.find("id"); given && !given->is_null())
    BERTH_TRY(validate_id(*id, "id"));
  s.id = *id;
  auto repo = get_string(v, "repo", "repo", false);
  if (!repo) return repo.err();
  if (const auto* given = v.find("repo"); given && !given->is_null())
    BERTH_TRY(validate_repo_url(*repo, "repo"));
  s.repo = *repo;
  auto ref = get_string(v, "ref", "ref", false);
  if (!ref) return ref.err();
  if (!ref->empty()) {
    if (s.repo.empty()) return bad("ref", "needs a repo to check out");
    if (ref->front() == '-' || ref->find_first_of(" \t\n~^:?*[\\") != std::string::npos ||
        ref->find("..") != std::string::npos || ref->size() > 255)
      return bad("ref", "\"" + *ref + "\" is not a valid branch, tag or commit name");
  }
  s.ref = *ref;
  auto branch = get_string(v, "branch", "branch", false);
  if (!branch) return branch.err();
  if (!branch->empty()) {
    if (s.repo.empty()) return bad("branch", "needs a repo");
    BERTH_TRY(validate_branch(*branch, "branch"));
  }
  s.branch = *branch;
  if (const auto* sub = v.find("submodules"); sub && !sub->is_null()) {
    if (!sub->is_bool()) return wrong_type("submodules", "true or false", *sub);
    if (sub->as_bool() && s.repo.empty()) return bad("submodules", "needs a repo");
    s.submodules = sub->as_bool();
  }
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
    if (st->kind != step_kind::run && st->kind != step_kind::setup && s.repo.empty())
      return bad("steps[" + std::to_string(i) + "].kind",
                 std::string("a ") + to_string(st->kind) + " step needs the session's repo");
    s.steps.push_back(std::move(*st));
  }
  return s;
}

json::value to_json(const session_spec& s) {
  json::value v = json::value::make_object();
  if (!s.id.empty()) v.set("id", s.id);
  if (!s.repo.empty()) v.set("repo", s.repo);
  if (!s.ref.empty()) v.set("ref", s.ref);
  if (!s.branch.empty()) v.set("branch", s.branch);
  if (s.submodules) v.set("submodules", true);
  if (!s.goal.empty()) v.set("goal", s.goal);
  if (s.timeout) v.set("timeout", format_duration(*s.timeout));
  v.set("priority", s.priority);
  if (!s.network.empty()) v.set("network", s.network);
  json::value steps = json::value::make_array();
  for (const auto& st : s.steps) {
    json::value j = json::value::make_object();
    j.set("id", st.id);
    if (st.kind != step_kind::run) j.set("kind", to_string(st.kind));
    if (st.kind == step_kind::run) {
      json::value run = json::value::make_array();
      for (const auto& a : st.run) run.push(a);
      j.set("run", std::move(run));
    }
    if (!st.message.empty()) j.set("message", st.message);
    if (!st.title.empty()) j.set("title", st.title);
    if (!st.body.empty()) j.set("body", st.body);
    if (!st.forge.empty()) j.set("forge", st.forge);
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
