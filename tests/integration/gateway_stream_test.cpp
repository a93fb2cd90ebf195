// The gateway's live side against a real node: Server-Sent Events with Last-Event-ID, the
// WebSocket protocol (every verb through `call`, subscriptions resumed with `since`), gaps for
// slow readers, limits per token, the console's login, and resuming across a gateway restart,
// a node kill -9 and a second gateway.

#include "gateway_fixture.hpp"

#include "berth/base/process.hpp"
#include "berth/bus/client.hpp"
#include "berth/bus/subjects.hpp"

#include <fcntl.h>
#include <sys/wait.h>

#include <csignal>
#include <set>

using namespace berth;
using test::gateway_fixture;
using test::http;
using test::ws_client;

namespace {

const char* two_steps =
    R"({"steps":[{"id":"a","run":["sh","-c","echo hello from a"]},)"
    R"({"id":"b","needs":["a"],"run":["sh","-c","printf '\u001b[32mgreen\u001b[0m\n'"]}]})";
const char* hold = R"({"steps":[{"id":"hold","run":["sleep","120"]}]})";

bool terminal(const std::string& type) {
  return type == "session.succeeded" || type == "session.failed" || type == "session.cancelled" ||
         type == "session.timed_out";
}

// A spec of `n` steps in a row, each sleeping `seconds`.
std::string chain(int n, const std::string& seconds) {
  std::string spec = R"({"steps":[)";
  for (int i = 0; i < n; ++i)
    spec += std::string(i ? "," : "") + R"({"id":"s)" + std::to_string(i) + "\"" +
            (i ? R"(,"needs":["s)" + std::to_string(i - 1) + "\"]" : "") + R"(,"run":["sleep",")" +
            seconds + "\"]}";
  return spec + "]}";
}

json::value op(const std::string& text) {
  return *json::parse(text);
}

// Items of one topic read off a WebSocket until `done` says stop (or a timeout).
std::vector<json::value> collect(ws_client& c, const std::string& topic,
                                 const std::function<bool(const json::value&)>& done,
                                 std::chrono::seconds timeout = std::chrono::seconds(60)) {
  std::vector<json::value> out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = c.read(std::chrono::seconds(5));
    if (!m) {
      if (c.closed()) break;
      continue;
    }
    auto v = json::parse(*m);
    if (!v || v->get_string("topic") != topic) continue;
    auto type = v->get_string("type");
    if (type == "error") ADD_FAILURE() << *m;
    if (type != "event" && type != "log" && type != "session" && type != "gap") continue;
    out.push_back(*v);
    if (done(*v)) break;
  }
  return out;
}

bool ends(const json::value& item) {
  const auto* d = item.find("data");
  return item.get_string("type") == "event" && d && terminal(d->get_string("type"));
}

// The reply to a call with id `id`.
std::optional<json::value> call(ws_client& c, const std::string& id, const std::string& verb,
                                const json::value& args) {
  json::value o = json::value::make_object();
  o.set("op", "call");
  o.set("id", id);
  o.set("verb", verb);
  o.set("args", args);
  c.send(o);
  for (int i = 0; i < 200; ++i) {
    auto r = c.expect("reply");
    if (!r) return std::nullopt;
    if (r->get_string("id") == id) return r;
  }
  return std::nullopt;
}

json::value with_id(const std::string& id) {
  json::value v = json::value::make_object();
  v.set("id", id);
  return v;
}

std::vector<std::uint64_t> seqs(const std::vector<json::value>& items) {
  std::vector<std::uint64_t> out;
  for (const auto& i : items) out.push_back(static_cast<std::uint64_t>(i.get_int("seq")));
  return out;
}

}  // namespace

