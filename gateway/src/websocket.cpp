// WebSocket /v1/ws, subprotocol berth.v1.json: one JSON object per text frame. Client ops:
// auth, subscribe, unsubscribe, call, ping. Every delivered item carries its JetStream sequence;
// a bounded send buffer per connection turns a slow reader into explicit gaps (and, when it does
// not read at all, a close with 1013) without slowing anyone else.

#include "feed.hpp"
#include "hub.hpp"
#include "internal.hpp"
#include "write_behind.hpp"

#include "berth/base/log.hpp"

#include <boost/beast/websocket.hpp>

#include <mutex>
#include <set>
#include <vector>

namespace berth::gateway {

namespace websocket = beast::websocket;
using clock_type = std::chrono::steady_clock;

namespace {

std::shared_ptr<spdlog::logger> lg() {
  static auto l = log::get("gateway");
  return l;
}

// {"type": T, "id": ID, ...rest} with `rest` already JSON members (may be empty).
std::string frame(const char* type, const json::value* id, const std::string& rest) {
  std::string out = "{\"type\":\"";
  out += type;
  out += "\"";
  if (id && !id->is_null()) out += ",\"id\":" + id->dump();
  if (!rest.empty()) out += "," + rest;
  return out + "}";
}

std::string error_member(const std::string& code, const std::string& message) {
  json::value e = json::value::make_object();
  e.set("code", code);
  e.set("message", message);
  return "\"error\":" + e.dump();
}

class ws_session : public std::enable_shared_from_this<ws_session> {
  struct sub;
  using message_ptr = std::shared_ptr<const bus::message>;
  /// One message for subscription generation `gen`; `m` is null when the inbox was over its
  /// bound and dropped it (it becomes part of a gap).
  struct item {
    std::uint64_t gen;
    std::uint64_t seq;
    message_ptr m;
  };
  /// Where nats.c threads leave a connection's messages: one post to its strand per batch,
  /// not one per message. Bounded: a connection whose strand falls behind gets gaps, not an
  /// inbox that grows without end.
  struct inbox {
    std::mutex mu;
    std::vector<item> items;
    std::size_t bytes = 0;
    bool scheduled = false;
  };

 public:
  ws_session(server::impl* g, beast::tcp_stream&& s, std::shared_ptr<request> req,
             std::optional<principal> who)
      : ws_(std::move(s)),
        g_(g),
        req_(std::move(req)),
        who_(std::move(who)),
        timer_(ws_.get_executor()) {
    g_->connections++;
  }
  ~ws_session() {
    if (counted_) g_->streams.release(who_->name);
    for (auto& [_, s] : subs_) drop(s);
    g_->connections--;
  }

