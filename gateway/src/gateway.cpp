// The server: listening, HTTP connections (limits, timeouts, keep-alive) and handing a socket
// over to SSE or WebSocket; the shared helpers of internal.hpp.

#include "berth/gateway/gateway.hpp"

#include "hub.hpp"
#include "internal.hpp"

#include "berth/base/log.hpp"
#include "berth/base/process.hpp"

#include <algorithm>
#include <optional>

namespace berth::gateway {

namespace {

using response = http::response<http::string_body>;

std::shared_ptr<spdlog::logger> lg() {
  static auto l = log::get("gateway");
  return l;
}

}  // namespace

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
  if (code == "rate_limited") return http::status::too_many_requests;
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

reply fail(const std::string& code, const std::string& message) {
  reply r;
  r.status = status_of(code);
  r.body = error_body(code, message);
  return r;
}

bool good_id(std::string_view id) {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

std::optional<std::chrono::milliseconds> rate_limiter::take(const std::string& name) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  auto [it, fresh] = buckets_.try_emplace(name, bucket{burst_, now});
  auto& b = it->second;
  if (!fresh) {
    b.tokens =
        std::min(burst_, b.tokens + rate_ * std::chrono::duration<double>(now - b.at).count());
    b.at = now;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return std::nullopt;
  }
  auto wait_s = (1 - b.tokens) / rate_;
  return std::chrono::milliseconds(static_cast<std::int64_t>(wait_s * 1000) + 1);
}

bool stream_counter::acquire(const std::string& name) {
  std::lock_guard lock(mu_);
  auto& n = open_[name];
  if (n >= cap_) return false;
  n++;
  return true;
}

void stream_counter::release(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = open_.find(name);
  if (it == open_.end()) return;
  if (--it->second == 0) open_.erase(it);
}

server::impl::impl(options o, std::shared_ptr<bus::client> b)
    : opts(std::move(o)),
      bus(std::move(b)),
      names(opts.prefix),
      tokens(opts.tokens_file),
      api_pool(static_cast<std::size_t>(std::max(1, opts.api_threads))),
      limiter(opts.rate_per_second, opts.rate_burst),
      streams(opts.max_streams_per_token),
      shared_feeds(std::make_unique<hub>(*this)) {}

server::impl::~impl() = default;

namespace {

// One connection: read a request (header and body limits, a header timeout), hand it to the
// API pool, write the reply on the connection's strand, keep alive — or give the socket to
// SSE or a WebSocket.
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
    if (ec == http::error::header_limit) {
      r = fail("too_large", "request headers are larger than " +
                                std::to_string(g_->opts.max_header_bytes) + " bytes");
      r.status = http::status::request_header_fields_too_large;
    } else if (ec == http::error::body_limit) {
      r = fail("too_large", "request body is larger than " +
                                std::to_string(g_->opts.max_body_bytes) +
                                " bytes (gateway.max_body_bytes)");
    } else {
      r = fail("invalid_argument", "bad HTTP request: " + ec.message());
    }
    send(std::move(r), 11, false, true);
  }

  void on_read(beast::error_code ec) {
    if (ec) return refuse(ec);
    auto req = std::make_shared<request>(parser_->release());
    stream_.expires_never();
    asio::post(g_->api_pool, [self = shared_from_this(), req] {
      auto r = self->g_->handle(req);
      asio::post(self->stream_.get_executor(), [self, req, r = std::move(r)]() mutable {
        if (r.takeover) return r.takeover(std::move(self->stream_), std::move(self->buffer_), req);
        self->send(std::move(r), req->version(), req->keep_alive());
      });
    });
  }

  // `linger`: the client may still be sending what we refused to read; keep reading (and
  // dropping) it for a while after the reply, or the kernel resets the connection and the client
  // never sees the reply.
  void send(reply r, unsigned version, bool keep, bool linger = false) {
    auto res = std::make_shared<response>(r.status, version);
    res->set(http::field::server, "berth");
    res->set(http::field::content_type, r.content_type);
    res->set(http::field::cache_control, "no-store");
    res->set("X-Content-Type-Options", "nosniff");
    for (const auto& [k, v] : r.headers) res->insert(k, v);
    res->body() = r.body.empty() && r.content_type == "application/json" ? std::string("{}")
                                                                         : std::move(r.body);
    res->keep_alive(keep);
    res->prepare_payload();
    stream_.expires_after(std::chrono::seconds(30));
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, linger](beast::error_code ec, std::size_t) {
                        if (ec || !res->keep_alive()) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          if (!ec && linger) {
                            self->stream_.expires_after(std::chrono::seconds(5));
                            self->drain();
                          }
                          return;
                        }
                        self->read();
                      });
  }

  void drain() {
    buffer_.consume(buffer_.size());
    stream_.async_read_some(buffer_.prepare(64 << 10),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (!ec) self->drain();
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
      if (stopped || ec == asio::error::operation_aborted) return;
      // Out of file descriptors (or another accept error): wait a moment instead of spinning.
      lg()->warn("gateway: accept failed: {}; retrying in 100 ms", ec.message());
      auto t = std::make_shared<asio::steady_timer>(ioc, std::chrono::milliseconds(100));
      t->async_wait([this, t](beast::error_code) {
        if (!stopped) accept();
      });
      return;
    }
    if (connections.load() >= opts.max_connections) {
      beast::error_code ignored;
      s.close(ignored);  // past the cap: closed at once, nothing read
    } else {
      connections++;
      // Small frames (events, pongs, closes) go out at once: no Nagle wait on delayed ACKs.
      beast::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
      std::make_shared<connection>(std::move(s), this)->start();
    }
    accept();
  });
}

server::server(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

result<std::unique_ptr<server>> server::start(options o, std::shared_ptr<bus::client> bus) {
  // Every socket is a file descriptor; the soft limit is often below max_connections.
  process::raise_open_files_limit();
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
  if (o.rate_per_second <= 0 || o.rate_burst < 1)
    return error{errc::invalid_argument,
                 "gateway.rate_limit: expected a positive rate and a burst of at least 1"};
  beast::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec)
    return error{errc::invalid_argument,
                 "gateway.listen: \"" + host + "\" is not an IP address (" + ec.message() + ")"};
  auto g = std::make_unique<impl>(std::move(o), std::move(bus));
  if (auto st = g->load_console(); !st) return st.err();
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
  impl_->gate->shut();
  asio::post(impl_->ioc, [p = impl_.get()] {
    beast::error_code ignored;
    p->acceptor.close(ignored);
  });
  impl_->ioc.stop();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
  impl_->api_pool.join();
}

server::~server() {
  stop();
}

}  // namespace berth::gateway