TEST_F(gateway_fixture, sse_streams_events_and_logs_and_resumes_from_last_event_id) {
  auto w = token("w", "write");
  auto r = token("r", "read");
  auto id = start(w, two_steps);
  ASSERT_FALSE(id.empty());
  int status = 0;
  auto all = test::sse(url, "/v1/sessions/" + id + "/events", "Bearer " + r, "-", 90, &status);
  EXPECT_EQ(status, 200);
  ASSERT_GE(all.size(), 4u);
  EXPECT_EQ(all.back().event, "end");
  all.pop_back();
  auto last = json::parse(all.back().data);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->get_string("type"), "session.succeeded");
  for (std::size_t i = 1; i < all.size(); ++i)
    EXPECT_LT(std::stoull(all[i - 1].id), std::stoull(all[i].id));
  EXPECT_EQ(all.size(), test::journal(*node, id).size());

  // Resume from the middle: exactly what came after it.
  auto mid = all.size() / 2;
  auto rest = test::sse(url, "/v1/sessions/" + id + "/events", "Bearer " + r, all[mid].id, 60);
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.back().event, "end");
  rest.pop_back();
  ASSERT_EQ(rest.size(), all.size() - mid - 1);
  for (std::size_t i = 0; i < rest.size(); ++i) EXPECT_EQ(rest[i].id, all[mid + 1 + i].id);
  // -1: from the start.
  auto again = test::sse(url, "/v1/sessions/" + id + "/events", "Bearer " + r, "-1", 60);
  EXPECT_EQ(again.size(), all.size() + 1);

  // Logs, every step and one step; ANSI colours arrive as they were written.
  auto logs = test::sse(url, "/v1/sessions/" + id + "/logs", "Bearer " + r, "-", 60);
  ASSERT_FALSE(logs.empty());
  EXPECT_EQ(logs.back().event, "end");
  std::string text;
  for (const auto& e : logs)
    if (auto v = json::parse(e.data); v && e.event == "message") text += v->get_string("text");
  EXPECT_NE(text.find("hello from a"), std::string::npos) << text;
  EXPECT_NE(text.find("\033[32mgreen"), std::string::npos) << text;
  auto only_b = test::sse(url, "/v1/sessions/" + id + "/logs?step=b", "Bearer " + r, "-", 60);
  for (const auto& e : only_b)
    if (e.event == "message") {
      EXPECT_EQ(json::parse(e.data)->get_string("step"), "b");
    }

  // Refusals.
  test::sse(url, "/v1/sessions/nope/events", "Bearer " + r, "-", 10, &status);
  EXPECT_EQ(status, 404);
  test::sse(url, "/v1/sessions/" + id + "/events", "Bearer " + r, "x1", 10, &status);
  EXPECT_EQ(status, 400);
  test::sse(url, "/v1/sessions/" + id + "/events", "-", "-", 10, &status);
  EXPECT_EQ(status, 401);
  test::sse(url, "/v1/sessions/" + id + "/logs?step=../x", "Bearer " + r, "-", 10, &status);
  EXPECT_EQ(status, 400);
}

