// Routing: /livez, /readyz, the console's files, REST over the API subjects, the login that
// turns a one-time code into a cookie, and the doors to SSE and the WebSocket. Runs on the API
// pool; every request is authenticated, origin-checked and rate-limited here.

#include "internal.hpp"

#include "berth/base/log.hpp"
#include "berth/core/spec.hpp"
#include "berth/core/workflow.hpp"

#include <boost/beast/websocket.hpp>

#include <algorithm>

namespace berth::gateway {

namespace {

// "%41" -> "A"; nullopt for a bad escape or an escaped NUL.
std::optional<std::string> url_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+' && plus_is_space) {
      out += ' ';
    } else if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (s[i] == '\0') {
      return std::nullopt;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string> split_path(std::string_view p) {
  std::vector<std::string> out;
  std::size_t at = 1;
  while (at <= p.size()) {
    auto slash = p.find('/', at);
    if (slash == std::string_view::npos) slash = p.size();
    out.emplace_back(p.substr(at, slash - at));
    at = slash + 1;
  }
  return out;
}

std::shared_ptr<spdlog::logger> lg() {
  static auto l = log::get("gateway");
  return l;
}

constexpr const char* cookie_name = "berth_session";

std::string cookie_of(const request& req) {
  for (auto it = req.find(http::field::cookie);
       it != req.end() && it->name() == http::field::cookie; ++it) {
    std::string_view v(it->value().data(), it->value().size());
    std::size_t at = 0;
    while (at < v.size()) {
      auto semi = v.find(';', at);
      if (semi == std::string_view::npos) semi = v.size();
      auto pair = v.substr(at, semi - at);
      at = semi + 1;
      while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
      auto eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == cookie_name)
        return std::string(pair.substr(eq + 1));
    }
  }
  return {};
}

bool digits(const std::string& s, std::size_t max_len) {
  return !s.empty() && s.size() <= max_len &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::optional<principal> server::impl::authenticate(const request& req) const {
  if (auto a = req.find(http::field::authorization); a != req.end()) {
    std::string_view v(a->value().data(), a->value().size());
    if (v.rfind("Bearer ", 0) != 0) return std::nullopt;
    auto secret = std::string(v.substr(7));
    auto rec = tokens.verify(secret);
    if (!rec) return std::nullopt;
    return principal{rec->name, rec->scope, false, secret};
  }
  auto c = cookie_of(req);
  if (c.empty()) return std::nullopt;
  auto rec = tokens.verify_cookie(c);
  if (!rec) return std::nullopt;
  return principal{rec->name, rec->scope, true, c};
}

bool server::impl::still_valid(const principal& p) const {
  return p.cookie ? tokens.verify_cookie(p.secret).has_value()
                  : tokens.verify(p.secret).has_value();
}

bool server::impl::origin_allowed(std::string_view origin) const {
  return std::find(origins.begin(), origins.end(), origin) != origins.end();
}

std::optional<reply> server::impl::check_origin(const request& req) const {
  auto o = req.find(http::field::origin);
  if (o == req.end()) return std::nullopt;
  std::string origin(o->value());
  if (origin_allowed(origin)) return std::nullopt;
  return fail("permission_denied",
              "origin \"" + origin.substr(0, 200) +
                  "\" is not allowed (gateway.allowed_origins, matched exactly)");
}

std::optional<scope> server::impl::scope_of(const std::string& verb) {
  if (verb == "session.get" || verb == "session.list" || verb == "session.diff" ||
      verb == "stats" || verb == "node.list")
    return scope::read;
  if (verb == "session.start" || verb == "session.cancel" || verb == "session.input" ||
      verb == "session.retry")
    return scope::write;
  return std::nullopt;
}

std::string server::impl::api_json(const std::string& verb, json::value body,
                                   const principal& who) {
  if (!bus) return error_body("unavailable", "the gateway is not connected to NATS");
  // The journal records who acted: the token's (or login's) name, never what a client claims.
  if (scope_of(verb) == scope::write && body.is_object()) body.set("caller", who.name);
  auto r = bus->request(names.api(verb), body.dump(), opts.api_timeout);
  if (!r) {
    if (r.err().is(errc::unavailable))
      return error_body("unavailable", "no berth node answers on " + names.api(verb));
    return error_body(errc_name(r.err().code), r.err().message);
  }
  return r->data;
}

reply server::impl::api(const std::string& verb, json::value body, const principal& who,
                        http::status ok_status) {
  auto out = api_json(verb, std::move(body), who);
  auto v = json::parse(out);
  if (!v) return fail("internal", "malformed reply from a node: " + v.err().message);
  if (const auto* e = v->find("error")) {
    auto code = e->get_string("code");
    reply r;
    r.status = status_of(code);
    r.body = std::move(out);
    return r;
  }
  reply r;
  r.status = ok_status;
  r.body = std::move(out);
  return r;
}

reply server::impl::websocket(const std::shared_ptr<request>& req, std::optional<principal> who) {
  namespace websocket = beast::websocket;
  if (!websocket::is_upgrade(*req))
    return fail("invalid_argument", "/v1/ws: expected a WebSocket upgrade");
  // Browsers always send Origin on a WebSocket; it was checked. The subprotocol names the
  // framing, so a client written for another one fails here, not mid-stream.
  bool wants = false;
  for (auto it = req->find(http::field::sec_websocket_protocol);
       it != req->end() && it->name() == http::field::sec_websocket_protocol; ++it) {
    std::string_view v(it->value().data(), it->value().size());
    std::size_t at = 0;
    while (at <= v.size()) {
      auto comma = v.find(',', at);
      if (comma == std::string_view::npos) comma = v.size();
      auto p = v.substr(at, comma - at);
      while (!p.empty() && p.front() == ' ') p.remove_prefix(1);
      while (!p.empty() && p.back() == ' ') p.remove_suffix(1);
      wants = wants || p == "berth.v1.json";
      at = comma + 1;
    }
  }
  if (!wants)
    return fail("invalid_argument",
                "Sec-WebSocket-Protocol: ask for \"berth.v1.json\" (the only framing served)");
  reply r;
  r.takeover = [g = this, who](beast::tcp_stream&& s, beast::flat_buffer&&,
                               std::shared_ptr<request> rq) {
    run_websocket(g, std::move(s), std::move(rq), who);
  };
  return r;
}

reply server::impl::handle(const std::shared_ptr<request>& rp) {
  const auto& req = *rp;
  std::string_view target(req.target().data(), req.target().size());
  auto q = target.find('?');
  auto raw_path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  auto path = url_decode(raw_path, false);
  if (!path || path->empty() || (*path)[0] != '/')
    return fail("invalid_argument", "bad request path");
  std::map<std::string, std::string> params;
  for (std::size_t at = 0; at < query.size();) {
    auto amp = query.find('&', at);
    if (amp == std::string_view::npos) amp = query.size();
    auto pair = query.substr(at, amp - at);
    at = amp + 1;
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    auto k = url_decode(pair.substr(0, eq), true);
    auto v =
        url_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
    if (!k || !v) return fail("invalid_argument", "bad query string");
    params[*k] = *v;
  }
  auto method = req.method();
  if (*path == "/livez") {
    // Liveness never depends on NATS: a gateway waiting for its cluster is alive.
    return {http::status::ok, R"({"status":"live"})", {}, "application/json", {}};
  }
  if (*path == "/readyz") {
    if (!bus || !bus->is_connected()) return fail("unavailable", "not connected to NATS");
    return {http::status::ok, R"({"status":"ready"})", {}, "application/json", {}};
  }
  // A token in the URL would end up in logs and browser history: refused, never looked at.
  for (const char* k : {"token", "access_token", "auth", "authorization", "api_key", "code"})
    if (params.count(k))
      return fail("invalid_argument",
                  "tokens are never accepted in a URL; send `Authorization: Bearer <token>`");
  auto parts = split_path(*path);
  if (parts.empty() || parts[0] != "v1") {
    if (method != http::verb::get)
      return fail("method_not_allowed", "only GET serves the console's files");
    if (auto f = console_file(*path)) return *f;
    return fail("not_found", "no such path: " + path->substr(0, 200));
  }

  // Browsers: only the allowed origins (exact match) may call.
  if (auto r = check_origin(req)) return *r;
  auto method_not_allowed = [&](const char* allow) {
    auto r = fail("method_not_allowed", std::string(req.method_string()) + " is not allowed on " +
                                            path->substr(0, 200) + "; allowed: " + allow);
    r.headers.emplace_back("Allow", allow);
    return r;
  };
  auto body_json = [&]() -> result<json::value> {
    if (req.body().empty()) return json::value::make_object();
    auto ct = std::string(req[http::field::content_type]);
    if (ct.rfind("application/json", 0) != 0)
      return error{errc::unsupported,
                   "Content-Type: expected application/json, got \"" + ct.substr(0, 100) + "\""};
    auto v = json::parse(req.body());
    if (!v) return error{errc::invalid_argument, "body: " + v.err().message};
    return std::move(*v);
  };

  // The console's login: a one-time code (from `berth console`) for an HttpOnly cookie.
  if (parts.size() == 2 && (parts[1] == "login" || parts[1] == "logout")) {
    if (method != http::verb::post) return method_not_allowed("POST");
    if (parts[1] == "logout") {
      auto c = cookie_of(req);
      if (!c.empty())
        if (auto st = tokens.end_cookie(c); !st)
          return fail(errc_name(st.err().code), st.err().message);
      reply r{http::status::ok, R"({"status":"logged_out"})", {}, "application/json", {}};
      r.headers.emplace_back("Set-Cookie", std::string(cookie_name) +
                                               "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
      return r;
    }
    if (auto wait = limiter.take("~login")) {
      auto r = fail("rate_limited", "too many login attempts; retry shortly");
      r.headers.emplace_back("Retry-After", std::to_string((wait->count() + 999) / 1000));
      return r;
    }
    auto b = body_json();
    if (!b) return fail(errc_name(b.err().code), b.err().message);
    auto code = b->get_string("code");
    if (code.empty()) return fail("invalid_argument", "code: is required");
    auto ex = tokens.exchange_login(code, opts.cookie_ttl);
    if (!ex) return fail(errc_name(ex.err().code), ex.err().message);
    json::value v = json::value::make_object();
    v.set("name", ex->second.name);
    v.set("scope", scope_name(ex->second.scope));
    v.set("expires_at", format_timestamp(ex->second.expires_ms));
    reply r{http::status::ok, v.dump(), {}, "application/json", {}};
    r.headers.emplace_back(
        "Set-Cookie", std::string(cookie_name) + "=" + ex->first +
                          "; Path=/; Max-Age=" + std::to_string(opts.cookie_ttl.count() / 1000) +
                          "; HttpOnly; SameSite=Strict");
    lg()->info("console login for \"{}\"", ex->second.name);
    return r;
  }

  auto who = authenticate(req);
  if (parts.size() == 2 && parts[1] == "ws") {
    if (method != http::verb::get) return method_not_allowed("GET");
    // Without a cookie the socket opens and must authenticate with its first frame.
    return websocket(rp, who);
  }
  if (!who) {
    auto r = fail("unauthorized",
                  "a valid token is required (Authorization: Bearer <token>; "
                  "`berth token create NAME` makes one; browsers: `berth console`)");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"berth\"");
    return r;
  }
  // CSRF: a state-changing call carried by the browser's cookie must come from an allowed page.
  if (who->cookie && method != http::verb::get && method != http::verb::head &&
      req.find(http::field::origin) == req.end())
    return fail("permission_denied", "a cookie-authenticated " + std::string(req.method_string()) +
                                         " needs an Origin header from an allowed page");
  if (auto wait = limiter.take(who->name)) {
    auto secs = std::to_string((wait->count() + 999) / 1000);
    auto r = fail("rate_limited", "\"" + who->name + "\" is over the gateway's request rate (" +
                                      std::to_string(static_cast<int>(opts.rate_per_second)) +
                                      "/s); retry after " + secs + " s");
    r.headers.emplace_back("Retry-After", secs);
    return r;
  }
  auto need = [&](scope s) -> std::optional<reply> {
    if (who->may(s)) return std::nullopt;
    return fail("permission_denied", "\"" + who->name + "\" has scope " + scope_name(who->scope) +
                                         "; this needs " + scope_name(s));
  };
  auto only = [&](std::initializer_list<const char*> allowed) -> std::optional<reply> {
    for (const auto& [k, v] : params) {
      bool ok = false;
      for (const char* a : allowed) ok = ok || k == a;
      if (!ok)
        return fail("invalid_argument", "unknown query parameter \"" + k.substr(0, 64) + "\"");
    }
    return std::nullopt;
  };

  if (parts.size() == 2 && parts[1] == "whoami") {
    if (method != http::verb::get) return method_not_allowed("GET");
    json::value v = json::value::make_object();
    v.set("name", who->name);
    v.set("scope", scope_name(who->scope));
    v.set("via", who->cookie ? "cookie" : "token");
    return {http::status::ok, v.dump(), {}, "application/json", {}};
  }
  if (parts.size() == 2 && parts[1] == "stats") {
    if (method != http::verb::get) return method_not_allowed("GET");
    if (auto r = only({})) return *r;
    return api("stats", json::value::make_object(), *who);
  }
  if (parts.size() == 2 && parts[1] == "nodes") {
    if (method != http::verb::get) return method_not_allowed("GET");
    if (auto r = only({})) return *r;
    return api("node.list", json::value::make_object(), *who);
  }
  if (parts.size() >= 2 && parts[1] == "sessions") {
    if (parts.size() == 2) {
      if (method == http::verb::get) {
        if (auto r = only({"status", "repo", "limit", "cursor"})) return *r;
        json::value b = json::value::make_object();
        for (const char* k : {"status", "repo", "cursor"})
          if (params.count(k)) b.set(k, params[k]);
        if (params.count("limit")) {
          const auto& l = params["limit"];
          if (!digits(l, 9))
            return fail("invalid_argument",
                        "limit: expected a positive integer, got \"" + l.substr(0, 40) + "\"");
          b.set("limit", static_cast<std::int64_t>(std::stoll(l)));
        }
        return api("session.list", b, *who);
      }
      if (method == http::verb::post) {
        if (auto r = need(scope::write)) return *r;
        if (auto r = only({"dry_run", "repo", "ref", "branch", "goal"})) return *r;
        json::value spec;
        auto ct = std::string(req[http::field::content_type]);
        if (ct.rfind("application/toml", 0) == 0) {
          auto wf = core::parse_workflow(req.body(), "body");
          if (!wf) return fail(errc_name(wf.err().code), wf.err().message);
          spec = std::move(*wf);
        } else {
          auto b = body_json();
          if (!b) return fail(errc_name(b.err().code), b.err().message);
          spec = std::move(*b);
        }
        if (!spec.is_object()) return fail("invalid_argument", "body: expected a spec object");
        // The console's form (and curl users) may set these beside a workflow file.
        for (const char* k : {"repo", "ref", "branch", "goal"})
          if (params.count(k) && !params[k].empty()) spec.set(k, params[k]);
        if (params.count("dry_run") && params["dry_run"] != "false" && params["dry_run"] != "0") {
          core::spec_limits limits;
          limits.max_spec_bytes = static_cast<std::int64_t>(opts.max_body_bytes);
          auto parsed = core::parse_spec(spec, limits);
          if (!parsed) return fail(errc_name(parsed.err().code), parsed.err().message);
          json::value v = json::value::make_object();
          v.set("valid", true);
          v.set("spec", core::to_json(*parsed));
          return {http::status::ok, v.dump(), {}, "application/json", {}};
        }
        json::value b = json::value::make_object();
        b.set("spec", std::move(spec));
        if (auto k = req.find("Idempotency-Key"); k != req.end())
          b.set("idempotency_key", std::string(k->value()));
        return api("session.start", b, *who, http::status::created);
      }
      return method_not_allowed("GET, POST");
    }
    const auto& id = parts[2];
    if (!good_id(id))
      return fail("invalid_argument", "session id: must be 1 to 128 characters of [A-Za-z0-9_-]");
    if (parts.size() == 3) {
      if (method != http::verb::get) return method_not_allowed("GET");
      if (auto r = only({})) return *r;
      json::value b = json::value::make_object();
      b.set("id", id);
      return api("session.get", b, *who);
    }
    if (parts.size() == 4 && (parts[3] == "events" || parts[3] == "logs")) {
      if (method != http::verb::get) return method_not_allowed("GET");
      bool logs = parts[3] == "logs";
      if (auto r = logs ? only({"step"}) : only({})) return *r;
      auto sp = params.find("step");
      std::string step = sp == params.end() ? std::string() : sp->second;
      if (logs && sp != params.end() && !good_id(step))
        return fail("invalid_argument", "step: must be 1 to 128 characters of [A-Za-z0-9_-]");
      return sse(rp, *who, id, logs, step);
    }
    if (parts.size() == 4 && parts[3] == "diff") {
      if (method != http::verb::get) return method_not_allowed("GET");
      if (auto r = only({})) return *r;
      json::value b = json::value::make_object();
      b.set("id", id);
      return api("session.diff", b, *who);
    }
    if (parts.size() == 4 && (parts[3] == "cancel" || parts[3] == "input" || parts[3] == "retry")) {
      if (method != http::verb::post) return method_not_allowed("POST");
      if (auto r = need(scope::write)) return *r;
      if (auto r = only({})) return *r;
      auto b = body_json();
      if (!b) return fail(errc_name(b.err().code), b.err().message);
      if (!b->is_object()) return fail("invalid_argument", "body: expected a JSON object");
      b->set("id", id);
      return api("session." + parts[3], *b, *who);
    }
  }
  return fail("not_found", "no such path: " + path->substr(0, 200));
}

}  // namespace berth::gateway
