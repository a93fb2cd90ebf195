#pragma once

// A write-behind layer under a Beast WebSocket stream. Everything sent on the connection — the
// frames the gateway encodes itself and Beast's own writes (the handshake reply, pings, pongs,
// the close frame) — goes into one buffer in order, and the buffer goes to the socket in as few
// writes as the peer allows: while one write is on the wire, everything queued behind it is
// sent together by the next. A burst to a hundred browsers thus costs a write per browser per
// burst, not per item, and the first item of a quiet moment still leaves at once.
//
// Beast's writes complete as soon as they are queued; what bounds the buffer is the owner,
// which looks at buffered() before it queues more (the gateway turns the excess into gaps).

#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace berth::gateway {

class write_behind {
 public:
  using next_layer_type = boost::beast::tcp_stream;
  using executor_type = next_layer_type::executor_type;
  using clock_type = std::chrono::steady_clock;

  explicit write_behind(next_layer_type&& s) : next_(std::move(s)) {}

  executor_type get_executor() noexcept { return next_.get_executor(); }
  next_layer_type& next_layer() noexcept { return next_; }

  /// Queue one unmasked, unfragmented text frame (a server's frame: RFC 6455 §5.2).
  void text_frame(std::string_view payload) {
    unsigned char h[10];
    std::size_t n = 0;
    h[n++] = 0x81;  // FIN, text
    if (payload.size() < 126) {
      h[n++] = static_cast<unsigned char>(payload.size());
    } else if (payload.size() <= 0xffff) {
      h[n++] = 126;
      h[n++] = static_cast<unsigned char>(payload.size() >> 8);
      h[n++] = static_cast<unsigned char>(payload.size());
    } else {
      h[n++] = 127;
      for (int shift = 56; shift >= 0; shift -= 8)
        h[n++] = static_cast<unsigned char>(static_cast<std::uint64_t>(payload.size()) >> shift);
    }
    if (failed_) return;
    pending_.append(reinterpret_cast<const char*>(h), n);
    pending_.append(payload);
  }

  /// Start sending what is queued, unless a write is on the wire already (its completion
  /// sends the rest).
  void kick() {
    if (!writing_ && !pending_.empty() && !failed_) write();
  }

  /// Bytes queued or on the wire.
  [[nodiscard]] std::size_t buffered() const noexcept {
    return pending_.size() + (flying_.size() - sent_);
  }
  /// A write is on the wire (the peer has not taken everything yet).
  [[nodiscard]] bool writing() const noexcept { return writing_; }
  /// When the peer last took bytes (or the last write began).
  [[nodiscard]] clock_type::time_point progress() const noexcept { return progress_; }
  /// Called after each completed write with its error (none: the peer took some bytes).
  void on_written(std::function<void(boost::beast::error_code)> fn) { written_ = std::move(fn); }
  /// What must stay alive while a write is on the wire (the object this layer lives in).
  void keep_alive(std::weak_ptr<void> owner) { owner_ = std::move(owner); }

  // AsyncReadStream: reads go straight through.
  template <class Buffers, class Handler>
  void async_read_some(const Buffers& b, Handler&& h) {
    next_.async_read_some(b, std::forward<Handler>(h));
  }

  // AsyncWriteStream, for Beast's own writes: queued behind ours, completed at once.
  template <class Buffers, class Handler>
  void async_write_some(const Buffers& b, Handler&& h) {
    std::size_t n = boost::asio::buffer_size(b);
    boost::beast::error_code ec = failed_;
    if (!failed_) {
      for (auto it = boost::asio::buffer_sequence_begin(b);
           it != boost::asio::buffer_sequence_end(b); ++it) {
        boost::asio::const_buffer c(*it);
        pending_.append(static_cast<const char*>(c.data()), c.size());
      }
      kick();
    }
    auto ex = boost::asio::get_associated_executor(h, get_executor());
    boost::asio::post(ex, boost::beast::bind_front_handler(std::forward<Handler>(h), ec,
                                                           failed_ ? std::size_t{0} : n));
  }

  /// Beast's teardown (after the close handshake): once everything queued has gone.
  template <class Handler>
  friend void async_teardown(boost::beast::role_type role, write_behind& s, Handler&& h) {
    if (!s.writing_ || s.failed_) {
      boost::beast::websocket::async_teardown(role, s.next_.socket(), std::forward<Handler>(h));
      return;
    }
    auto hp = std::make_shared<std::decay_t<Handler>>(std::forward<Handler>(h));
    s.drained_ = [&s, role, hp] {
      boost::beast::websocket::async_teardown(role, s.next_.socket(), std::move(*hp));
    };
  }
  friend void teardown(boost::beast::role_type role, write_behind& s,
                       boost::beast::error_code& ec) {
    boost::beast::websocket::teardown(role, s.next_.socket(), ec);
  }

 private:
  void write() {
    if (sent_ == flying_.size()) {
      flying_.clear();
      if (flying_.capacity() > keep_capacity) std::string().swap(flying_);
      flying_.swap(pending_);
      sent_ = 0;
    }
    writing_ = true;
    progress_ = clock_type::now();
    next_.async_write_some(boost::asio::buffer(flying_.data() + sent_, flying_.size() - sent_),
                           [this, keep = owner_.lock()](boost::beast::error_code ec,
                                                        std::size_t n) { written(ec, n); });
  }

  void written(boost::beast::error_code ec, std::size_t n) {
    writing_ = false;
    sent_ += n;
    if (ec) {
      failed_ = ec;
      pending_.clear();
      std::string().swap(pending_);
      std::string().swap(flying_);
      sent_ = 0;
    } else {
      progress_ = clock_type::now();
    }
    if (written_) written_(ec);
    if (!failed_ && (sent_ < flying_.size() || !pending_.empty())) return write();
    if (!failed_) {
      flying_.clear();
      sent_ = 0;
      if (flying_.capacity() > keep_capacity) std::string().swap(flying_);
      if (pending_.capacity() > keep_capacity) std::string().swap(pending_);
    }
    if (drained_) std::exchange(drained_, {})();
  }

  static constexpr std::size_t keep_capacity = std::size_t{64} << 10;

  next_layer_type next_;
  std::string pending_;  ///< queued, not yet handed to the socket
  std::string flying_;   ///< handed to the socket; sent_ bytes of it taken
  std::size_t sent_ = 0;
  bool writing_ = false;
  boost::beast::error_code failed_;
  clock_type::time_point progress_{};
  std::function<void(boost::beast::error_code)> written_;
  std::function<void()> drained_;  ///< a teardown waiting for the queue to empty
  std::weak_ptr<void> owner_;
};

}  // namespace berth::gateway