TEST_F(gateway_fixture, websocket_calls_every_verb_journals_the_caller_and_resumes_with_since) {
  auto w = token("writer", "write");
  auto c = ws(w);
  EXPECT_EQ(c->protocol(), "berth.v1.json");
  auto watcher = ws(w);  // the sessions topic, on a connection of its own
  watcher->send(op(R"({"op":"subscribe","id":1,"topic":"sessions","since":0})"));
  auto sub = watcher->expect("subscribed");
  ASSERT_TRUE(sub);
  EXPECT_EQ(sub->get_int("id"), 1);

  json::value spec_args = json::value::make_object();
  spec_args.set("spec", *json::parse(hold));
  auto started = call(*c, "s1", "session.start", spec_args);
  ASSERT_TRUE(started && started->find("result")) << (started ? started->dump() : "none");
  auto id = started->find("result")->get_string("id");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(
      test::eventually([&] { return test::session_field(*node, id, "status") == "running"; }));

  auto got = call(*c, "g", "session.get", with_id(id));
  ASSERT_TRUE(got && got->find("result")) << got->dump();
  EXPECT_EQ(got->find("result")->get_string("status"), "running");
  auto listed = call(*c, "l", "session.list", json::value::make_object());
  ASSERT_TRUE(listed && listed->find("result"));
  EXPECT_NE(listed->dump().find(id), std::string::npos);
  auto stats = call(*c, "st", "stats", json::value::make_object());
  ASSERT_TRUE(stats && stats->find("result"));
  auto diff = call(*c, "d", "session.diff", with_id(id));
  ASSERT_TRUE(diff && diff->find("result")) << diff->dump();
  EXPECT_FALSE(diff->find("result")->get_bool("checkpoint"));
  auto in_args = with_id(id);
  in_args.set("data", *json::parse(R"({"note":"hi"})"));
  auto input = call(*c, "i", "session.input", in_args);
  ASSERT_TRUE(input && input->find("result")) << input->dump();
  EXPECT_EQ(input->find("result")->get_string("status"), "accepted");
  // A client cannot claim to be someone else: the gateway sets the caller.
  auto cancel_args = with_id(id);
  cancel_args.set("caller", "mallory");
  auto cancelled = call(*c, "c", "session.cancel", cancel_args);
  ASSERT_TRUE(cancelled && cancelled->find("result")) << cancelled->dump();
  auto unknown = call(*c, "u", "session.explode", with_id(id));
  ASSERT_TRUE(unknown && unknown->find("error"));
  EXPECT_EQ(unknown->find("error")->get_string("code"), "not_found");

  // The journal, subscribed from the start, ends cancelled; the caller is the token's name.
  c->send(op(R"({"op":"subscribe","topic":"session/)" + id + R"(/events","since":0})"));
  auto events = collect(*c, "session/" + id + "/events", ends);
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(ends(events.back())) << events.back().dump();
  int callers = 0;
  for (const auto& e : events) {
    const auto& d = *e.find("data");
    auto type = d.get_string("type");
    if (type == "session.accepted" || type == "input.applied") {
      EXPECT_EQ(d.find("data")->get_string("caller"), "writer") << d.dump();
      callers++;
    }
  }
  EXPECT_GE(callers, 3);  // accepted, the input, the cancel
  auto retried = call(*c, "r", "session.retry", with_id(id));
  ASSERT_TRUE(retried && retried->find("result")) << retried->dump();
  auto again_id = retried->find("result")->get_string("id");
  EXPECT_NE(again_id, id);
  ASSERT_TRUE(call(*c, "c2", "session.cancel", with_id(again_id)));

  // The sessions topic saw the session live, ending cancelled.
  std::string seen;
  ASSERT_TRUE(test::eventually(
      [&] {
        while (auto m = watcher->read(std::chrono::milliseconds(200))) {
          auto v = json::parse(*m);
          if (v && v->get_string("type") == "session" && v->find("data")->get_string("id") == id)
            seen = v->find("data")->get_string("status");
        }
        return seen == "cancelled";
      },
      std::chrono::seconds(30)))
      << seen;

  // A new connection resumes after any sequence: exactly the rest, no gap, no duplicate.
  auto all = seqs(events);
  auto mid = all[all.size() / 2];
  auto d2 = ws(w);
  d2->send(op(R"({"op":"subscribe","topic":"session/)" + id + R"(/events","since":)" +
              std::to_string(mid) + "}"));
  auto rest = seqs(collect(*d2, "session/" + id + "/events", ends));
  std::vector<std::uint64_t> want(std::upper_bound(all.begin(), all.end(), mid), all.end());
  EXPECT_EQ(rest, want);
  // A subscription says when its backlog is delivered.
  auto d3 = ws(w);
  d3->send(op(R"({"op":"subscribe","topic":"session/)" + id + R"(/events","since":0})"));
  auto caught = d3->expect("caught_up");
  ASSERT_TRUE(caught);
  EXPECT_EQ(static_cast<std::uint64_t>(caught->get_int("seq")), all.back());
  // session.list carries the bucket's revision: following `sessions` after it gives only what
  // changed since.
  auto listed_now = call(*d3, "lr", "session.list", json::value::make_object());
  ASSERT_TRUE(listed_now && listed_now->find("result"));
  auto revision = listed_now->find("result")->get_int("revision");
  EXPECT_GT(revision, 0);
  d3->send(op(R"({"op":"subscribe","topic":"sessions","since":)" + std::to_string(revision) + "}"));
  ASSERT_TRUE(d3->expect("subscribed"));
  auto later = call(*d3, "s3", "session.start", spec_args);
  ASSERT_TRUE(later && later->find("result"));
  auto later_id = later->find("result")->get_string("id");
  auto changes = collect(*d3, "sessions", [&](const json::value& v) {
    return v.find("data")->get_string("id") == later_id;
  });
  ASSERT_FALSE(changes.empty());
  for (const auto& ch : changes) {
    EXPECT_GT(ch.get_int("seq"), revision);
    EXPECT_NE(ch.find("data")->get_string("id"), id) << "an old session came again";
  }
  ASSERT_TRUE(call(*d3, "c3", "session.cancel", with_id(later_id)));
  // Unsubscribe stops the topic.
  d2->send(op(R"({"op":"unsubscribe","id":"x","topic":"session/)" + id + R"(/events"})"));
  EXPECT_TRUE(d2->expect("unsubscribed"));

  // A read token may watch but not act.
  auto reader = ws(token("reader", "read"));
  auto denied = call(*reader, "no", "session.cancel", with_id(again_id));
  ASSERT_TRUE(denied && denied->find("error"));
  EXPECT_EQ(denied->find("error")->get_string("code"), "permission_denied");
}

