#include "berth/gateway/gateway.hpp"

#include "berth/base/json.hpp"
#include "berth/base/log.hpp"
#include "berth/bus/subjects.hpp"
#include "berth/gateway/tokens.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <map>
#include <optional>
#include <thread>

namespace berth::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

std::shared_ptr<spdlog::logger> lg() {
  static auto l = log::get("gateway");
  return l;
}

// The HTTP status of an API error code (the codes of errc_name()).
http::status status_of(const std::string& code) {
  if (code == "invalid_argument") return http::status::bad_request;
  if (code == "not_found") return http::status::not_found;
  if (code == "conflict") return http::status::conflict;
  if (code == "too_large") return http::status::payload_too_large;
  if (code == "permission_denied") return http::status::forbidden;
  if (code == "unavailable") return http::status::service_unavailable;
  if (code == "timeout") return http::status::gateway_timeout;
  if (code == "unauthorized") return http::status::unauthorized;
  if (code == "unsupported") return http::status::unsupported_media_type;
  if (code == "method_not_allowed") return http::status::method_not_allowed;
  return http::status::internal_server_error;
}

std::string error_body(const std::string& code, const std::string& message) {
  json::value e = json::value::make_object();
  e.set("code", code);
  e.set("message", message);
  json::value v = json::value::make_object();
  v.set("error", std::move(e));
  return v.dump();
}

// "%41" -> "A"; nullopt for a bad escape or an escaped NUL.
std::optional<std::string> url_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
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
    } else {
      out += s[i];
    }
  }
  return out;
}

bool good_id(std::string_view id) {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
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

// A reply prepared by a handler.
struct reply {
  http::status status = http::status::ok;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

reply fail(const std::string& code, const std::string& message) {
  return {status_of(code), error_body(code, message), {}};
}

}  // namespace

struct server::impl {
  options opts;
  std::shared_ptr<bus::client> bus;
  bus::subjects names;
  token_store tokens;
  asio::io_context ioc;
  asio::thread_pool api_pool;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::atomic<std::size_t> connections{0};
  std::atomic<bool> stopped{false};
  std::string url;
  std::vector<std::string> origins;  // allowed, exactly

  impl(options o, std::shared_ptr<bus::client> b)
      : opts(std::move(o)),
        bus(std::move(b)),
        names(opts.prefix),
        tokens(opts.tokens_file),
        api_pool(static_cast<std::size_t>(std::max(1, opts.api_threads))) {}

  void accept();
  reply handle(const request& req);
  reply api(const std::string& verb, const json::value& body, http::status ok_status);
};

namespace {

// One connection: read a request (header and body limits, a header timeout), hand it to the
// API pool, write the reply on the connection's strand, keep alive.
class connection : public std::enable_shared_from_this<connection> {
 public:
  connection(tcp::socket s, server::impl* g) : stream_(std::move(s)), g_(g) {}
  ~connection() { g_->connections--; }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(g_->opts.max_header_bytes));
    parser_->body_limit(g_->opts.max_body_bytes);
    stream_.expires_after(first_ ? g_->opts.header_timeout : g_->opts.idle_timeout);
    first_ = false;
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return refuse(ec);
    // The body has its own time: a slow but steady upload is not a slow header.
    stream_.expires_after(g_->opts.header_timeout + std::chrono::seconds(30));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec2, std::size_t) { self->on_read(ec2); });
  }

  // What the client gets for a request that never parsed.
  void refuse(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      return;
    }
    reply r;
    if (ec == http::error::header_limit)
      r = {http::status::request_header_fields_too_large,
           error_body("too_large", "request headers are larger than " +
                                       std::to_string(g_->opts.max_header_bytes) + " bytes"),
           {}};
    else if (ec == http::error::body_limit)
      r = {http::status::payload_too_large,
           error_body("too_large", "request body is larger than " +
                                       std::to_string(g_->opts.max_body_bytes) +
                                       " bytes (gateway.max_body_bytes)"),
           {}};
    else
      r = {http::status::bad_request,
           error_body("invalid_argument", "bad HTTP request: " + ec.message()),
           {}};
    send(std::move(r), 11, false);
  }

  void on_read(beast::error_code ec) {
    if (ec) return refuse(ec);
    auto req = std::make_shared<request>(parser_->release());
    stream_.expires_never();
    asio::post(g_->api_pool, [self = shared_from_this(), req] {
      auto r = self->g_->handle(*req);
      asio::post(self->stream_.get_executor(), [self, req, r = std::move(r)]() mutable {
        self->send(std::move(r), req->version(), req->keep_alive());
      });
    });
  }

  void send(reply r, unsigned version, bool keep) {
    auto res = std::make_shared<response>(r.status, version);
    res->set(http::field::server, "berth");
    res->set(http::field::content_type, "application/json");
    res->set(http::field::cache_control, "no-store");
    res->set("X-Content-Type-Options", "nosniff");
    for (const auto& [k, v] : r.headers) res->set(k, v);
    res->body() = r.body.empty() ? std::string("{}") : std::move(r.body);
    res->keep_alive(keep);
    res->prepare_payload();
    stream_.expires_after(std::chrono::seconds(30));
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
                        if (ec || !res->keep_alive()) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          return;
                        }
                        self->read();
                      });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  server::impl* g_;
  bool first_ = true;
};

}  // namespace

