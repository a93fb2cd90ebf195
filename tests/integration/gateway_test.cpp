// The gateway inside `berth node`: REST against a real node and nats-server, tokens from the
// CLI, and hostile requests refused with their exact status. Streams: gateway_stream_test.cpp.

#include "gateway_fixture.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

using namespace berth;
using test::gateway_fixture;
using test::http;

TEST_F(gateway_fixture, rest_starts_lists_shows_and_cancels_sessions_with_a_token) {
  EXPECT_EQ(http(url, "GET", "/livez").status, 200);
  EXPECT_EQ(http(url, "GET", "/readyz").status, 200);
  auto w = token("ci", "write");
  ASSERT_EQ(w.rfind("berth_", 0), 0u);
  // The file holds the hash only.
  auto stored = *fs::read_file(node->data_dir() + "/gateway/tokens.json");
  EXPECT_EQ(stored.find(w), std::string::npos);

  auto h = bearer(w);
  h["Content-Type"] = "application/json";
  h["Idempotency-Key"] = "gw-1";
  auto spec = R"({"steps":[{"id":"hold","run":["sleep","60"]}]})";
  auto started = http(url, "POST", "/v1/sessions", h, spec);
  ASSERT_EQ(started.status, 201) << started.body;
  auto id = json::parse(started.body)->get_string("id");
  // The same key and spec: the same session.
  auto again = http(url, "POST", "/v1/sessions", h, spec);
  EXPECT_EQ(json::parse(again.body)->get_string("id"), id) << again.body;
  auto shown = http(url, "GET", "/v1/sessions/" + id, bearer(w));
  EXPECT_EQ(shown.status, 200) << shown.body;
  auto listed = http(url, "GET", "/v1/sessions?limit=10", bearer(w));
  EXPECT_NE(listed.body.find(id), std::string::npos) << listed.body;
  EXPECT_EQ(http(url, "GET", "/v1/stats", bearer(w)).status, 200);
  // This node, from its own heartbeat (a single node is a cluster of one).
  auto nodes = http(url, "GET", "/v1/nodes", bearer(w));
  ASSERT_EQ(nodes.status, 200) << nodes.body;
  auto nv = json::parse(nodes.body);
  ASSERT_TRUE(nv && nv->find("nodes")) << nodes.body;
  ASSERT_EQ(nv->find("nodes")->as_array().size(), 1u) << nodes.body;
  EXPECT_EQ(nv->find("nodes")->as_array()[0].get_string("state"), "ready") << nodes.body;
  EXPECT_EQ(http(url, "POST", "/v1/nodes", h, "{}").status, 405);
  auto cancelled = http(url, "POST", "/v1/sessions/" + id + "/cancel", h, "{}");
  EXPECT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_TRUE(
      test::eventually([&] { return test::session_field(*node, id, "status") == "cancelled"; }));
  // Errors have the API's shape and status.
  auto missing = http(url, "GET", "/v1/sessions/nope", bearer(w));
  EXPECT_EQ(missing.status, 404) << missing.body;
  EXPECT_NE(missing.body.find("\"code\":\"not_found\""), std::string::npos);
  auto bad = http(url, "POST", "/v1/sessions", h, R"({"steps": 7})");
  EXPECT_EQ(bad.status, 400) << bad.body;
}

