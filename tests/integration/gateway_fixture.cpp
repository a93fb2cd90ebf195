#include "gateway_fixture.hpp"

#include <algorithm>
#include <cctype>

namespace berth::test {

http_reply http(const std::string& base, const std::string& method, const std::string& path,
                const std::map<std::string, std::string>& headers, const std::string& body) {
  temp_dir scratch;  // the body and headers by file: argv has a size limit
  write_file(scratch / "body", body);
  std::string hdrs = "{";
  int n = 0;
  for (const auto& [k, v] : headers) {
    auto f = "h-" + std::to_string(n++);
    write_file(scratch / f, v);
    hdrs += "'" + k + "': open(sys.argv[5] + '/" + f + "').read(),";
  }
  hdrs += "}";
  auto out = run_checked(
      {"python3", "-c",
       "import http.client, json, sys, urllib.parse\n"
       "u = urllib.parse.urlparse(sys.argv[1])\n"
       "c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)\n"
       "c.request(sys.argv[2], sys.argv[3], body=open(sys.argv[4], 'rb').read() or None, headers=" +
           hdrs +
           ")\n"
           "r = c.getresponse()\n"
           "h = {k.lower(): v for k, v in r.getheaders()}\n"
           "sys.stdout.write(str(r.status) + '\\n' + json.dumps(h) + '\\n' + "
           "r.read().decode('utf-8', 'replace'))\n",
       base, method, path, scratch / "body", scratch.path()});
  http_reply r;
  auto nl = out.find('\n');
  r.status = std::stoi(out.substr(0, nl));
  auto nl2 = out.find('\n', nl + 1);
  if (auto h = json::parse(out.substr(nl + 1, nl2 - nl - 1)); h && h->is_object())
    for (const auto& [k, v] : h->as_object()) r.headers[k] = v.is_string() ? v.as_string() : "";
  r.body = out.substr(nl2 + 1);
  return r;
}

std::vector<int> http_burst(const std::string& base, const std::string& path,
                            const std::map<std::string, std::string>& headers, int n,
                            std::string* retry_after) {
  json::value h = json::value::make_object();
  for (const auto& [k, v] : headers) h.set(k, v);
  temp_dir scratch;
  write_file(scratch / "headers.json", h.dump());
  auto out = run_checked({"python3", "-c",
                          "import http.client, json, sys, urllib.parse\n"
                          "u = urllib.parse.urlparse(sys.argv[1])\n"
                          "h = json.load(open(sys.argv[4]))\n"
                          "c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)\n"
                          "for _ in range(int(sys.argv[3])):\n"
                          "    c.request('GET', sys.argv[2], headers=h)\n"
                          "    r = c.getresponse(); r.read()\n"
                          "    print(r.status, r.getheader('Retry-After') or '-')\n",
                          base, path, std::to_string(n), scratch / "headers.json"});
  std::vector<int> statuses;
  std::size_t at = 0;
  while (at < out.size()) {
    auto nl = out.find('\n', at);
    if (nl == std::string::npos) nl = out.size();
    auto line = out.substr(at, nl - at);
    at = nl + 1;
    auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    statuses.push_back(std::stoi(line.substr(0, sp)));
    if (retry_after && line.substr(sp + 1) != "-") *retry_after = line.substr(sp + 1);
  }
  return statuses;
}

std::vector<sse_event> sse(const std::string& base, const std::string& path,
                           const std::string& auth, const std::string& last_event_id, int timeout_s,
                           int* status) {
  auto out = run_checked({"python3", std::string(BERTH_SUPPORT_DIR) + "/sse_read.py", base, path,
                          auth, last_event_id, std::to_string(timeout_s)});
  std::vector<sse_event> events;
  std::size_t at = 0;
  bool first = true;
  while (at < out.size()) {
    auto nl = out.find('\n', at);
    if (nl == std::string::npos) nl = out.size();
    auto line = out.substr(at, nl - at);
    at = nl + 1;
    if (first) {
      if (status) *status = std::stoi(line);
      first = false;
      continue;
    }
    auto v = json::parse(line);
    if (!v) continue;
    events.push_back({v->get_string("id"), v->get_string("event"), v->get_string("data")});
  }
  return events;
}

void gateway_fixture::SetUp() {
  node = std::make_unique<node_process>(dir / "node", std::vector<std::string>{}, node_env);
  node->start();
  auto info = json::parse(*fs::read_file(node->data_dir() + "/node.json"));
  ASSERT_TRUE(info);
  url = info->get_string("console_url");
  ASSERT_EQ(url.rfind("http://127.0.0.1:", 0), 0u) << info->dump();
}

std::string gateway_fixture::token(const std::string& name, const std::string& scope) {
  auto r = cli(*node, {"token", "create", name, "--scope", scope});
  EXPECT_EQ(r.code, 0) << r.err;
  auto t = r.out;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  return t;
}

std::string gateway_fixture::start(const std::string& t, const std::string& spec) {
  auto h = bearer(t);
  h["Content-Type"] = "application/json";
  auto r = http(url, "POST", "/v1/sessions", h, spec);
  EXPECT_EQ(r.status, 201) << r.body;
  auto v = json::parse(r.body);
  return v ? v->get_string("id") : std::string();
}

std::unique_ptr<ws_client> gateway_fixture::ws(const std::string& t, ws_client::options o) {
  auto c = ws_client::open(url, "/v1/ws", std::move(o));
  EXPECT_TRUE(c->connected()) << c->status();
  json::value a = json::value::make_object();
  a.set("op", "auth");
  a.set("token", t);
  c->send(a);
  auto r = c->expect("auth");
  EXPECT_TRUE(r) << "no auth reply";
  return c;
}

}  // namespace berth::test
