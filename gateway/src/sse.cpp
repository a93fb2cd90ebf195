// Server-Sent Events: GET /v1/sessions/{id}/events and /logs[?step=]. `id:` is the JetStream
// sequence, so a reconnecting EventSource resumes with Last-Event-ID; the stream ends with an
// `end` event once the session has ended (logs: once its output went quiet after that). A
// reader that falls too far behind is disconnected and resumes where it was: no silent loss.

#include "feed.hpp"
#include "internal.hpp"

#include <deque>

namespace berth::gateway {

using clock_type = std::chrono::steady_clock;

namespace {

class sse_stream : public std::enable_shared_from_this<sse_stream> {
 public:
  sse_stream(server::impl* g, beast::tcp_stream&& s, principal who, topic t, std::uint64_t since,
             std::uint64_t journal_last)
      : s_(std::move(s)),
        g_(g),
        who_(std::move(who)),
        t_(std::move(t)),
        since_(since),
        journal_last_(journal_last),
        timer_(s_.get_executor()) {
    g_->connections++;
  }
  ~sse_stream() {
    g_->streams.release(who_.name);
    close_feed(*g_, std::move(feed_));
    close_feed(*g_, std::move(journal_));
    g_->connections--;
  }

  void start() {
    s_.expires_never();
    send(
        "HTTP/1.1 200 OK\r\nServer: berth\r\nContent-Type: text/event-stream\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\n"
        "X-Accel-Buffering: no\r\n\r\nretry: 2000\n\n");
    last_item_ = heartbeat_ = clock_type::now();
    std::weak_ptr<sse_stream> weak = shared_from_this();
    auto exec = s_.get_executor();
    auto to_strand = [weak, exec, gate = g_->gate](int which) {
      return [weak, exec, which, gate](bus::message m) {
        if (weak.expired()) return;
        gate->post(exec, [weak, which, m = std::move(m)] {
          if (auto self = weak.lock()) self->deliver(which, m);
        });
      };
    };
    asio::post(g_->api_pool, [g = g_, weak, exec, t = t_, since = since_,
                              journal_last = journal_last_, to_strand]() {
      auto feed = open_feed(*g, t, since, to_strand(0));
      result<std::unique_ptr<bus::subscription>> journal = std::unique_ptr<bus::subscription>();
      if (feed && t.k == topic::kind::logs) {
        // Logs end with the session: follow its journal from the last event on.
        topic ev = t;
        ev.k = topic::kind::events;
        journal = open_feed(*g, ev, journal_last > 0 ? journal_last - 1 : 0, to_strand(1));
      }
      auto f = std::make_shared<decltype(feed)>(std::move(feed));
      auto j = std::make_shared<decltype(journal)>(std::move(journal));
      asio::post(exec, [weak, f, j] {
        auto self = weak.lock();
        if (!self) return;
        self->opened(std::move(*f), std::move(*j));
      });
    });
    tick();
  }

 private:
  void opened(result<std::unique_ptr<bus::subscription>> feed,
              result<std::unique_ptr<bus::subscription>> journal) {
    if (!feed || !journal) {
      const auto& e = feed ? journal.err() : feed.err();
      send("event: error\ndata: " + error_body(errc_name(e.code), e.message) + "\n\n");
      return finish();
    }
    if (closing_) {
      close_feed(*g_, std::move(*feed));
      close_feed(*g_, std::move(*journal));
      return;
    }
    feed_ = std::move(*feed);
    journal_ = std::move(*journal);
  }

  void deliver(int which, const bus::message& m) {
    if (closing_) return;
    if (which == 1) {  // the journal, for a logs stream: has the session ended?
      if (ends_session(m)) ended_ = true;
      return;
    }
    if (m.seq <= since_) return;
    since_ = m.seq;
    last_item_ = clock_type::now();
    send("id: " + std::to_string(m.seq) + "\ndata: " + item_data(t_, m) + "\n\n");
    if (out_bytes_ > g_->opts.max_buffered_bytes) {
      // Too far behind: the client reconnects with Last-Event-ID and misses nothing.
      return drop();
    }
    if (t_.k == topic::kind::events && ends_session(m)) finish();
  }