TEST_F(gateway_fixture, hostile_websockets_get_their_exact_close_and_touch_nothing) {
  auto w = token("w", "write");
  auto id = start(w, hold);
  ASSERT_TRUE(
      test::eventually([&] { return test::session_field(*node, id, "status") == "running"; }));
  // Origins, exactly: null, another site, suffix and prefix tricks.
  for (const std::string& origin :
       {std::string("null"), std::string("http://evil.test"), url + ".evil.test",
        "http://evil.test/" + url, url + "/", "https" + url.substr(4)}) {
    ws_client::options o;
    o.headers["Origin"] = origin;
    auto c = ws_client::open(url, "/v1/ws", o);
    EXPECT_FALSE(c->connected()) << origin;
    EXPECT_EQ(c->status(), 403) << origin;
  }
  ws_client::options own;
  own.headers["Origin"] = url;
  EXPECT_TRUE(ws_client::open(url, "/v1/ws", own)->connected());
  // Without the subprotocol, with a token in the query.
  ws_client::options none;
  none.subprotocol = "";
  EXPECT_EQ(ws_client::open(url, "/v1/ws", none)->status(), 400);
  EXPECT_EQ(ws_client::open(url, "/v1/ws?token=" + w, ws_client::options{})->status(), 400);
  EXPECT_EQ(node->log().find(w), std::string::npos);

  // No auth: pings work, anything else is refused, and after 5 s the socket is closed (1008).
  {
    auto c = ws_client::open(url);
    c->send(R"({"op":"ping","id":7})");
    auto pong = c->expect("pong");
    ASSERT_TRUE(pong);
    EXPECT_EQ(pong->get_int("id"), 7);
    c->send(R"({"op":"subscribe","topic":"sessions"})");
    auto e = c->expect("error");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->find("error")->get_string("code"), "unauthorized");
    EXPECT_FALSE(c->read(std::chrono::seconds(10)));
    EXPECT_TRUE(c->closed());
    EXPECT_EQ(c->close_code(), 1008);
  }
  // A wrong token, a revoked one.
  auto gone = token("gone", "write");
  ASSERT_EQ(test::cli(*node, {"token", "revoke", "gone"}).code, 0);
  for (const auto& t : {std::string("berth_") + std::string(43, 'x'), gone}) {
    auto c = ws_client::open(url);
    c->send(R"({"op":"auth","token":")" + t + R"("})");
    EXPECT_TRUE(c->expect("error"));
    EXPECT_FALSE(c->read(std::chrono::seconds(5)));
    EXPECT_EQ(c->close_code(), 1008);
  }
  // A token revoked while its socket is open: the next op is refused and the socket closed.
  {
    auto soon = token("soon", "write");
    auto c = ws(soon);
    ASSERT_EQ(test::cli(*node, {"token", "revoke", "soon"}).code, 0);
    c->send(R"({"op":"call","id":"x","verb":"stats"})");
    auto e = c->expect("error");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->find("error")->get_string("code"), "unauthorized");
    EXPECT_FALSE(c->read(std::chrono::seconds(5)));
    EXPECT_EQ(c->close_code(), 1008);
  }
  // Bad frames that keep the connection: invalid JSON, unknown ops, a bad topic, a fragment
  // flood of one message in 20,000 frames.
  {
    auto c = ws(w);
    c->send("{not json");
    auto e = c->expect("error");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->find("error")->get_string("code"), "invalid_argument");
    c->send(R"({"op":"explode"})");
    e = c->expect("error");
    ASSERT_TRUE(e);
    EXPECT_NE(e->find("error")->get_string("message").find("explode"), std::string::npos);
    c->send(R"({"op":"subscribe","topic":"session/a.b/events"})");
    e = c->expect("error");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->find("error")->get_string("code"), "invalid_argument");
    c->send(R"({"op":"subscribe","topic":"session/)" + id + R"(/../../x"})");
    EXPECT_TRUE(c->expect("error"));
    c->send_fragmented(R"({"op":"ping","id":"f","pad":")" + std::string(200'000, 'p') + "\"}", 10);
    auto pong = c->expect("pong");
    ASSERT_TRUE(pong);
    EXPECT_EQ(pong->get_string("id"), "f");
  }
  // Bad frames that close it: over 1 MiB (1009), invalid UTF-8 (1007), binary (1003).
  {
    auto c = ws(w);
    c->send(R"({"op":"ping","pad":")" + std::string((1 << 20) + 10, 'x') + "\"}");
    EXPECT_FALSE(c->read(std::chrono::seconds(10)));
    EXPECT_EQ(c->close_code(), 1009);
  }
  {
    auto c = ws(w);
    c->send(std::string("{\"op\":\"ping\",\"id\":\"\xff\xfe\"}"));
    EXPECT_FALSE(c->read(std::chrono::seconds(10)));
    EXPECT_EQ(c->close_code(), 1007);
  }
  {
    auto c = ws(w);
    c->send_binary("{\"op\":\"ping\"}");
    EXPECT_FALSE(c->read(std::chrono::seconds(10)));
    EXPECT_EQ(c->close_code(), 1003);
  }
  // The node is healthy and the session untouched.
  EXPECT_EQ(test::session_field(*node, id, "status"), "running");
  EXPECT_EQ(http(url, "GET", "/readyz").status, 200);
}

