#include "feed.hpp"

#include "berth/core/events.hpp"
#include "berth/core/machine.hpp"

namespace berth::gateway {

namespace ev = core::ev;

const char* topic::item_type() const {
  switch (k) {
    case kind::events:
      return "event";
    case kind::logs:
      return "log";
    case kind::sessions:
      return "session";
  }
  return "event";
}

result<topic> parse_topic(const std::string& name, const json::value* filter) {
  topic t;
  t.name = name;
  if (name == "sessions") {
    t.k = topic::kind::sessions;
    if (filter && !filter->is_null()) {
      if (!filter->is_object())
        return error{errc::invalid_argument, "filter: expected an object {status, repo}"};
      for (const auto& [k, v] : filter->as_object()) {
        if (k != "status" && k != "repo")
          return error{errc::invalid_argument, "filter." + k + ": unknown field (status, repo)"};
        if (!v.is_string())
          return error{errc::invalid_argument, "filter." + k + ": expected a string"};
      }
      t.status = filter->get_string("status");
      t.repo = filter->get_string("repo");
    }
    return t;
  }
  if (filter && !filter->is_null())
    return error{errc::invalid_argument, "filter: only the \"sessions\" topic takes a filter"};
  std::vector<std::string> parts;
  for (std::size_t at = 0;;) {
    auto slash = name.find('/', at);
    parts.push_back(name.substr(at, slash == std::string::npos ? std::string::npos : slash - at));
    if (slash == std::string::npos) break;
    at = slash + 1;
  }
  auto bad = error{errc::invalid_argument,
                   "topic: \"" + name.substr(0, 200) +
                       "\" is not one of sessions, session/<id>/events, session/<id>/logs, "
                       "session/<id>/logs/<step>"};
  if (parts.size() < 3 || parts.size() > 4 || parts[0] != "session") return bad;
  if (!good_id(parts[1]))
    return error{errc::invalid_argument,
                 "topic: the session id must be 1 to 128 characters of [A-Za-z0-9_-]"};
  t.session = parts[1];
  if (parts[2] == "events" && parts.size() == 3) {
    t.k = topic::kind::events;
  } else if (parts[2] == "logs") {
    t.k = topic::kind::logs;
    if (parts.size() == 4) {
      if (!good_id(parts[3]))
        return error{errc::invalid_argument,
                     "topic: the step id must be 1 to 128 characters of [A-Za-z0-9_-]"};
      t.step = parts[3];
    }
  } else {
    return bad;
  }
  return t;
}

namespace {
bool deleted(const bus::message& m) {
  auto op = m.header("KV-Operation");
  return op == "DEL" || op == "PURGE";
}
}  // namespace

std::string item_data(const topic& t, const bus::message& m) {
  switch (t.k) {
    case topic::kind::events:
      return m.data;  // the journal's own JSON
    case topic::kind::logs: {
      std::string out = "{\"step\":";
      json::quote_to(out, bus::subjects::last_token(m.subject));
      out += ",\"attempt\":";
      json::quote_to(out, m.header("Berth-Attempt"));
      out += ",\"stream\":";
      json::quote_to(out, m.header("Berth-Stream"));
      out += ",\"text\":";
      json::quote_to(out, m.data);
      if (m.header("Berth-Truncated") == "true") out += ",\"truncated\":true";
      out += "}";
      return out;
    }
    case topic::kind::sessions: {
      std::string out = "{\"id\":";
      json::quote_to(out, bus::subjects::last_token(m.subject));
      if (deleted(m)) return out + ",\"deleted\":true}";
      auto row = json::parse(m.data);
      if (row && row->is_object())
        for (const auto& [k, v] : row->as_object()) {
          if (k == "id") continue;
          out += ",";
          json::quote_to(out, k);
          out += ":" + v.dump();
        }
      return out + "}";
    }
  }
  return "null";
}

bool passes(const topic& t, const bus::message& m) {
  if (deleted(m)) return false;
  if (t.status.empty() && t.repo.empty()) return true;
  auto row = json::parse(m.data);
  if (!row) return false;
  if (!t.status.empty() && row->get_string("status") != t.status) return false;
  if (!t.repo.empty() && row->get_string("repo").find(t.repo) == std::string::npos) return false;
  return true;
}

std::optional<std::uint64_t> pending_after(const bus::message& m) {
  // $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (9 tokens), or with a
  // domain and account hash: $JS.ACK.<domain>.<hash>.<stream>...<pending>.<token> (12 or more).
  if (m.reply.rfind("$JS.ACK.", 0) != 0) return std::nullopt;
  std::vector<std::string_view> t;
  std::string_view r(m.reply);
  for (std::size_t at = 0;;) {
    auto dot = r.find('.', at);
    t.push_back(r.substr(at, dot == std::string_view::npos ? std::string_view::npos : dot - at));
    if (dot == std::string_view::npos) break;
    at = dot + 1;
  }
  std::string_view p;
  if (t.size() == 9)
    p = t[8];
  else if (t.size() >= 12)
    p = t[10];
  else
    return std::nullopt;
  std::uint64_t v = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

bool ends_session(const bus::message& m) {
  // The envelope's type sits near the front; parse only when it may be a terminal one.
  if (m.data.find("\"session.") == std::string::npos) return false;
  auto ev = json::parse(m.data);
  if (!ev) return false;
  auto type = ev->get_string("type");
  return type == ev::session_succeeded || type == ev::session_failed ||
         type == ev::session_cancelled || type == ev::session_timed_out;
}

result<std::unique_ptr<bus::subscription>> open_feed(server::impl& g, const topic& t,
                                                     std::uint64_t since,
                                                     std::function<void(bus::message)> fn) {
  if (!g.bus) return error{errc::unavailable, "the gateway is not connected to NATS"};
  if (t.k != topic::kind::sessions) {
    auto last = g.bus->last_message(g.names.stream_ev(), g.names.journal(t.session));
    if (!last) return last.err();
    if (!last->has_value()) return error{errc::not_found, "session " + t.session + " not found"};
  }
  switch (t.k) {
    case topic::kind::events:
      return g.bus->follow(g.names.stream_ev(), g.names.journal(t.session), since + 1,
                           std::move(fn));
    case topic::kind::logs:
      return g.bus->follow(
          g.names.stream_log(),
          t.step.empty() ? g.names.log_wildcard(t.session) : g.names.log(t.session, t.step),
          since + 1, std::move(fn));
    case topic::kind::sessions: {
      auto bucket = g.names.bucket_sessions();
      return g.bus->follow(bus::subjects::bucket_stream(bucket), bus::subjects::bucket_keys(bucket),
                           since + 1, std::move(fn));
    }
  }
  return error{errc::internal, "unknown topic kind"};
}

void close_feed(server::impl& g, std::unique_ptr<bus::subscription> s) {
  if (!s) return;
  asio::post(g.api_pool,
             [s = std::shared_ptr<bus::subscription>(std::move(s))]() mutable { s.reset(); });
}

}  // namespace berth::gateway