  void finish() {
    send("event: end\ndata: {}\n\n");
    closing_ = true;
    timer_.cancel();
  }

  void drop() {
    closing_ = true;
    timer_.cancel();
    beast::error_code ignored;
    s_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    s_.socket().close(ignored);
  }

  void send(std::string text) {
    out_bytes_ += text.size();
    out_.push_back(std::move(text));
    if (!writing_) write_next();
  }

  void write_next() {
    if (out_.empty()) {
      writing_ = false;
      if (closing_) {
        beast::error_code ignored;
        s_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      }
      return;
    }
    writing_ = true;
    progress_ = clock_type::now();
    asio::async_write(s_.socket(), asio::buffer(out_.front()),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        self->out_bytes_ -= self->out_.front().size();
                        self->out_.pop_front();
                        if (ec) return self->drop();
                        self->write_next();
                      });
  }

  // Once a second: heartbeats, the end of a logs stream, a reader that stopped reading.
  void tick() {
    timer_.expires_after(std::chrono::seconds(1));
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closing_) return;
      auto now = clock_type::now();
      if (self->writing_ && now - self->progress_ > self->g_->opts.stall_timeout)
        return self->drop();
      if (self->ended_ && now - self->last_item_ > std::chrono::seconds(1)) return self->finish();
      if (now - self->heartbeat_ > std::chrono::seconds(15)) {
        self->heartbeat_ = now;
        // A revoked or expired credential ends the stream (the client's reconnect gets 401).
        if (!self->g_->still_valid(self->who_)) return self->drop();
        self->send(": keep-alive\n\n");
      }
      self->tick();
    });
  }

  beast::tcp_stream s_;
  server::impl* g_;
  principal who_;
  topic t_;
  std::uint64_t since_;
  std::uint64_t journal_last_;
  asio::steady_timer timer_;
  std::unique_ptr<bus::subscription> feed_, journal_;
  std::deque<std::string> out_;
  std::size_t out_bytes_ = 0;
  bool writing_ = false, closing_ = false, ended_ = false;
  clock_type::time_point last_item_, heartbeat_, progress_;
};

}  // namespace

reply server::impl::sse(const std::shared_ptr<request>& req, const principal& who,
                        const std::string& session, bool logs, const std::string& step) {
  std::uint64_t since = 0;
  if (auto h = req->find("Last-Event-ID"); h != req->end()) {
    std::string v(h->value());
    bool digits = !v.empty() && v.size() <= 19 &&
                  std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (v != "-1" && !digits)
      return fail("invalid_argument",
                  "Last-Event-ID: expected a sequence number (or -1 for the start), got \"" +
                      v.substr(0, 40) + "\"");
    if (digits) since = std::stoull(v);
  }
  topic t;
  t.k = logs ? topic::kind::logs : topic::kind::events;
  t.session = session;
  t.step = step;
  t.name = "session/" + session + (logs ? "/logs" : "/events") + (step.empty() ? "" : "/" + step);
  auto last = bus->last_message(names.stream_ev(), names.journal(session));
  if (!last) return fail(errc_name(last.err().code), last.err().message);
  if (!last->has_value()) return fail("not_found", "session " + session + " not found");
  if (!streams.acquire(who.name))
    return fail("rate_limited", "\"" + who.name + "\" has " + std::to_string(streams.cap()) +
                                    " open streams already (gateway.max_streams_per_token)");
  reply r;
  r.takeover = [g = this, who, t, since, journal_last = (*last)->seq](
                   beast::tcp_stream&& s, beast::flat_buffer&&, std::shared_ptr<request>) {
    std::make_shared<sse_stream>(g, std::move(s), who, t, since, journal_last)->start();
  };
  return r;
}

}  // namespace berth::gateway