namespace {
struct limited_gateway : gateway_fixture {
  void SetUp() override {
    node_env = {{"BERTH_GATEWAY_RATE_LIMIT", "2"}, {"BERTH_GATEWAY_RATE_BURST", "5"}};
    gateway_fixture::SetUp();
  }
};
}  // namespace

TEST_F(limited_gateway, one_token_is_held_to_its_connection_cap_and_request_rate) {
  // 1,000 sockets from one token: the first 100 (gateway.max_streams_per_token) authenticate,
  // the rest are refused with 1008.
  auto w = token("many", "read");
  std::vector<std::unique_ptr<ws_client>> socks;
  int accepted = 0, refused = 0;
  for (int i = 0; i < 1000; ++i) {
    auto c = ws_client::open(url);
    ASSERT_TRUE(c->connected()) << i;
    c->send(R"({"op":"auth","token":")" + w + R"("})");
    auto m = c->read();
    ASSERT_TRUE(m) << i;
    auto v = json::parse(*m);
    if (v->get_string("type") == "auth") {
      accepted++;
    } else {
      EXPECT_EQ(v->find("error")->get_string("code"), "rate_limited") << *m;
      EXPECT_FALSE(c->read(std::chrono::seconds(5)));
      EXPECT_EQ(c->close_code(), 1008);
      refused++;
    }
    socks.push_back(std::move(c));
  }
  EXPECT_EQ(accepted, 100);
  EXPECT_EQ(refused, 900);
  // Another token is not affected.
  auto other = token("other", "read");
  EXPECT_TRUE(ws(other)->connected());
  socks.clear();

  // The request rate: bursts of 5, then 2 a second; past it 429 with Retry-After. (30 requests
  // back to back take far less than the 12 s that would refill the bucket 25 times.)
  std::string retry_after;
  auto statuses = test::http_burst(url, "/v1/stats", bearer(other), 30, &retry_after);
  ASSERT_EQ(statuses.size(), 30u);
  auto ok = std::count(statuses.begin(), statuses.end(), 200);
  auto limited = std::count(statuses.begin(), statuses.end(), 429);
  EXPECT_EQ(ok + limited, 30);
  EXPECT_GE(ok, 5);
  EXPECT_GE(limited, 1);
  EXPECT_EQ(statuses[0], 200);
  EXPECT_FALSE(retry_after.empty());
  // Over the rate on a WebSocket: an error naming the wait, then close 1008.
  auto c = ws(token("fast", "read"));
  for (int i = 0; i < 10 && !c->closed(); ++i)
    c->send(R"({"op":"call","id":)" + std::to_string(i) + R"(,"verb":"stats"})");
  bool saw_limit = false;
  while (auto m = c->read(std::chrono::seconds(5)))
    if (m->find("rate_limited") != std::string::npos) saw_limit = true;
  EXPECT_TRUE(saw_limit);
  EXPECT_EQ(c->close_code(), 1008);
}

namespace {
struct small_buffers : gateway_fixture {
  void SetUp() override {
    node_env = {{"BERTH_GATEWAY_MAX_BUFFERED_BYTES", "65536"},
                {"BERTH_GATEWAY_STALL_TIMEOUT", "3s"}};
    gateway_fixture::SetUp();
  }
};
}  // namespace

