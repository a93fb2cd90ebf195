#include "berth/gateway/loadgen.hpp"

#include "berth/base/process.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <time.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace berth::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

namespace {
struct peer {
  explicit peer(asio::io_context& ioc) : ws(ioc) {}
  websocket::stream<tcp::socket> ws;
  beast::flat_buffer buf;
  std::size_t items = 0;
  bool subscribed = false;
};
}  // namespace

struct ws_fleet::impl {
  asio::io_context ioc;
  std::vector<std::unique_ptr<peer>> peers;
  std::thread runner;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<double> latencies;
  std::size_t acks = 0;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;

  void read(peer* p) {
    p->ws.async_read(p->buf, [this, p](beast::error_code ec, std::size_t) {
      if (ec) return;
      auto data = static_cast<const char*>(p->buf.data().data());
      std::string_view m(data, p->buf.size());
      {
        std::lock_guard lock(mu);
        if (m.find("\"type\":\"subscribed\"") != std::string_view::npos) {
          acks++;
        } else if (m.find("\"seq\":") != std::string_view::npos) {
          p->items++;
          auto at = m.find("\"sent_ns\":");
          if (at != std::string_view::npos) {
            std::int64_t sent = 0;
            for (auto i = at + 10; i < m.size() && m[i] >= '0' && m[i] <= '9'; ++i)
              sent = sent * 10 + (m[i] - '0');
            latencies.push_back(static_cast<double>(monotonic_ns() - sent) / 1000.0);
          }
        }
      }
      cv.notify_all();
      p->buf.consume(p->buf.size());
      read(p);
    });
  }
};

ws_fleet::ws_fleet(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

ws_fleet::~ws_fleet() {
  impl_->work.reset();
  for (auto& p : impl_->peers) {
    beast::error_code ec;
    p->ws.next_layer().close(ec);
  }
  impl_->ioc.stop();
  if (impl_->runner.joinable()) impl_->runner.join();
}

result<std::unique_ptr<ws_fleet>> ws_fleet::open(const std::string& url, const std::string& token,
                                                 std::size_t n) {
  process::raise_open_files_limit();  // thousands of sockets
  auto i = std::make_unique<impl>();
  auto hostport = url.substr(url.find("//") + 2);
  auto colon = hostport.rfind(':');
  tcp::endpoint ep(asio::ip::make_address(hostport.substr(0, colon)),
                   static_cast<unsigned short>(std::stoi(hostport.substr(colon + 1))));
  auto auth = R"({"op":"auth","token":")" + token + R"("})";
  for (std::size_t k = 0; k < n; ++k) {
    auto p = std::make_unique<peer>(i->ioc);
    beast::error_code ec;
    p->ws.next_layer().connect(ep, ec);
    if (!ec) p->ws.next_layer().set_option(tcp::no_delay(true), ec);
    p->ws.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
      req.set(beast::http::field::sec_websocket_protocol, "berth.v1.json");
    }));
    if (!ec) p->ws.handshake(hostport, "/v1/ws", ec);
    if (!ec) p->ws.write(asio::buffer(auth), ec);
    if (!ec) p->ws.read(p->buf, ec);
    if (!ec &&
        beast::buffers_to_string(p->buf.data()).find("\"type\":\"auth\"") == std::string::npos)
      return error{errc::unauthorized,
                   "socket " + std::to_string(k) + ": " + beast::buffers_to_string(p->buf.data())};
    if (ec) return error{errc::unavailable, "socket " + std::to_string(k) + ": " + ec.message()};
    p->buf.consume(p->buf.size());
    i->peers.push_back(std::move(p));
  }
  i->work.emplace(asio::make_work_guard(i->ioc));
  i->runner = std::thread([p = i.get()] { p->ioc.run(); });
  return std::unique_ptr<ws_fleet>(new ws_fleet(std::move(i)));
}

status ws_fleet::subscribe(const std::string& topic, std::uint64_t since, millis timeout) {
  auto msg = std::make_shared<std::string>(R"({"op":"subscribe","topic":")" + topic +
                                           R"(","since":)" + std::to_string(since) + "}");
  {
    std::lock_guard lock(impl_->mu);
    impl_->acks = 0;
  }
  asio::post(impl_->ioc, [this, msg] {
    for (auto& p : impl_->peers) {
      beast::error_code ec;
      p->ws.write(asio::buffer(*msg), ec);  // small: done at once
      if (!p->subscribed) {
        p->subscribed = true;
        impl_->read(p.get());
      }
    }
  });
  std::unique_lock lock(impl_->mu);
  if (!impl_->cv.wait_for(lock, timeout, [&] { return impl_->acks >= impl_->peers.size(); }))
    return error{errc::timeout, "subscribe: " + std::to_string(impl_->acks) + " of " +
                                    std::to_string(impl_->peers.size()) + " acknowledged"};
  return {};
}

bool ws_fleet::wait_items(std::size_t items, millis timeout) {
  std::unique_lock lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] {
    for (const auto& p : impl_->peers)
      if (p->items < items) return false;
    return true;
  });
}

std::vector<double> ws_fleet::take_latencies() {
  std::lock_guard lock(impl_->mu);
  return std::exchange(impl_->latencies, {});
}

void ws_fleet::reset() {
  std::lock_guard lock(impl_->mu);
  impl_->latencies.clear();
  for (auto& p : impl_->peers) p->items = 0;
}

std::size_t ws_fleet::size() const {
  return impl_->peers.size();
}

}  // namespace berth::gateway
