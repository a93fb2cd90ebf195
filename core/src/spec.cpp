#include "berth/core/spec.hpp"

#include "berth/base/ids.hpp"

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <set>

namespace berth::core {

namespace {

error bad(const std::string& field, const std::string& why) {
  return error{errc::invalid_argument, field + ": " + why};
}

error wrong_type(const std::string& field, const char* expected, const json::value& v) {
  return bad(field, std::string("expected ") + expected + ", got " + json::kind_name(v.type()));
}

template <class Keys>
status only_known(const json::value& obj, const std::string& where, const Keys& known) {
  for (const auto& [k, _] : obj.as_object()) {
    bool ok = false;
    for (const auto& n : known) ok = ok || k == n;
    if (!ok) {
      std::string list;
      for (const auto& n : known) list += (list.empty() ? "" : ", ") + std::string(n);
      return bad(where.empty() ? k : where + "." + k, "unknown field (known: " + list + ")");
    }
  }
  return {};
}

status only_known(const json::value& obj, const std::string& where,
                  std::initializer_list<const char*> known) {
  return only_known<std::initializer_list<const char*>>(obj, where, known);
}

result<bool> get_bool(const json::value& obj, const char* key, const std::string& field) {
  const auto* v = obj.find(key);
  if (!v || v->is_null()) return false;
  if (!v->is_bool()) return wrong_type(field, "true or false", *v);
  return v->as_bool();
}

// An argv: a non-empty array of strings without NUL bytes.
result<std::vector<std::string>> get_argv(const json::value& v, const std::string& field,
                                          const spec_limits& limits) {
  if (!v.is_array()) return wrong_type(field, "an array of strings", v);
  if (v.as_array().empty()) return bad(field, "must not be empty");
  if (v.as_array().size() > limits.max_argv)
    return bad(field, "has more than " + std::to_string(limits.max_argv) + " arguments");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < v.as_array().size(); ++i) {
    const auto& a = v.as_array()[i];
    std::string f = field + "[" + std::to_string(i) + "]";
    if (!a.is_string()) return wrong_type(f, "a string", a);
    if (a.as_string().find('\0') != std::string::npos) return bad(f, "contains a NUL byte");
    out.push_back(a.as_string());
  }
  if (out[0].empty()) return bad(field + "[0]", "the program name must not be empty");
  return out;
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
  BERTH_TRY(only_known(v, at, step_keys()));
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
  else if (*kind == "agent")
    s.kind = step_kind::agent;
  else
    return bad(at + ".kind",
               "must be one of \"run\", \"setup\", \"commit\", \"push\", "
               "\"pull_request\", \"agent\", not \"" +
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
  BERTH_TRY(only_for("run", {step_kind::run, step_kind::setup}));
  BERTH_TRY(only_for("network", {step_kind::run, step_kind::setup, step_kind::agent}));
  BERTH_TRY(only_for("message", {step_kind::commit}));
  BERTH_TRY(only_for("title", {step_kind::pull_request}));
  BERTH_TRY(only_for("body", {step_kind::pull_request}));
  BERTH_TRY(only_for("forge", {step_kind::pull_request}));
  BERTH_TRY(only_for("agent", {step_kind::agent}));
  BERTH_TRY(only_for("on_reject", {step_kind::agent}));
  BERTH_TRY(only_for("env", {step_kind::run, step_kind::setup, step_kind::agent}));
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
  if (s.kind == step_kind::run || s.kind == step_kind::setup) {
    // setup: optional, the project's own setup command instead of detection.
    const auto* run = v.find("run");
    if (s.kind == step_kind::run && (!run || run->is_null()))
      return bad(at + ".run", "is required (the command as an array of strings)");
    if (run && !run->is_null()) {
      auto argv = get_argv(*run, at + ".run", limits);
      if (!argv) return argv.err();
      s.run = std::move(*argv);
    }
  }
  if (s.kind == step_kind::agent) {
    std::string aat = at + ".agent";
    const auto* a = v.find("agent");
    if (!a || a->is_null())
      return bad(aat,
                 "is required: { mode = \"external\" } or { mode = \"command\", run = [...] }");
    if (!a->is_object()) return wrong_type(aat, "an object", *a);
    BERTH_TRY(only_known(*a, aat, {"mode", "run", "turn_timeout"}));
    auto mode = get_string(*a, "mode", aat + ".mode", true);
    if (!mode) return mode.err();
    if (*mode != "external" && *mode != "command")
      return bad(aat + ".mode", "must be \"external\" or \"command\", not \"" + *mode + "\"");
    s.agent_mode = *mode;
    const auto* run = a->find("run");
    if (s.agent_mode == "command") {
      if (!run || run->is_null())
        return bad(aat + ".run", "is required for mode = \"command\" (the agent's command line)");
      auto argv = get_argv(*run, aat + ".run", limits);
      if (!argv) return argv.err();
      s.agent_run = std::move(*argv);
      if (a->find("turn_timeout"))
        return bad(aat + ".turn_timeout",
                   "is for mode = \"external\"; a command agent has the step's timeout");
    } else {
      if (run && !run->is_null())
        return bad(aat + ".run", "is for mode = \"command\"; an external agent runs elsewhere");
      auto tt = get_duration(*a, "turn_timeout", aat + ".turn_timeout");
      if (!tt) return tt.err();
      if (*tt) s.turn_timeout = **tt;
    }
  }
  if (const auto* r = v.find("on_reject"); r && !r->is_null()) {
    std::string rat = at + ".on_reject";
    if (!r->is_object())
      return wrong_type(rat, "an object: { goto = \"step\", max_loops = 3 }", *r);
    BERTH_TRY(only_known(*r, rat, {"goto", "max_loops"}));
    auto g = get_string(*r, "goto", rat + ".goto", true);
    if (!g) return g.err();
    BERTH_TRY(validate_id(*g, rat + ".goto"));
    s.on_reject_goto = *g;
    auto ml = get_int(*r, "max_loops", rat + ".max_loops", 0, 1, limits.max_loops);
    if (!ml) return ml.err();
    s.max_loops = *ml;  // 0: not given; checked against the graph in parse_spec
  }
  if (const auto* n = v.find("needs"); n && !n->is_null()) {
    if (!n->is_array()) return wrong_type(at + ".needs", "an array of step ids", *n);
    s.needs_given = true;
    for (std::size_t i = 0; i < n->as_array().size(); ++i) {
      const auto& e = n->as_array()[i];
      std::string f = at + ".needs[" + std::to_string(i) + "]";
      if (!e.is_string()) return wrong_type(f, "a step id", e);
      BERTH_TRY(validate_id(e.as_string(), f));
      if (std::find(s.needs.begin(), s.needs.end(), e.as_string()) != s.needs.end())
        return bad(f, "\"" + e.as_string() + "\" is listed twice");
      s.needs.push_back(e.as_string());
    }
  }
  auto when = get_string(v, "when", at + ".when", false);
  if (!when) return when.err();
  if (when->empty() || *when == "success")
    s.when = run_when::success;
  else if (*when == "failure")
    s.when = run_when::failure;
  else if (*when == "always")
    s.when = run_when::always;
  else
    return bad(at + ".when",
               "must be \"success\", \"failure\" or \"always\", not \"" + *when + "\"");
  auto coe = get_bool(v, "continue_on_error", at + ".continue_on_error");
  if (!coe) return coe.err();
  s.continue_on_error = *coe;
  auto t = get_duration(v, "timeout", at + ".timeout");
  if (!t) return t.err();
  s.timeout = *t;
  if (const auto* r = v.find("retry"); r && !r->is_null()) {
    std::string rat = at + ".retry";
    if (!r->is_object()) return wrong_type(rat, "an object", *r);
    BERTH_TRY(only_known(*r, rat, {"max_attempts", "backoff", "max_backoff", "jitter"}));
    auto j = get_bool(*r, "jitter", rat + ".jitter");
    if (!j) return j.err();
    s.retry.jitter = *j;
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
    case step_kind::agent:
      return "agent";
  }
  return "run";
}

const char* to_string(run_when w) {
  switch (w) {
    case run_when::success:
      return "success";
    case run_when::failure:
      return "failure";
    case run_when::always:
      return "always";
  }
  return "success";
}

const std::vector<std::string>& session_keys() {
  static const std::vector<std::string> keys = {
      "id",       "repo",    "ref",          "branch",   "submodules", "goal", "timeout",
      "priority", "network", "max_parallel", "retry_of", "start_at",   "steps"};
  return keys;
}

const std::vector<std::string>& step_keys() {
  static const std::vector<std::string> keys = {
      "id",    "kind", "run",   "timeout", "retry", "env",   "network",           "message",
      "title", "body", "forge", "needs",   "when",  "agent", "continue_on_error", "on_reject"};
  return keys;
}

bool is_external(const step_spec* sp) {
  return sp && sp->kind == step_kind::agent && sp->agent_mode == "external";
}

const step_spec* session_spec::step(const std::string& sid) const {
  auto i = index_of(sid);
  return i < 0 ? nullptr : &steps[static_cast<std::size_t>(i)];
}

int session_spec::index_of(const std::string& sid) const {
  if (step_index.size() == steps.size()) {
    auto it = step_index.find(sid);
    return it == step_index.end() ? -1 : it->second;
  }
  for (std::size_t i = 0; i < steps.size(); ++i)
    if (steps[i].id == sid) return static_cast<int>(i);
  return -1;
}

std::vector<int> ancestors(const session_spec& spec, int from) {
  std::vector<char> seen(spec.steps.size(), 0);
  std::vector<int> todo{from}, out;
  while (!todo.empty()) {
    auto i = todo.back();
    todo.pop_back();
    for (const auto& n : spec.steps[static_cast<std::size_t>(i)].needs) {
      auto j = spec.index_of(n);
      if (j < 0 || seen[static_cast<std::size_t>(j)]) continue;
      seen[static_cast<std::size_t>(j)] = 1;
      out.push_back(j);
      todo.push_back(j);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int> descendants(const session_spec& spec, int from) {
  std::vector<char> in(spec.steps.size(), 0);
  in[static_cast<std::size_t>(from)] = 1;
  // Needs may point forward in the file: repeat until nothing changes (the graph is acyclic).
  for (bool changed = true; changed;) {
    changed = false;
    for (std::size_t i = 0; i < spec.steps.size(); ++i) {
      if (in[i]) continue;
      for (const auto& n : spec.steps[i].needs) {
        auto j = spec.index_of(n);
        if (j >= 0 && in[static_cast<std::size_t>(j)]) {
          in[i] = 1;
          changed = true;
          break;
        }
      }
    }
  }
  std::vector<int> out;
  for (std::size_t i = 0; i < in.size(); ++i)
    if (in[i]) out.push_back(static_cast<int>(i));
  return out;
}

namespace {

// needs resolved, cycles named, back edges bounded.
status check_graph(session_spec& s) {
  std::map<std::string, int> index;
  for (std::size_t i = 0; i < s.steps.size(); ++i) index[s.steps[i].id] = static_cast<int>(i);
  for (std::size_t i = 0; i < s.steps.size(); ++i) {
    auto& st = s.steps[i];
    std::string at = "steps[" + std::to_string(i) + "]";
    if (!st.needs_given) {
      st.needs.clear();
      if (i > 0) st.needs.push_back(s.steps[i - 1].id);
      continue;
    }
    for (std::size_t k = 0; k < st.needs.size(); ++k) {
      std::string f = at + ".needs[" + std::to_string(k) + "]";
      if (st.needs[k] == st.id) return bad(f, "step \"" + st.id + "\" cannot need itself");
      if (!index.count(st.needs[k]))
        return bad(f, "unknown step \"" + st.needs[k] + "\" (no step has this id)");
    }
  }
  // Cycles: depth-first, colouring steps; the path on the stack names the cycle.
  std::vector<int> colour(s.steps.size(), 0);  // 0 new, 1 on the path, 2 done
  std::vector<int> path;
  std::function<std::optional<std::string>(int)> visit = [&](int i) -> std::optional<std::string> {
    colour[static_cast<std::size_t>(i)] = 1;
    path.push_back(i);
    for (const auto& n : s.steps[static_cast<std::size_t>(i)].needs) {
      int j = index[n];
      if (colour[static_cast<std::size_t>(j)] == 1) {
        std::string cyc;
        auto from = std::find(path.begin(), path.end(), j);
        for (auto it = from; it != path.end(); ++it)
          cyc += s.steps[static_cast<std::size_t>(*it)].id + " -> ";
        return cyc + s.steps[static_cast<std::size_t>(j)].id;
      }
      if (colour[static_cast<std::size_t>(j)] == 0)
        if (auto c = visit(j)) return c;
    }
    path.pop_back();
    colour[static_cast<std::size_t>(i)] = 2;
    return std::nullopt;
  };
  for (std::size_t i = 0; i < s.steps.size(); ++i)
    if (colour[i] == 0)
      if (auto c = visit(static_cast<int>(i)))
        return bad("steps", "the needs form a cycle: " + *c +
                                " (a step that sends work back uses on_reject.goto instead)");
  for (std::size_t i = 0; i < s.steps.size(); ++i) {
    const auto& st = s.steps[i];
    if (st.on_reject_goto.empty()) continue;
    std::string at = "steps[" + std::to_string(i) + "].on_reject";
    auto it = index.find(st.on_reject_goto);
    if (it == index.end())
      return bad(at + ".goto", "unknown step \"" + st.on_reject_goto + "\" (no step has this id)");
    auto anc = ancestors(s, static_cast<int>(i));
    bool back =
        it->second == static_cast<int>(i) || std::binary_search(anc.begin(), anc.end(), it->second);
    if (!back)
      return bad(at + ".goto", "\"" + st.on_reject_goto + "\" is not a step \"" + st.id +
                                   "\" needs; goto sends work back to an earlier step it needs");
    if (st.max_loops <= 0)
      return bad(at + ".max_loops", "is required on a back edge (goto \"" + st.on_reject_goto +
                                        "\"): how many times work may be sent back");
  }
  return {};
}

}  // namespace

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
  BERTH_TRY(only_known(v, "", session_keys()));
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
  auto mp = get_int(v, "max_parallel", "max_parallel", 4, 1, 64);
  if (!mp) return mp.err();
  s.max_parallel = *mp;
  auto rof = get_string(v, "retry_of", "retry_of", false);
  if (!rof) return rof.err();
  if (!rof->empty()) BERTH_TRY(validate_id(*rof, "retry_of"));
  s.retry_of = *rof;
  auto sat = get_string(v, "start_at", "start_at", false);
  if (!sat) return sat.err();
  if (!sat->empty() && s.retry_of.empty())
    return bad("start_at", "needs retry_of (the session whose earlier steps count as done)");
  s.start_at = *sat;
  const auto* steps = v.find("steps");
  if (!steps || steps->is_null())
    return bad("steps", "is required: a session needs at least one step");
  if (!steps->is_array()) return wrong_type("steps", "an array of step objects", *steps);
  if (steps->as_array().empty()) return bad("steps", "must contain at least one step");
  if (steps->as_array().size() > limits.max_steps)
    return bad("steps", "has more than " + std::to_string(limits.max_steps) + " steps");
  std::set<std::string> seen;
  for (std::size_t i = 0; i < steps->as_array().size(); ++i) {
    auto st = parse_step(steps->as_array()[i], "steps[" + std::to_string(i) + "]", limits);
    if (!st) return st.err();
    if (!seen.insert(st->id).second)
      return bad("steps[" + std::to_string(i) + "].id", "duplicate step id \"" + st->id + "\"");
    if (st->kind != step_kind::run && st->kind != step_kind::setup &&
        st->kind != step_kind::agent && s.repo.empty())
      return bad("steps[" + std::to_string(i) + "].kind",
                 std::string("a ") + to_string(st->kind) + " step needs the session's repo");
    s.steps.push_back(std::move(*st));
  }
  for (std::size_t i = 0; i < s.steps.size(); ++i)
    s.step_index[s.steps[i].id] = static_cast<int>(i);
  BERTH_TRY(check_graph(s));
  if (!s.start_at.empty() && s.index_of(s.start_at) < 0)
    return bad("start_at", "unknown step \"" + s.start_at + "\"");
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
  if (s.max_parallel != 4) v.set("max_parallel", s.max_parallel);
  if (!s.retry_of.empty()) v.set("retry_of", s.retry_of);
  if (!s.start_at.empty()) v.set("start_at", s.start_at);
  json::value steps = json::value::make_array();
  for (const auto& st : s.steps) {
    json::value j = json::value::make_object();
    j.set("id", st.id);
    if (st.kind != step_kind::run) j.set("kind", to_string(st.kind));
    if (st.kind == step_kind::run || (st.kind == step_kind::setup && !st.run.empty())) {
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
        st.retry.max_backoff != millis(60'000) || st.retry.jitter) {
      json::value r = json::value::make_object();
      r.set("max_attempts", st.retry.max_attempts);
      r.set("backoff", format_duration(st.retry.backoff));
      r.set("max_backoff", format_duration(st.retry.max_backoff));
      if (st.retry.jitter) r.set("jitter", true);
      j.set("retry", std::move(r));
    }
    if (!st.env.empty()) {
      json::value e = json::value::make_object();
      for (const auto& [k, val] : st.env) e.set(k, val);
      j.set("env", std::move(e));
    }
    if (!st.network.empty()) j.set("network", st.network);
    if (st.needs_given) {
      json::value n = json::value::make_array();
      for (const auto& x : st.needs) n.push(x);
      j.set("needs", std::move(n));
    }
    if (st.when != run_when::success) j.set("when", to_string(st.when));
    if (st.continue_on_error) j.set("continue_on_error", true);
    if (!st.on_reject_goto.empty()) {
      json::value r = json::value::make_object();
      r.set("goto", st.on_reject_goto);
      r.set("max_loops", st.max_loops);
      j.set("on_reject", std::move(r));
    }
    if (st.kind == step_kind::agent) {
      json::value a = json::value::make_object();
      a.set("mode", st.agent_mode);
      if (st.agent_mode == "command") {
        json::value run = json::value::make_array();
        for (const auto& x : st.agent_run) run.push(x);
        a.set("run", std::move(run));
      } else {
        a.set("turn_timeout", format_duration(st.turn_timeout));
      }
      j.set("agent", std::move(a));
    }
    steps.push(std::move(j));
  }
  v.set("steps", std::move(steps));
  return v;
}

}  // namespace berth::core