TEST_F(small_buffers, a_slow_reader_gets_gaps_it_can_refill_and_one_that_never_reads_is_closed) {
  auto w = token("w", "write");
  auto id = start(w, hold);
  ASSERT_TRUE(
      test::eventually([&] { return test::session_field(*node, id, "status") == "running"; }));
  auto topic = "session/" + id + "/logs/flood";
  auto slow = ws(w);
  slow->send(op(R"({"op":"subscribe","topic":")" + topic + R"("})"));
  ASSERT_TRUE(slow->expect("subscribed"));
  // A small receive window, so that the reader's own kernel takes little of what it never reads.
  test::ws_client::options small;
  small.receive_buffer = 8192;
  auto never = ws(w, small);
  never->send(op(R"({"op":"subscribe","topic":")" + topic + R"("})"));
  ASSERT_TRUE(never->expect("subscribed"));

  // 12 MB of output on one step, straight into the log stream.
  bus::client::options o;
  o.servers = {
      json::parse(*fs::read_file(node->data_dir() + "/node.json"))->get_string("nats_url")};
  auto bus = bus::client::connect(o);
  ASSERT_TRUE(bus.ok());
  bus::subjects names;
  std::set<std::uint64_t> published;
  std::string chunk(4096, 'z');
  for (int i = 0; i < 3000; ++i) {
    auto ack = (*bus)->publish(names.log(id, "flood"), std::to_string(i) + ":" + chunk);
    ASSERT_TRUE(ack.ok());
    published.insert(ack->seq);
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));

  // The slow reader reads now: items and gaps together account for every chunk, in order.
  std::set<std::uint64_t> covered;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> gaps;
  std::uint64_t prev = 0;
  while (covered.size() < published.size()) {
    auto m = slow->read(std::chrono::seconds(10));
    ASSERT_TRUE(m) << "stalled with " << covered.size() << " of " << published.size();
    auto v = json::parse(*m);
    ASSERT_TRUE(v);
    std::uint64_t from = 0, to = 0;
    if (v->get_string("type") == "gap") {
      from = static_cast<std::uint64_t>(v->get_int("from"));
      to = static_cast<std::uint64_t>(v->get_int("to"));
      gaps.emplace_back(from, to);
    } else if (v->get_string("type") == "log") {
      from = to = static_cast<std::uint64_t>(v->get_int("seq"));
    } else {
      continue;
    }
    EXPECT_GT(from, prev);
    prev = to;
    for (auto s : published)
      if (s >= from && s <= to) covered.insert(s);
  }
  ASSERT_FALSE(gaps.empty()) << "the reader was never behind";
  // Refill the first gap by re-subscribing with since: exactly what it missed comes.
  auto [gfrom, gto] = gaps.front();
  slow->send(op(R"({"op":"subscribe","topic":")" + topic + R"(","since":)" +
                std::to_string(gfrom - 1) + "}"));
  std::set<std::uint64_t> refilled;
  while (refilled.size() <
         static_cast<std::size_t>(std::count_if(published.begin(), published.end(),
                                                [&](auto s) { return s >= gfrom && s <= gto; }))) {
    auto m = slow->read(std::chrono::seconds(10));
    ASSERT_TRUE(m);
    auto v = json::parse(*m);
    if (v->get_string("type") == "gap") {
      // Behind again while refilling: those come once more below.
      for (auto s = static_cast<std::uint64_t>(v->get_int("from"));
           s <= static_cast<std::uint64_t>(v->get_int("to")) && s <= gto; ++s)
        refilled.insert(s);
      continue;
    }
    if (v->get_string("type") != "log") continue;
    auto s = static_cast<std::uint64_t>(v->get_int("seq"));
    if (s >= gfrom && s <= gto) refilled.insert(s);
  }

  // A client that never reads got gaps, never unbounded memory: its backlog is its kernel
  // buffers and 64 KiB. Output that keeps coming while it does not read stalls the gateway's
  // write to it; past stall_timeout (3 s here) it is closed (1013 when the close frame still gets
  // through, else cut off).
  slow->send(op(R"({"op":"unsubscribe","topic":")" + topic + R"("})"));
  // The kernels take a few MB first (loopback's send buffer grows to several), so: 16 MB, then
  // six seconds more (past stall_timeout and the gateway's once-a-second check), however slowly
  // a busy machine publishes.
  std::string big(16 << 10, 'y');
  std::size_t flooded = 0;
  auto flood_until = std::chrono::steady_clock::now() + std::chrono::seconds(6);
  while (flooded < (16u << 20) || std::chrono::steady_clock::now() < flood_until) {
    ASSERT_TRUE((*bus)->publish(names.log(id, "flood"), big).ok());
    flooded += big.size();
    if (flooded < (16u << 20))
      flood_until = std::chrono::steady_clock::now() + std::chrono::seconds(6);
  }
  int gaps_seen = 0;
  while (auto m = never->read(std::chrono::seconds(5)))
    if (m->find("\"type\":\"gap\"") != std::string::npos) gaps_seen++;
  EXPECT_GE(gaps_seen, 1);
  EXPECT_TRUE(never->closed());
  EXPECT_TRUE(never->close_code() == 1013 || never->close_code() == 1006) << never->close_code();
  EXPECT_EQ(test::session_field(*node, id, "status"), "running");
  EXPECT_EQ(http(url, "GET", "/readyz").status, 200);
}