  void start() {
    out().keep_alive(weak_from_this());
    out().on_written([this](beast::error_code ec) { on_written(ec); });
    auto& lowest = beast::get_lowest_layer(ws_);
    lowest.expires_never();  // the websocket's own timeouts from here on
    websocket::stream_base::timeout t =
        websocket::stream_base::timeout::suggested(beast::role_type::server);
    t.idle_timeout = std::chrono::seconds(60);  // with keep-alive pings: a dead peer goes
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.read_message_max(g_->opts.max_frame_bytes);
    ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
      res.set(http::field::server, "berth");
      res.set(http::field::sec_websocket_protocol, "berth.v1.json");
    }));
    ws_.async_accept(*req_,
                     [self = shared_from_this()](beast::error_code ec) { self->on_accept(ec); });
  }

 private:
  void on_accept(beast::error_code ec) {
    if (ec) return;
    req_.reset();
    opened_ = clock_type::now();
    frame_at_ = opened_;
    if (who_) {
      if (!g_->streams.acquire(who_->name)) return over_cap();
      counted_ = true;
    }
    read();
    tick();
  }

  void over_cap() {
    send(frame("error", nullptr,
               error_member("rate_limited", "\"" + who_->name + "\" has " +
                                                std::to_string(g_->streams.cap()) +
                                                " open streams already (gateway."
                                                "max_streams_per_token)")));
    close(websocket::close_code::policy_error, "too many connections for this token");
  }

  void read() {
    ws_.async_read(
        in_, [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec) {
      // Too big (1009) and bad UTF-8 (1007) were answered by Beast with their close codes.
      closing_ = true;
      timer_.cancel();
      return;
    }
    if (!ws_.got_text()) {
      in_.consume(in_.size());
      return close(websocket::close_code::unknown_data,
                   "binary frames are not accepted: send JSON text");
    }
    // A flood of small frames costs the gateway too: 200 a second, bursts of 400.
    auto now = clock_type::now();
    frame_budget_ = std::min(
        400.0, frame_budget_ + 200.0 * std::chrono::duration<double>(now - frame_at_).count());
    frame_at_ = now;
    if (frame_budget_ < 1) return close(websocket::close_code::policy_error, "too many frames");
    frame_budget_ -= 1;
    auto text = beast::buffers_to_string(in_.data());
    in_.consume(in_.size());
    handle(text);
    if (!closing_) read();
  }

  void handle(const std::string& text) {
    auto v = json::parse(text);
    if (!v || !v->is_object())
      return send(frame("error", nullptr,
                        error_member("invalid_argument", v ? "frame: expected a JSON object"
                                                           : "frame: " + v.err().message)));
    const json::value* id = v->find("id");
    if (id && !id->is_string() && !id->is_int())
      return send(frame("error", nullptr,
                        error_member("invalid_argument", "id: expected a string or an integer")));
    if (id && id->is_string() && id->as_string().size() > 256)
      return send(frame("error", nullptr,
                        error_member("invalid_argument", "id: longer than 256 characters")));
    auto op = v->get_string("op");
    auto err = [&](const std::string& code, const std::string& message) {
      send(frame("error", id, error_member(code, message)));
    };
    if (op == "ping") return send(frame("pong", id, {}));
    if (op == "auth") return auth(*v, id);
    if (op != "subscribe" && op != "unsubscribe" && op != "call")
      return err("invalid_argument",
                 op.empty() ? std::string("op: is required (auth, subscribe, unsubscribe, call, "
                                          "ping)")
                            : "op: unknown \"" + op.substr(0, 64) +
                                  "\" (auth, subscribe, unsubscribe, call, ping)");
    if (!who_)
      return err("unauthorized",
                 "authenticate first: {\"op\":\"auth\",\"token\":\"berth_...\"} (or log in "
                 "through the console)");
    if (!g_->still_valid(*who_)) {
      // Revoked (berth token revoke, logout) or expired since the socket opened.
      err("unauthorized", "the credential of \"" + who_->name + "\" was revoked or expired");
      return close(websocket::close_code::policy_error, "credential revoked or expired");
    }
    if (op == "unsubscribe") return unsubscribe(*v, id);
    if (auto wait = g_->limiter.take(who_->name)) {
      auto secs = std::to_string((wait->count() + 999) / 1000);
      send(frame("error", id,
                 error_member("rate_limited", "\"" + who_->name +
                                                  "\" is over the gateway's request rate; retry "
                                                  "after " +
                                                  secs + " s") +
                     ",\"retry_after_ms\":" + std::to_string(wait->count())));
      return close(websocket::close_code::policy_error, "rate limited; retry after " + secs + " s");
    }
    if (op == "subscribe") return subscribe(*v, id);
    call(*v, id);
  }

  void auth(const json::value& v, const json::value* id) {
    if (who_) return send(frame("error", id, error_member("conflict", "already authenticated")));
    auto token = v.get_string("token");
    auto rec = g_->tokens.verify(token);
    if (!rec) {
      send(frame("error", id,
                 error_member("unauthorized",
                              "token: unknown or revoked (`berth token create "
                              "NAME` makes one)")));
      return close(websocket::close_code::policy_error, "authentication failed");
    }
    who_ = principal{rec->name, rec->scope, false, token};
    if (!g_->streams.acquire(who_->name)) return over_cap();
    counted_ = true;
    send(frame(
        "auth", id,
        "\"name\":" + json::quote(who_->name) + ",\"scope\":\"" + scope_name(who_->scope) + "\""));
  }

  void subscribe(const json::value& v, const json::value* id) {
    auto err = [&](const std::string& code, const std::string& message) {
      send(frame("error", id, error_member(code, message)));
    };
    const auto* tv = v.find("topic");
    if (!tv || !tv->is_string()) return err("invalid_argument", "topic: a string is required");
    std::uint64_t since = 0;
    if (const auto* s = v.find("since"); s && !s->is_null()) {
      if (!s->is_int() || s->as_int() < -1)
        return err("invalid_argument", "since: expected the last sequence seen (0: none)");
      since = s->as_int() < 0 ? 0 : static_cast<std::uint64_t>(s->as_int());
    }
    auto t = parse_topic(tv->as_string(), v.find("filter"));
    if (!t) return err(errc_name(t.err().code), t.err().message);
    auto it = subs_.find(t->name);
    if (it == subs_.end() && subs_.size() >= g_->opts.max_subscriptions)
      return err("too_large", "this connection follows " + std::to_string(subs_.size()) +
                                  " topics already (the limit); unsubscribe from one first");
    if (it != subs_.end()) drop(it->second);
    auto& s = subs_[t->name];
    s = sub{};
    s.t = *t;
    s.gen = next_gen_++;
    s.last = since;
    send(frame("subscribed", id,
               "\"topic\":" + json::quote(t->name) + ",\"since\":" + std::to_string(since)));
    std::weak_ptr<ws_session> weak = shared_from_this();
    auto exec = ws_.get_executor();
    asio::post(g_->api_pool, [g = g_, weak, exec, t = *t, gen = s.gen, since, sink = sink_of(s.gen),
                              id = id ? *id : json::value()]() {
      auto consumer = open_feed(*g, t, since, [sink](bus::message m) {
        sink(std::make_shared<const bus::message>(std::move(m)));
      });
      asio::post(exec, [weak, gen, name = t.name, id,
                        c = std::make_shared<decltype(consumer)>(std::move(consumer))]() mutable {
        auto self = weak.lock();
        if (!self) return;
        self->opened(gen, name, id, std::move(*c));
      });
    });
  }

  void opened(std::uint64_t gen, const std::string& name, const json::value& id,
              result<std::unique_ptr<bus::subscription>> consumer) {
    auto it = subs_.find(name);
    bool current = it != subs_.end() && it->second.gen == gen;
    if (!consumer) {
      if (current) subs_.erase(it);
      send(frame("error", &id,
                 "\"topic\":" + json::quote(name) + "," +
                     error_member(errc_name(consumer.err().code), consumer.err().message)));
      return;
    }
    if (!current || closing_) return close_feed(*g_, std::move(*consumer));
    it->second.consumer = std::move(*consumer);
  }

  void unsubscribe(const json::value& v, const json::value* id) {
    auto name = v.get_string("topic");
    auto it = subs_.find(name);
    if (it == subs_.end())
      return send(frame(
          "error", id,
          error_member("not_found", "topic: not subscribed to \"" + name.substr(0, 200) + "\"")));
    drop(it->second);
    subs_.erase(it);
    send(frame("unsubscribed", id, "\"topic\":" + json::quote(name)));
  }

  void call(const json::value& v, const json::value* id) {
    auto verb = v.get_string("verb");
    auto need = server::impl::scope_of(verb);
    if (!need)
      return send(
          frame("reply", id,
                error_member("not_found", "verb: unknown \"" + verb.substr(0, 64) +
                                              "\" (session.start, session.get, session.list, "
                                              "session.cancel, session.input, session.retry, "
                                              "session.diff, stats, node.list)")));
    if (!who_->may(*need))
      return send(frame("reply", id,
                        error_member("permission_denied",
                                     "\"" + who_->name + "\" has scope " + scope_name(who_->scope) +
                                         "; " + verb + " needs " + scope_name(*need))));
    json::value args = json::value::make_object();
    if (const auto* a = v.find("args"); a && !a->is_null()) {
      if (!a->is_object())
        return send(
            frame("reply", id, error_member("invalid_argument", "args: expected an object")));
      args = *a;
    }
    std::weak_ptr<ws_session> weak = shared_from_this();
    auto exec = ws_.get_executor();
    asio::post(g_->api_pool, [g = g_, weak, exec, verb, args = std::move(args), who = *who_,
                              id = id ? *id : json::value()]() mutable {
      auto out = g->api_json(verb, std::move(args), who);
      asio::post(exec, [weak, id, out = std::move(out)] {
        auto self = weak.lock();
        if (!self) return;
        bool failed = out.rfind("{\"error\":", 0) == 0;
        std::string rest = failed ? out.substr(1, out.size() - 2) : "\"result\":" + out;
        self->send(frame("reply", &id, rest));
      });
    });
  }

  // What a subscription's consumer (or its place in a shared feed) hands each message to, on a
  // nats.c or pool thread: the connection's inbox. It must not keep the connection alive.
  std::function<void(const message_ptr&)> sink_of(std::uint64_t gen) {
    return [weak = weak_from_this(), box = box_, exec = ws_.get_executor(), gate = g_->gate,
            bound = 2 * g_->opts.max_buffered_bytes, gen](const message_ptr& m) {
      if (weak.expired()) return;
      std::lock_guard lock(box->mu);
      bool keep = box->bytes + m->data.size() <= bound;
      box->items.push_back(item{gen, m->seq, keep ? m : nullptr});
      if (keep) box->bytes += m->data.size();
      if (box->scheduled) return;
      box->scheduled = true;
      gate->post(exec, [weak] {
        if (auto self = weak.lock()) self->drain();
      });
    };
  }

  // On the strand: everything the inbox holds, in order.
  void drain() {
    std::vector<item> items;
    {
      std::lock_guard lock(box_->mu);
      items.swap(box_->items);
      box_->bytes = 0;
      box_->scheduled = false;
    }
    for (const auto& i : items) deliver(i.gen, i.seq, i.m.get());
  }

  // A message (null: dropped on the way) of subscription generation `gen`.
  void deliver(std::uint64_t gen, std::uint64_t seq, const bus::message* mp) {
    if (closing_) return;
    auto it = subs_.begin();
    while (it != subs_.end() && it->second.gen != gen) ++it;
    if (it == subs_.end()) return;
    const auto& name = it->first;
    auto& s = it->second;
    if (seq != 0 && seq <= s.last) return;  // already delivered (a consumer reset)
    s.last = seq;
    // Behind already: into the gap, without the cost of formatting what is not sent.
    if (!mp || s.gap || out().buffered() + mp->data.size() > g_->opts.max_buffered_bytes)
      return into_gap(s, seq);
    const auto& m = *mp;
    std::string data;
    if (s.t.k == topic::kind::sessions) {
      auto sid = std::string(bus::subjects::last_token(m.subject));
      if (!passes(s.t, m)) {
        // Out of this view: a client that was shown the session learns it left.
        if (!s.shown.erase(sid)) return;
        data = "{\"id\":" + json::quote(sid) + ",\"removed\":true}";
      } else {
        s.shown.insert(sid);
        data = item_data(s.t, m);
      }
    } else {
      data = item_data(s.t, m);
    }
    std::string f = "{\"type\":\"";
    f += s.t.item_type();
    f += "\",\"topic\":" + json::quote(name) + ",\"seq\":" + std::to_string(m.seq) +
         ",\"data\":" + data + "}";
    if (out().buffered() + f.size() > g_->opts.max_buffered_bytes) return into_gap(s, m.seq);
    send(f);
    // The backlog that existed at subscribe time is delivered: clients render once, not per item.
    bool drained = s.hub_token == 0 && pending_after(m) == std::uint64_t{0};
    if (!s.caught_up && drained) {
      s.caught_up = true;
      send("{\"type\":\"caught_up\",\"topic\":" + json::quote(name) +
           ",\"seq\":" + std::to_string(m.seq) + "}");
    }
    if (drained && !s.joining && clock_type::now() - s.join_tried > std::chrono::seconds(1))
      join_shared(name, s, m.seq);
  }

  // Past the send buffer's bound: drop the item and say so once the reader catches up.
  static void into_gap(sub& s, std::uint64_t seq) {
    if (!s.gap) s.gap = std::make_pair(seq, seq);
    s.gap->second = seq;
  }

  // Move a subscription that has caught up onto the topic's shared feed (hub.hpp).
  void join_shared(const std::string& name, sub& s, std::uint64_t after) {
    s.joining = true;
    s.join_tried = clock_type::now();
    std::weak_ptr<ws_session> weak = shared_from_this();
    auto exec = ws_.get_executor();
    auto gate = g_->gate;
    asio::post(g_->api_pool, [g = g_, weak, exec, gate, t = s.t, gen = s.gen, name, after,
                              sink = sink_of(s.gen)] {
      auto token = g->shared_feeds->join(t, after, sink);
      gate->post(exec, [weak, g, t, gen, name, token] {
        auto self = weak.lock();
        if (!self) {
          if (token) g->shared_feeds->leave(t, *token);
          return;
        }
        self->joined(gen, name, token);
      });
    });
  }

  void joined(std::uint64_t gen, const std::string& name, std::optional<std::uint64_t> token) {
    auto it = subs_.find(name);
    bool current = it != subs_.end() && it->second.gen == gen && !closing_;
    if (!current) {
      if (token) g_->shared_feeds->leave(topic_of(name, it), *token);
      return;
    }
    auto& s = it->second;
    s.joining = false;
    if (!token) return;  // the feed no longer holds what came after us: try again later
    s.hub_token = *token;
    close_feed(*g_, std::move(s.consumer));
  }

  topic topic_of(const std::string& name, std::map<std::string, sub>::iterator it) {
    if (it != subs_.end()) return it->second.t;
    auto t = parse_topic(name, nullptr);
    return t ? *t : topic{};
  }

  // Let go of a subscription's consumer or its place in a shared feed.
  void drop(sub& s) {
    if (s.hub_token) g_->shared_feeds->leave(s.t, s.hub_token);
    s.hub_token = 0;
    close_feed(*g_, std::move(s.consumer));
  }

  write_behind& out() { return ws_.next_layer(); }

  // Frames go out through the write-behind layer (write_behind.hpp): the first at once, those
  // queued while a write is on the wire together in the next.
  void send(const std::string& f) {
    if (closing_) return;
    out().text_frame(f);
    out().kick();
  }

  void on_written(beast::error_code ec) {
    if (ec) {
      closing_ = true;
      timer_.cancel();
      return;
    }
    if (out().buffered() < g_->opts.max_buffered_bytes / 2) flush_gaps();
  }

  // The reader caught up: each subscription that dropped items says which, then goes on live.
  void flush_gaps() {
    for (auto& [name, s] : subs_) {
      if (!s.gap) continue;
      auto f = "{\"type\":\"gap\",\"topic\":" + json::quote(name) +
               ",\"from\":" + std::to_string(s.gap->first) +
               ",\"to\":" + std::to_string(s.gap->second) + "}";
      s.gap.reset();
      out().text_frame(f);
    }
  }

  // Once a second: the auth deadline, and a reader that stopped reading.
  void tick() {
    timer_.expires_after(std::chrono::seconds(1));
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closing_) return;
      auto now = clock_type::now();
      if (!self->who_ && now - self->opened_ > self->g_->opts.auth_timeout)
        return self->close(websocket::close_code::policy_error,
                           "no auth frame within " +
                               std::to_string(self->g_->opts.auth_timeout.count() / 1000) + " s");
      if (self->out().writing() && now - self->out().progress() > self->g_->opts.stall_timeout)
        return self->close(websocket::close_code::try_again_later,
                           "the client does not read; reconnect and resume with since");
      self->tick();
    });
  }

  void close(websocket::close_code code, const std::string& why) {
    if (closing_) return;
    bool stalled = out().writing();
    closing_ = true;
    timer_.cancel();
    for (auto& [_, s] : subs_) drop(s);
    subs_.clear();
    lg()->debug("websocket closed ({}): {}", static_cast<int>(code), why);
    websocket::close_reason r(code, why.substr(0, 120));
    ws_.async_close(r, [self = shared_from_this()](beast::error_code) {});
    // A close frame queued behind a write the peer never reads would wait for ever.
    auto fuse = std::make_shared<asio::steady_timer>(ws_.get_executor());
    fuse->expires_after(stalled ? std::chrono::seconds(1) : std::chrono::seconds(5));
    fuse->async_wait([self = shared_from_this(), fuse](beast::error_code) {
      beast::error_code ignored;
      beast::get_lowest_layer(self->ws_).socket().close(ignored);
    });
  }

  struct sub {
    topic t;
    std::uint64_t gen = 0;
    std::uint64_t last = 0;  ///< the last sequence delivered (or dropped into a gap)
    std::optional<std::pair<std::uint64_t, std::uint64_t>> gap;
    std::unique_ptr<bus::subscription> consumer;
    std::set<std::string> shown;  ///< sessions topic: ids the client was given
    bool caught_up = false;       ///< said "caught_up" (the backlog is delivered)
    std::uint64_t hub_token = 0;  ///< on the topic's shared feed (its own consumer dropped)
    bool joining = false;
    clock_type::time_point join_tried{};
  };

  websocket::stream<write_behind> ws_;
  server::impl* g_;
  std::shared_ptr<request> req_;
  std::optional<principal> who_;
  bool counted_ = false;
  beast::flat_buffer in_;
  std::shared_ptr<inbox> box_ = std::make_shared<inbox>();
  bool closing_ = false;
  asio::steady_timer timer_;
  clock_type::time_point opened_, frame_at_;
  double frame_budget_ = 400;
  std::map<std::string, sub> subs_;
  std::uint64_t next_gen_ = 1;
};

}  // namespace

void run_websocket(server::impl* g, beast::tcp_stream&& s, std::shared_ptr<request> req,
                   std::optional<principal> who) {
  std::make_shared<ws_session>(g, std::move(s), std::move(req), std::move(who))->start();
}

}  // namespace berth::gateway
