#include "berth/lease/http.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/version.hpp>
#include <openssl/ssl.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <optional>

namespace berth::lease {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

result<url_parts> split_url(const std::string& url, const std::string& field) {
  url_parts p;
  auto se = url.find("://");
  if (se == std::string::npos)
    return error{errc::invalid_argument, field + ": \"" + url + "\" is not a URL"};
  p.scheme = url.substr(0, se);
  if (p.scheme != "http" && p.scheme != "https")
    return error{errc::invalid_argument, field + ": only http:// and https:// are supported"};
  auto rest = url.substr(se + 3);
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  p.target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (authority.empty() || authority.find('@') != std::string::npos)
    return error{errc::invalid_argument, field + ": \"" + url + "\" needs a host and no user part"};
  // host, host:port, [v6], [v6]:port
  auto close = authority.front() == '[' ? authority.find(']') : std::string::npos;
  auto colon = authority.find(':', close == std::string::npos ? 0 : close);
  p.host = authority.substr(0, colon);
  p.port = colon == std::string::npos ? (p.scheme == "https" ? "443" : "80")
                                      : authority.substr(colon + 1);
  if (close != std::string::npos) p.host = authority.substr(1, close - 1);
  return p;
}

namespace {

// The exchange runs asynchronously on a private io_context so that one deadline covers
// resolving, connecting, the TLS handshake, writing and reading.
template <class Stream>
result<http_response> exchange(
    asio::io_context& ioc, Stream& stream, http::request<http::string_body>& req, millis timeout,
    const std::string& what, std::function<void(std::function<void(beast::error_code)>)> connect) {
  std::optional<beast::error_code> failed;
  std::string stage = "connect";
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::uint64_t{16} << 20);
  bool done = false;
  connect([&](beast::error_code ec) {
    if (ec) {
      failed = ec;
      return;
    }
    stage = "send the request";
    http::async_write(stream, req, [&](beast::error_code ec2, std::size_t) {
      if (ec2) {
        failed = ec2;
        return;
      }
      stage = "read the response";
      http::async_read(stream, buf, parser, [&](beast::error_code ec3, std::size_t) {
        if (ec3) failed = ec3;
        done = true;
      });
    });
  });
  ioc.run_for(timeout);
  if (!done && !failed)
    return error{errc::timeout, what + ": no answer within " + format_duration(timeout) +
                                    " (while trying to " + stage + ")"};
  if (failed)
    return error{errc::unavailable, what + ": could not " + stage + ": " + failed->message()};
  http_response r;
  auto& res = parser.get();
  r.status = static_cast<int>(res.result_int());
  r.body = res.body();
  for (const auto& f : res) {
    std::string name(f.name_string());
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    r.headers[name] = std::string(f.value());
  }
  return r;
}

}  // namespace

result<http_response> http_call(const std::string& method, const std::string& url,
                                const std::map<std::string, std::string>& headers,
                                const std::string& body, millis timeout) {
  auto parts = split_url(url, "url");
  if (!parts) return parts.err();
  // The query string is not part of `what`: it is not secret, but errors stay short.
  std::string what = method + " " + parts->scheme + "://" + parts->host + ":" + parts->port +
                     parts->target.substr(0, parts->target.find('?'));
  http::request<http::string_body> req;
  req.method_string(method);
  req.target(parts->target);
  req.version(11);
  req.set(http::field::host, parts->host);
  req.set(http::field::user_agent, "berth");
  req.set(http::field::connection, "close");
  for (const auto& [k, v] : headers) req.set(k, v);
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    req.body() = body;
    req.prepare_payload();
  }
  asio::io_context ioc;
  tcp::resolver resolver(ioc);
  if (parts->scheme == "http") {
    beast::tcp_stream stream(ioc);
    return exchange(
        ioc, stream, req, timeout, what, [&](std::function<void(beast::error_code)> next) {
          resolver.async_resolve(
              parts->host, parts->port,
              [&, next](beast::error_code ec, tcp::resolver::results_type rs) {
                if (ec) return next(ec);
                stream.async_connect(
                    rs, [next](beast::error_code ec2, const tcp::endpoint&) { next(ec2); });
              });
        });
  }
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.set_default_verify_paths();
  ctx.set_verify_mode(asio::ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  if (!SSL_set_tlsext_host_name(stream.native_handle(), parts->host.c_str()))
    return error{errc::invalid_argument, what + ": cannot set the TLS server name"};
  stream.set_verify_callback(asio::ssl::host_name_verification(parts->host));
  return exchange(
      ioc, stream, req, timeout, what, [&](std::function<void(beast::error_code)> next) {
        resolver.async_resolve(parts->host, parts->port,
                               [&, next](beast::error_code ec, tcp::resolver::results_type rs) {
                                 if (ec) return next(ec);
                                 beast::get_lowest_layer(stream).async_connect(
                                     rs, [&, next](beast::error_code ec2, const tcp::endpoint&) {
                                       if (ec2) return next(ec2);
                                       stream.async_handshake(
                                           asio::ssl::stream_base::client,
                                           [next](beast::error_code ec3) { next(ec3); });
                                     });
                               });
      });
}

}  // namespace berth::lease