TEST_F(gateway_fixture, the_console_login_link_gives_a_cookie_that_obeys_csrf_rules) {
  auto out = test::cli(*node, {"console", "--name", "alice", "--scope", "write"});
  ASSERT_EQ(out.code, 0) << out.err;
  auto link = out.out.substr(0, out.out.find('\n'));
  ASSERT_EQ(link.rfind(url + "/#login=", 0), 0u) << link;
  auto code = link.substr(link.find("#login=") + 7);
  // The console's page is served; the code goes in a POST body, never a URL.
  auto page = http(url, "GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.header("content-type").find("text/html"), std::string::npos);
  EXPECT_NE(page.header("content-security-policy").find("default-src 'self'"), std::string::npos);
  EXPECT_EQ(http(url, "GET", "/v1/whoami?code=" + code).status, 400);
  std::map<std::string, std::string> h = {{"Content-Type", "application/json"}, {"Origin", url}};
  auto login = http(url, "POST", "/v1/login", h, R"({"code":")" + code + R"("})");
  ASSERT_EQ(login.status, 200) << login.body;
  auto set = login.header("set-cookie");
  EXPECT_NE(set.find("HttpOnly"), std::string::npos) << set;
  EXPECT_NE(set.find("SameSite=Strict"), std::string::npos) << set;
  auto cookie = set.substr(0, set.find(';'));
  auto value = cookie.substr(cookie.find('=') + 1);
  // Once only.
  EXPECT_EQ(http(url, "POST", "/v1/login", h, R"({"code":")" + code + R"("})").status, 401);
  EXPECT_EQ(http(url, "POST", "/v1/login", h, R"({"code":"berthl_nope"})").status, 401);

  auto with_cookie = [&](std::map<std::string, std::string> extra) {
    extra["Cookie"] = cookie;
    return extra;
  };
  auto me = http(url, "GET", "/v1/whoami", with_cookie({}));
  ASSERT_EQ(me.status, 200) << me.body;
  EXPECT_EQ(json::parse(me.body)->get_string("name"), "alice");
  EXPECT_EQ(json::parse(me.body)->get_string("via"), "cookie");
  auto id = start(token("w", "write"), hold);
  // CSRF: a cookie POST without Origin, or from another site, is refused; from the page, done.
  auto none = http(url, "POST", "/v1/sessions/" + id + "/cancel",
                   with_cookie({{"Content-Type", "application/json"}}), "{}");
  EXPECT_EQ(none.status, 403) << none.body;
  auto evil = http(
      url, "POST", "/v1/sessions/" + id + "/cancel",
      with_cookie({{"Content-Type", "application/json"}, {"Origin", "http://evil.test"}}), "{}");
  EXPECT_EQ(evil.status, 403) << evil.body;
  EXPECT_NE(test::session_field(*node, id, "status"), "cancelled");
  // The cookie carries an SSE stream and a WebSocket (no auth frame needed).
  ws_client::options o;
  o.headers["Cookie"] = cookie;
  o.headers["Origin"] = url;
  auto c = ws_client::open(url, "/v1/ws", o);
  ASSERT_TRUE(c->connected());
  auto cancelled = call(*c, "c", "session.cancel", with_id(id));
  ASSERT_TRUE(cancelled && cancelled->find("result")) << cancelled->dump();
  auto events = test::sse(url, "/v1/sessions/" + id + "/events", "Cookie " + value, "-", 60);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().event, "end");
  bool by_alice = false;
  for (const auto& e : events)
    if (e.data.find("\"caller\":\"alice\"") != std::string::npos) by_alice = true;
  EXPECT_TRUE(by_alice);
  // Logout ends it; `berth token revoke alice` would too.
  EXPECT_EQ(http(url, "POST", "/v1/logout", with_cookie({{"Origin", url}})).status, 200);
  EXPECT_EQ(http(url, "GET", "/v1/whoami", with_cookie({})).status, 401);
}

namespace {
// A standalone `berth gateway` in front of the node's NATS.
struct standalone_gateway {
  pid_t pid = -1;
  std::string url;
  standalone_gateway(const std::string& nats_url, const std::string& tokens,
                     const std::string& out_file) {
    process::spawn_options so;
    int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    so.stdout_fd = fd;
    so.stderr_fd = fd;
    so.search_path = false;
    auto p = process::spawn({BERTH_BINARY, "--server", nats_url, "gateway", "--listen",
                             "127.0.0.1:0", "--tokens-file", tokens},
                            so);
    ::close(fd);
    if (!p) throw std::runtime_error(p.err().message);
    pid = *p;
    for (int i = 0; i < 300 && url.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      auto text = fs::read_file(out_file);
      if (!text) continue;
      // stdout is the URL alone on a line (the log goes to stderr, into the same file).
      for (std::size_t at = 0; at < text->size();) {
        auto nl = text->find('\n', at);
        if (nl == std::string::npos) break;
        auto line = text->substr(at, nl - at);
        if (line.rfind("http://", 0) == 0) url = line;
        at = nl + 1;
      }
    }
    if (url.empty()) throw std::runtime_error("berth gateway did not start");
  }
  void kill9() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  ~standalone_gateway() { kill9(); }
};
}  // namespace