void server::impl::accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
    if (ec) {
      if (!stopped) accept();
      return;
    }
    if (connections.load() >= opts.max_connections) {
      beast::error_code ignored;
      s.close(ignored);  // past the cap: closed at once, nothing read
    } else {
      connections++;
      std::make_shared<connection>(std::move(s), this)->start();
    }
    accept();
  });
}

reply server::impl::api(const std::string& verb, const json::value& body, http::status ok_status) {
  auto r = bus->request(names.api(verb), body.dump(), opts.api_timeout);
  if (!r) {
    auto code = std::string(errc_name(r.err().code));
    if (r.err().is(errc::unavailable))
      return fail("unavailable", "no berth node answers on " + names.api(verb));
    return fail(code, r.err().message);
  }
  auto v = json::parse(r->data);
  if (!v) return fail("internal", "malformed reply from a node: " + v.err().message);
  if (const auto* e = v->find("error")) {
    auto code = e->get_string("code");
    return {status_of(code), error_body(code, e->get_string("message")), {}};
  }
  return {ok_status, r->data, {}};
}

reply server::impl::handle(const request& req) {
  std::string_view target(req.target().data(), req.target().size());
  auto q = target.find('?');
  auto raw_path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  auto path = url_decode(raw_path);
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
    auto k = url_decode(pair.substr(0, eq));
    auto v = url_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (!k || !v) return fail("invalid_argument", "bad query string");
    params[*k] = *v;
  }
  auto method = req.method();
  if (*path == "/livez") {
    // Liveness never depends on NATS: a gateway waiting for its cluster is alive.
    return {http::status::ok, R"({"status":"live"})", {}};
  }
  if (*path == "/readyz") {
    if (!bus || !bus->is_connected()) return fail("unavailable", "not connected to NATS");
    return {http::status::ok, R"({"status":"ready"})", {}};
  }
  auto parts = split_path(*path);
  if (parts.empty() || parts[0] != "v1") return fail("not_found", "no such path: " + *path);

  // A token in the URL would end up in logs and browser history: refused, never looked at.
  for (const char* k : {"token", "access_token", "auth", "authorization", "api_key"})
    if (params.count(k))
      return fail("invalid_argument",
                  "tokens are never accepted in a URL; send `Authorization: Bearer <token>`");
  // Browsers: only the allowed origins (exact match) may call.
  if (auto o = req.find(http::field::origin); o != req.end()) {
    std::string origin(o->value());
    if (std::find(origins.begin(), origins.end(), origin) == origins.end())
      return fail("permission_denied", "origin \"" + origin + "\" is not allowed");
  }
  std::optional<token_record> who;
  if (auto a = req.find(http::field::authorization); a != req.end()) {
    std::string_view v(a->value().data(), a->value().size());
    if (v.rfind("Bearer ", 0) == 0) who = tokens.verify(std::string(v.substr(7)));
  }
  if (!who) {
    auto r = fail("unauthorized",
                  "a valid token is required (Authorization: Bearer <token>; "
                  "`berth token create NAME` makes one)");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"berth\"");
    return r;
  }
  auto need = [&](scope s) -> std::optional<reply> {
    if (static_cast<int>(who->scope) >= static_cast<int>(s)) return std::nullopt;
    return fail("permission_denied", "the token \"" + who->name + "\" has scope " +
                                         scope_name(who->scope) + "; this needs " + scope_name(s));
  };
  auto only = [&](std::initializer_list<const char*> allowed) -> std::optional<reply> {
    for (const auto& [k, v] : params) {
      bool ok = false;
      for (const char* a : allowed) ok = ok || k == a;
      if (!ok) return fail("invalid_argument", "unknown query parameter \"" + k + "\"");
    }
    return std::nullopt;
  };
  auto body_json = [&]() -> result<json::value> {
    if (req.body().empty()) return json::value::make_object();
    auto ct = std::string(req[http::field::content_type]);
    if (ct.rfind("application/json", 0) != 0)
      return error{errc::unsupported,
                   "Content-Type: expected application/json, got \"" + ct + "\""};
    auto v = json::parse(req.body());
    if (!v) return error{errc::invalid_argument, "body: " + v.err().message};
    return std::move(*v);
  };
  auto method_not_allowed = [&](const char* allow) {
    auto r = fail("method_not_allowed", std::string(req.method_string()) + " is not allowed on " +
                                            *path + "; allowed: " + allow);
    r.headers.emplace_back("Allow", allow);
    return r;
  };

  if (parts.size() == 2 && parts[1] == "stats") {
    if (method != http::verb::get) return method_not_allowed("GET");
    if (auto r = need(scope::read)) return *r;
    if (auto r = only({})) return *r;
    return api("stats", json::value::make_object(), http::status::ok);
  }
  if (parts.size() >= 2 && parts[1] == "sessions") {
    if (parts.size() == 2) {
      if (method == http::verb::get) {
        if (auto r = need(scope::read)) return *r;
        if (auto r = only({"status", "limit"})) return *r;
        json::value b = json::value::make_object();
        if (params.count("status")) b.set("status", params["status"]);
        if (params.count("limit")) {
          const auto& l = params["limit"];
          if (l.empty() || l.size() > 9 ||
              !std::all_of(l.begin(), l.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return fail("invalid_argument",
                        "limit: expected a positive integer, got \"" + l + "\"");
          b.set("limit", static_cast<std::int64_t>(std::stoll(l)));
        }
        return api("session.list", b, http::status::ok);
      }
      if (method == http::verb::post) {
        if (auto r = need(scope::write)) return *r;
        if (auto r = only({})) return *r;
        auto spec = body_json();
        if (!spec) return fail(errc_name(spec.err().code), spec.err().message);
        json::value b = json::value::make_object();
        b.set("spec", std::move(*spec));
        if (auto k = req.find("Idempotency-Key"); k != req.end())
          b.set("idempotency_key", std::string(k->value()));
        return api("session.start", b, http::status::created);
      }
      return method_not_allowed("GET, POST");
    }
    const auto& id = parts[2];
    if (!good_id(id))
      return fail("invalid_argument", "session id: must be 1 to 128 characters of [A-Za-z0-9_-]");
    if (parts.size() == 3) {
      if (method != http::verb::get) return method_not_allowed("GET");
      if (auto r = need(scope::read)) return *r;
      if (auto r = only({})) return *r;
      json::value b = json::value::make_object();
      b.set("id", id);
      return api("session.get", b, http::status::ok);
    }
    if (parts.size() == 4 && (parts[3] == "cancel" || parts[3] == "input" || parts[3] == "retry")) {
      if (method != http::verb::post) return method_not_allowed("POST");
      if (auto r = need(scope::write)) return *r;
      if (auto r = only({})) return *r;
      auto b = body_json();
      if (!b) return fail(errc_name(b.err().code), b.err().message);
      if (!b->is_object()) return fail("invalid_argument", "body: expected a JSON object");
      b->set("id", id);
      return api("session." + parts[3], *b, http::status::ok);
    }
  }
  return fail("not_found", "no such path: " + *path);
}

server::server(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

result<std::unique_ptr<server>> server::start(options o, std::shared_ptr<bus::client> bus) {
  if (o.tokens_file.empty())
    return error{errc::invalid_argument, "gateway: tokens_file is required"};
  auto colon = o.listen.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return error{errc::invalid_argument,
                 "gateway.listen: expected host:port, got \"" + o.listen + "\""};
  auto host = o.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  auto port_text = o.listen.substr(colon + 1);
  if (port_text.empty() || port_text.size() > 5 ||
      !std::all_of(port_text.begin(), port_text.end(),
                   [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(port_text) > 65535)
    return error{errc::invalid_argument, "gateway.listen: bad port in \"" + o.listen + "\""};
  beast::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec)
    return error{errc::invalid_argument,
                 "gateway.listen: \"" + host + "\" is not an IP address (" + ec.message() + ")"};
  auto g = std::make_unique<impl>(std::move(o), std::move(bus));
  tcp::endpoint ep(addr, static_cast<unsigned short>(std::stoi(port_text)));
  g->acceptor.open(ep.protocol(), ec);
  if (!ec) g->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) g->acceptor.bind(ep, ec);
  if (!ec) g->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return error{errc::unavailable,
                 "gateway.listen: cannot listen on " + g->opts.listen + ": " + ec.message()};
  auto bound = g->acceptor.local_endpoint();
  auto host_text = bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                           : bound.address().to_string();
  g->url = "http://" + host_text + ":" + std::to_string(bound.port());
  g->origins = g->opts.allowed_origins;
  if (g->origins.empty()) {
    g->origins.push_back(g->url);
    if (bound.address().is_loopback())
      g->origins.push_back("http://localhost:" + std::to_string(bound.port()));
  }
  g->accept();
  for (int i = 0; i < std::max(1, g->opts.io_threads); ++i)
    g->threads.emplace_back([p = g.get()] { p->ioc.run(); });
  lg()->info("gateway listening on {}", g->url);
  return std::unique_ptr<server>(new server(std::move(g)));
}

std::string server::url() const {
  return impl_->url;
}

void server::stop() {
  if (!impl_ || impl_->stopped.exchange(true)) return;
  asio::post(impl_->ioc, [p = impl_.get()] {
    beast::error_code ignored;
    p->acceptor.close(ignored);
  });
  impl_->api_pool.join();
  impl_->ioc.stop();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
}

server::~server() {
  stop();
}

}  // namespace berth::gateway
