#include "ws_client.hpp"

#include "berth/base/process.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <stdexcept>

namespace berth::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

struct ws_client::impl {
  asio::io_context ioc;
  websocket::stream<tcp::socket> ws{ioc};
  int status = 0;
  std::string protocol;
  bool open = false;
  bool closed = false;
  int code = 0;
  std::string reason;
  beast::flat_buffer buf;
  bool reading = false;
  std::optional<std::string> ready;  // a message read while nobody waited

  void start_read() {
    reading = true;
    ws.async_read(buf, [this](beast::error_code ec, std::size_t) {
      reading = false;
      if (ec) {
        closed = true;
        code = ws.reason().code == websocket::close_code::none ? 1006
                                                               : static_cast<int>(ws.reason().code);
        reason = std::string(ws.reason().reason.c_str());
        return;
      }
      ready = beast::buffers_to_string(buf.data());
      buf.consume(buf.size());
    });
  }
};

ws_client::ws_client(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
ws_client::~ws_client() {
  beast::error_code ignored;
  impl_->ws.next_layer().close(ignored);
}

std::unique_ptr<ws_client> ws_client::open(const std::string& base, const std::string& path,
                                           options o) {
  process::raise_open_files_limit();  // thousands of sockets
  auto i = std::make_unique<impl>();
  auto hostport = base.substr(base.find("//") + 2);
  auto colon = hostport.rfind(':');
  auto host = hostport.substr(0, colon);
  auto port = hostport.substr(colon + 1);
  tcp::resolver r(i->ioc);
  if (o.receive_buffer == 0) {
    asio::connect(i->ws.next_layer(), r.resolve(host, port));
  } else {
    // Set before connecting, so that the window the server sees is small from the start.
    auto ep = r.resolve(host, port).begin()->endpoint();
    auto& sock = i->ws.next_layer();
    sock.open(ep.protocol());
    sock.set_option(asio::socket_base::receive_buffer_size(static_cast<int>(o.receive_buffer)));
    sock.connect(ep);
  }
  i->ws.read_message_max(64 << 20);
  i->ws.set_option(websocket::stream_base::decorator([o](websocket::request_type& req) {
    if (!o.subprotocol.empty()) req.set(beast::http::field::sec_websocket_protocol, o.subprotocol);
    for (const auto& [k, v] : o.headers) req.set(k, v);
  }));
  websocket::response_type res;
  beast::error_code ec;
  i->ws.handshake(res, hostport, path, ec);
  if (!ec) {
    i->open = true;
    i->status = static_cast<int>(res.result_int());
    i->protocol = std::string(res[beast::http::field::sec_websocket_protocol]);
  } else {
    // Beast 1.74 leaves `res` empty when the upgrade is declined: ask again as plain HTTP (the
    // same upgrade request) to learn the status the server answers.
    tcp::socket s(i->ioc);
    asio::connect(s, r.resolve(host, port));
    beast::http::request<beast::http::empty_body> req{beast::http::verb::get, path, 11};
    req.set(beast::http::field::host, hostport);
    req.set(beast::http::field::upgrade, "websocket");
    req.set(beast::http::field::connection, "Upgrade");
    req.set(beast::http::field::sec_websocket_version, "13");
    req.set(beast::http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZQ==");
    if (!o.subprotocol.empty()) req.set(beast::http::field::sec_websocket_protocol, o.subprotocol);
    for (const auto& [k, v] : o.headers) req.set(k, v);
    beast::http::write(s, req, ec);
    beast::flat_buffer b;
    beast::http::response<beast::http::string_body> plain;
    if (!ec) beast::http::read(s, b, plain, ec);
    i->status = ec ? -1 : static_cast<int>(plain.result_int());
  }
  return std::unique_ptr<ws_client>(new ws_client(std::move(i)));
}

bool ws_client::connected() const {
  return impl_->open;
}
int ws_client::status() const {
  return impl_->status;
}
std::string ws_client::protocol() const {
  return impl_->protocol;
}

void ws_client::send(const std::string& text) {
  beast::error_code ec;
  impl_->ws.text(true);
  impl_->ws.write(asio::buffer(text), ec);
}

void ws_client::send_binary(const std::string& data) {
  beast::error_code ec;
  impl_->ws.binary(true);
  impl_->ws.write(asio::buffer(data), ec);
  impl_->ws.text(true);
}

void ws_client::send_fragmented(const std::string& text, std::size_t piece) {
  beast::error_code ec;
  impl_->ws.text(true);
  impl_->ws.auto_fragment(false);
  for (std::size_t at = 0; at < text.size() && !ec; at += piece) {
    auto n = std::min(piece, text.size() - at);
    impl_->ws.write_some(at + n >= text.size(), asio::buffer(text.data() + at, n), ec);
  }
}

std::optional<std::string> ws_client::read(std::chrono::milliseconds timeout) {
  auto& i = *impl_;
  if (i.ready) return std::exchange(i.ready, std::nullopt);
  if (i.closed || !i.open) return std::nullopt;
  if (!i.reading) i.start_read();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!i.ready && !i.closed && std::chrono::steady_clock::now() < deadline) {
    i.ioc.restart();
    i.ioc.run_one_for(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()));
  }
  if (i.ready) return std::exchange(i.ready, std::nullopt);
  return std::nullopt;
}

std::optional<json::value> ws_client::expect(const std::string& type,
                                             std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    auto m = read(left);
    if (!m) return std::nullopt;
    auto v = json::parse(*m);
    if (v && v->get_string("type") == type) return std::move(*v);
  }
  return std::nullopt;
}

bool ws_client::closed() const {
  return impl_->closed;
}
int ws_client::close_code() const {
  return impl_->code;
}
std::string ws_client::close_reason() const {
  return impl_->reason;
}

}  // namespace berth::test