TEST_F(gateway_fixture, a_client_sees_every_event_once_across_a_gateway_restart_and_a_node_kill) {
  auto w = token("w", "write");
  auto nats_url =
      json::parse(*fs::read_file(node->data_dir() + "/node.json"))->get_string("nats_url");
  auto tokens = node->data_dir() + "/gateway/tokens.json";
  auto g1 = std::make_unique<standalone_gateway>(nats_url, tokens, dir / "g1.out");
  auto id = start(w, chain(8, "0.7"));
  ASSERT_FALSE(id.empty());
  auto topic = "session/" + id + "/events";
  auto auth = [&](const std::string& base) {
    auto c = ws_client::open(base);
    c->send(R"({"op":"auth","token":")" + w + R"("})");
    EXPECT_TRUE(c->expect("auth"));
    return c;
  };

  // Through gateway 1 until a few steps ran, then it dies.
  auto a = auth(g1->url);
  a->send(op(R"({"op":"subscribe","topic":")" + topic + R"("})"));
  int finished = 0;
  auto first = collect(*a, topic, [&](const json::value& v) {
    if (v.find("data")->get_string("type") == "step.finished") finished++;
    return finished >= 2 || ends(v);
  });
  ASSERT_FALSE(first.empty());
  g1->kill9();

  // A second gateway, resumed with since; meanwhile the node is killed and comes back.
  auto g2 = std::make_unique<standalone_gateway>(nats_url, tokens, dir / "g2.out");
  auto b = auth(g2->url);
  b->send(op(R"({"op":"subscribe","topic":")" + topic + R"(","since":)" +
             std::to_string(first.back().get_int("seq")) + "}"));
  ASSERT_TRUE(b->expect("subscribed"));
  node->signal(SIGKILL);
  node->wait_exit();
  node->start();
  auto second = collect(*b, topic, ends, std::chrono::seconds(120));
  ASSERT_FALSE(second.empty());
  EXPECT_TRUE(ends(second.back())) << second.back().dump();

  auto seen = seqs(first);
  auto more = seqs(second);
  seen.insert(seen.end(), more.begin(), more.end());
  for (std::size_t i = 1; i < seen.size(); ++i) EXPECT_LT(seen[i - 1], seen[i]) << i;
  auto journal = test::journal(*node, id);
  EXPECT_EQ(seen.size(), journal.size());
  EXPECT_EQ(test::journal_problems(journal), "");

  // Two gateways, one session: the node's own serves the same journal.
  auto own =
      json::parse(*fs::read_file(node->data_dir() + "/node.json"))->get_string("console_url");
  auto c = auth(own);
  c->send(op(R"({"op":"subscribe","topic":")" + topic + R"("})"));
  EXPECT_EQ(seqs(collect(*c, topic, ends)), seen);
}

TEST_F(gateway_fixture, many_clients_on_one_session_share_a_feed_and_each_see_every_event_once) {
  // Each subscription starts on a consumer of its own and, once caught up, moves to the topic's
  // shared feed while events keep coming: whenever a client joins, from whatever sequence, it
  // gets exactly the journal after it.
  auto w = token("w", "write");
  auto id = start(w, chain(10, "0.3"));
  ASSERT_FALSE(id.empty());
  auto topic = "session/" + id + "/events";
  // Six clients from the start, joining one after another while the session runs.
  std::vector<std::unique_ptr<ws_client>> all;
  for (int i = 0; i < 6; ++i) {
    auto c = ws(w);
    c->send(op(R"({"op":"subscribe","topic":")" + topic + R"(","since":0})"));
    ASSERT_TRUE(c->expect("subscribed"));
    all.push_back(std::move(c));
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  auto first = collect(*all[0], topic, ends);
  ASSERT_FALSE(first.empty());
  auto want = seqs(first);
  for (std::size_t i = 1; i < all.size(); ++i)
    EXPECT_EQ(seqs(collect(*all[i], topic, ends)), want) << "client " << i;
  // And some that resume after a sequence the others saw.
  for (auto k : {want.size() / 3, want.size() / 2, want.size() - 2}) {
    auto late = ws(w);
    late->send(op(R"({"op":"subscribe","topic":")" + topic + R"(","since":)" +
                  std::to_string(want[k]) + "}"));
    std::vector<std::uint64_t> rest(want.begin() + static_cast<std::ptrdiff_t>(k) + 1, want.end());
    EXPECT_EQ(seqs(collect(*late, topic, ends)), rest) << "since " << want[k];
  }
  EXPECT_EQ(want.size(), test::journal(*node, id).size());
}
