#pragma once

// What the gateway's source files share: the server's state, a request's principal, replies,
// and the limits per token. Beast stays here and in the .cpp files, out of the public header.
//
// Threads: I/O threads run the sockets (each connection on its own strand); the API pool runs
// everything that blocks on NATS (API requests, opening and closing consumers). nats.c's
// threads only copy a message and post it to a connection's strand.

#include "berth/base/json.hpp"
#include "berth/bus/subjects.hpp"
#include "berth/gateway/gateway.hpp"
#include "berth/gateway/tokens.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace berth::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using request = http::request<http::string_body>;

/// Who makes a request: the name and scope of a token, login code's session (cookie) or none.
struct principal {
  std::string name;
  gateway::scope scope = scope::read;
  bool cookie = false;  ///< authenticated by the browser-session cookie (CSRF rules apply)
  std::string secret;   ///< the token or cookie it came with (memory only: long streams recheck it)
  [[nodiscard]] bool may(gateway::scope s) const {
    return static_cast<int>(scope) >= static_cast<int>(s);
  }
};

/// A reply prepared on the API pool and written on the connection's strand.
struct reply {
  http::status status = http::status::ok;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string content_type = "application/json";
  /// Set for SSE and WebSocket: the connection hands its socket (and what it read past the
  /// request) over instead of writing a reply. Runs on the connection's strand.
  std::function<void(beast::tcp_stream&&, beast::flat_buffer&&, std::shared_ptr<request>)> takeover;
};

/// The HTTP status of an API error code (the codes of errc_name()).
[[nodiscard]] http::status status_of(const std::string& code);
/// {"error": {"code", "message"}}
[[nodiscard]] std::string error_body(const std::string& code, const std::string& message);
[[nodiscard]] reply fail(const std::string& code, const std::string& message);
/// A session id as the API takes it: 1-128 of [A-Za-z0-9_-].
[[nodiscard]] bool good_id(std::string_view id);

/// A token bucket per principal name: `rate` requests a second, bursts of `burst`.
class rate_limiter {
 public:
  rate_limiter(double rate, double burst) : rate_(rate), burst_(burst) {}
  /// Take one; when the bucket is empty, how long until one is there.
  [[nodiscard]] std::optional<std::chrono::milliseconds> take(const std::string& name);

 private:
  struct bucket {
    double tokens;
    std::chrono::steady_clock::time_point at;
  };
  std::mutex mu_;
  std::map<std::string, bucket> buckets_;
  double rate_, burst_;
};

/// Long-lived connections (WebSocket, SSE) per principal name, against a cap.
class stream_counter {
 public:
  explicit stream_counter(std::size_t cap) : cap_(cap) {}
  /// Count one more for `name`; false (nothing counted) when it already has `cap`.
  [[nodiscard]] bool acquire(const std::string& name);
  void release(const std::string& name);
  [[nodiscard]] std::size_t cap() const { return cap_; }

 private:
  std::mutex mu_;
  std::map<std::string, std::size_t> open_;
  std::size_t cap_;
};

/// What nats.c threads go through to reach a connection's strand: once the server stops, the
/// gate is shut and late messages are dropped instead of being posted to a stopped io_context.
class delivery_gate {
 public:
  template <typename Executor, typename Fn>
  void post(const Executor& exec, Fn&& fn) {
    std::lock_guard lock(mu_);
    if (open_) asio::post(exec, std::forward<Fn>(fn));
  }
  void shut() {
    std::lock_guard lock(mu_);
    open_ = false;
  }

 private:
  std::mutex mu_;
  bool open_ = true;
};

class hub;

struct server::impl {
  // Declared so that the io_context (and with it every connection) goes first, while the pool,
  // the counters and the bus they use still exist.
  options opts;
  std::shared_ptr<bus::client> bus;
  bus::subjects names;
  token_store tokens;
  asio::thread_pool api_pool;
  std::atomic<std::size_t> connections{0};
  std::atomic<bool> stopped{false};
  std::string url;
  std::vector<std::string> origins;  // allowed, exactly
  rate_limiter limiter;
  stream_counter streams;
  std::map<std::string, std::string> console;  // the built-in console: path -> content
  std::string console_root;                    // or its folder on disk (realpath)
  std::unique_ptr<hub> shared_feeds;           ///< one consumer per watched topic (hub.hpp)
  std::shared_ptr<delivery_gate> gate = std::make_shared<delivery_gate>();
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;

  impl(options o, std::shared_ptr<bus::client> b);
  ~impl();

  void accept();
  /// Read the console's files (options::console_dir, else the ones built in).
  [[nodiscard]] status load_console();
  /// A console file for GET `path`, or nullopt.
  [[nodiscard]] std::optional<reply> console_file(const std::string& path) const;
  /// Route one request (API pool).
  reply handle(const std::shared_ptr<request>& req);
  /// One API call over NATS, the caller's name added to state-changing verbs; `ok_status` is
  /// the HTTP status of success.
  reply api(const std::string& verb, json::value body, const principal& who,
            http::status ok_status = http::status::ok);
  /// The same, as the API's JSON ({"error": ...} on failure) for WebSocket `call`.
  std::string api_json(const std::string& verb, json::value body, const principal& who);
  /// The scope a verb needs; nullopt for a verb the gateway does not pass on.
  [[nodiscard]] static std::optional<scope> scope_of(const std::string& verb);

  /// The principal of a request: a bearer token, else the session cookie.
  [[nodiscard]] std::optional<principal> authenticate(const request& req) const;
  /// Whether the credential of a long-lived stream still holds (not revoked, not expired).
  [[nodiscard]] bool still_valid(const principal& p) const;
  /// The request's Origin, if any, is allowed (exact match).
  [[nodiscard]] std::optional<reply> check_origin(const request& req) const;
  [[nodiscard]] bool origin_allowed(std::string_view origin) const;

  /// Server-Sent Events of one session's journal or logs (takes the socket over).
  reply sse(const std::shared_ptr<request>& req, const principal& who, const std::string& session,
            bool logs, const std::string& step);
  /// A WebSocket at /v1/ws (takes the socket over).
  reply websocket(const std::shared_ptr<request>& req, std::optional<principal> who);
};

/// Hand a socket to a WebSocket session (websocket.cpp).
void run_websocket(server::impl* g, beast::tcp_stream&& s, std::shared_ptr<request> req,
                   std::optional<principal> who);

}  // namespace berth::gateway