TEST_F(gateway_fixture, hostile_requests_get_their_exact_refusal_and_touch_nothing) {
  auto r = token("reader", "read");
  auto w = token("writer", "write");
  // No token, a wrong one, a revoked one: 401.
  EXPECT_EQ(http(url, "GET", "/v1/sessions").status, 401);
  EXPECT_EQ(http(url, "GET", "/v1/sessions", bearer("berth_" + std::string(43, 'x'))).status, 401);
  auto gone = token("gone", "write");
  EXPECT_EQ(http(url, "GET", "/v1/stats", bearer(gone)).status, 200);
  ASSERT_EQ(test::cli(*node, {"token", "revoke", "gone"}).code, 0);
  EXPECT_EQ(http(url, "GET", "/v1/stats", bearer(gone)).status, 401);
  // A token in the query string is refused, even a valid one.
  auto q = http(url, "GET", "/v1/sessions?token=" + w);
  EXPECT_EQ(q.status, 400) << q.body;
  EXPECT_EQ(q.body.find(w), std::string::npos);
  EXPECT_EQ(node->log().find(w), std::string::npos);
  // A read token may not cancel (403); nothing changes.
  auto h = bearer(w);
  h["Content-Type"] = "application/json";
  auto s =
      http(url, "POST", "/v1/sessions", h, R"({"steps":[{"id":"hold","run":["sleep","60"]}]})");
  ASSERT_EQ(s.status, 201) << s.body;
  auto id = json::parse(s.body)->get_string("id");
  auto rh = bearer(r);
  rh["Content-Type"] = "application/json";
  EXPECT_EQ(http(url, "POST", "/v1/sessions/" + id + "/cancel", rh, "{}").status, 403);
  // Origins: only the gateway's own, exactly.
  for (const char* origin : {"null", "http://evil.test", "http://127.0.0.1.evil.test",
                             "http://evil.test/http://127.0.0.1"}) {
    auto oh = bearer(w);
    oh["Origin"] = origin;
    EXPECT_EQ(http(url, "GET", "/v1/stats", oh).status, 403) << origin;
  }
  auto own = bearer(w);
  own["Origin"] = url;
  EXPECT_EQ(http(url, "GET", "/v1/stats", own).status, 200);
  // A session id outside [A-Za-z0-9_-], traversal, a NUL: 400; unknown paths 404.
  EXPECT_EQ(http(url, "GET", "/v1/sessions/a.b", bearer(w)).status, 400);
  EXPECT_EQ(http(url, "GET", "/v1/sessions/..%2f..%2fetc", bearer(w)).status, 400);
  EXPECT_EQ(http(url, "GET", "/v1/sessions/a%00b", bearer(w)).status, 400);
  EXPECT_EQ(http(url, "GET", "/../../etc/passwd", bearer(w)).status, 404);
  // Oversized bodies and headers.
  EXPECT_EQ(http(url, "POST", "/v1/sessions", h, std::string(2 << 20, 'x')).status, 413);
  auto big = bearer(w);
  big["X-Big"] = std::string(64 << 10, 'y');
  EXPECT_EQ(http(url, "GET", "/v1/stats", big).status, 431);
  // Wrong content type and unknown parameters are named.
  auto ct = bearer(w);
  ct["Content-Type"] = "text/plain";
  EXPECT_EQ(http(url, "POST", "/v1/sessions", ct, "{}").status, 415);
  auto unknown = http(url, "GET", "/v1/sessions?colour=red", bearer(w));
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(unknown.body.find("colour"), std::string::npos);
  // The session is untouched and the node healthy.
  EXPECT_EQ(test::session_field(*node, id, "status"), "running");
  EXPECT_EQ(http(url, "GET", "/readyz").status, 200);
}

TEST_F(gateway_fixture, a_client_that_sends_headers_slowly_is_cut_off) {
  auto port = std::stoi(url.substr(url.rfind(':') + 1));
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  std::string partial = "GET /livez HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(::write(fd, partial.data(), partial.size()), static_cast<ssize_t>(partial.size()));
  // The header timeout is 10 s by default: the gateway closes the connection (read returns 0)
  // without answering; meanwhile other clients are served.
  EXPECT_EQ(http(url, "GET", "/livez").status, 200);
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[64];
  EXPECT_EQ(::read(fd, buf, sizeof buf), 0);
  ::close(fd);
}

namespace {
struct console_dir_gateway : gateway_fixture {
  void SetUp() override {
    auto site = dir / "site";
    std::filesystem::create_directories(site + "/assets");
    test::write_file(site + "/index.html", "<!doctype html><p>custom console</p>");
    test::write_file(site + "/assets/app.js", "console.log('hi')");
    test::write_file(site + "/.secret", "hidden");
    test::write_file(dir / "outside.txt", "outside the console");
    std::filesystem::create_symlink(dir / "outside.txt", site + "/link.txt");
    std::filesystem::create_symlink("/etc", site + "/etc");
    node_env = {{"BERTH_GATEWAY_CONSOLE_DIR", site}};
    gateway_fixture::SetUp();
  }
};
}  // namespace

TEST_F(console_dir_gateway, static_files_never_leave_the_console_folder) {
  auto index = http(url, "GET", "/");
  EXPECT_EQ(index.status, 200);
  EXPECT_NE(index.body.find("custom console"), std::string::npos);
  EXPECT_NE(index.header("content-type").find("text/html"), std::string::npos);
  EXPECT_EQ(http(url, "GET", "/assets/app.js").header("content-type").find("text/javascript"), 0u);
  for (const char* path : {"/../outside.txt", "/assets/../../outside.txt", "/%2e%2e/outside.txt",
                           "/assets/%2e%2e/%2e%2e/outside.txt", "/index.html%00.js", "/.secret",
                           "/link.txt", "/etc/passwd", "/assets/", "/nope.js", "/assets\\..\\x"}) {
    auto r = http(url, "GET", path);
    EXPECT_TRUE(r.status == 404 || r.status == 400) << path << " " << r.status;
    EXPECT_EQ(r.body.find("outside the console"), std::string::npos) << path;
    EXPECT_EQ(r.body.find("root:"), std::string::npos) << path;
  }
  EXPECT_EQ(http(url, "POST", "/index.html").status, 405);
}
