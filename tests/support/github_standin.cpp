#include "github_standin.hpp"

#include "berth/base/ids.hpp"
#include "berth/base/redact.hpp"
#include "berth/base/time.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <stdexcept>

namespace berth::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

std::string random_token(std::size_t n) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string out;
  unsigned char buf[64];
  while (out.size() < n) {
    RAND_bytes(buf, sizeof buf);
    for (unsigned char c : buf)
      if (out.size() < n) out += alphabet[c % 62];
  }
  return out;
}

std::string json_error(const std::string& message) {
  json::value v = json::value::make_object();
  v.set("message", message);
  v.set("documentation_url", "https://docs.github.com/rest");
  return v.dump();
}

// "/repos/acme/app/pulls?x" -> {"acme/app", "x"}
std::pair<std::string, std::string> pulls_target(const std::string& target) {
  auto q = target.find('?');
  auto path = target.substr(0, q);
  auto query = q == std::string::npos ? std::string() : target.substr(q + 1);
  if (!path.starts_with("/repos/") || !path.ends_with("/pulls")) return {};
  return {path.substr(7, path.size() - 7 - 6), query};
}

std::string query_value(const std::string& query, const std::string& key) {
  std::size_t at = 0;
  while (at < query.size()) {
    auto amp = query.find('&', at);
    auto part = query.substr(at, amp == std::string::npos ? std::string::npos : amp - at);
    if (part.starts_with(key + "=")) {
      auto v = part.substr(key.size() + 1);
      std::string out;
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '%' && i + 2 < v.size()) {
          out += static_cast<char>(std::stoi(v.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          out += v[i];
        }
      }
      return out;
    }
    if (amp == std::string::npos) break;
    at = amp + 1;
  }
  return {};
}

}  // namespace

std::string pem_of(EVP_PKEY* key, bool priv) {
  BIO* b = BIO_new(BIO_s_mem());
  if (priv)
    PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
  else
    PEM_write_bio_PUBKEY(b, key);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(b);
  return out;
}

std::string base64url_decode(std::string s) {
  for (auto& c : s) c = c == '-' ? '+' : c == '_' ? '/' : c;
  while (s.size() % 4) s += '=';
  std::string out(s.size(), '\0');
  int n =
      EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return {};
  out.resize(static_cast<std::size_t>(n));
  while (!s.empty() && s.back() == '=') {
    s.pop_back();
    out.pop_back();
  }
  return out;
}

github_standin::github_standin(git_server& git, std::string owner, std::int64_t app_id,
                               std::int64_t installation_id)
    : git_(git), owner_(std::move(owner)), app_id_(app_id), installation_id_(installation_id) {
  EVP_PKEY* key = EVP_RSA_gen(2048);
  if (!key) throw std::runtime_error("cannot generate an RSA key");
  key_pem_ = pem_of(key, true);
  pub_pem_ = pem_of(key, false);
  EVP_PKEY_free(key);
}

github_standin::~github_standin() {
  stopping_ = true;
  if (port_ > 0) {
    // Wake the accept with one connection of our own.
    try {
      asio::io_context ioc;
      tcp::socket s(ioc);
      s.connect(
          tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_)));
    } catch (...) {
    }
  }
  if (thread_.joinable()) thread_.join();
}

std::string github_standin::api_url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

void github_standin::start() {
  auto ready = std::make_shared<std::promise<int>>();
  auto fut = ready->get_future();
  thread_ = std::thread([this, ready] {
    asio::io_context ioc;
    tcp::acceptor acc(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    ready->set_value(acc.local_endpoint().port());
    while (!stopping_) {
      tcp::socket sock(ioc);
      beast::error_code ec;
      acc.accept(sock, ec);
      if (ec || stopping_) break;
      beast::flat_buffer buf;
      http::request<http::string_body> req;
      http::read(sock, buf, req, ec);
      if (ec) continue;
      std::string auth(req[http::field::authorization]);
      auto r =
          handle(std::string(req.method_string()), std::string(req.target()), auth, req.body());
      http::response<http::string_body> res{static_cast<http::status>(r.status), 11};
      res.set(http::field::content_type, "application/json; charset=utf-8");
      res.set(http::field::connection, "close");
      res.body() = r.body;
      res.prepare_payload();
      http::write(sock, res, ec);
      sock.shutdown(tcp::socket::shutdown_both, ec);
    }
  });
  port_ = fut.get();
}

bool github_standin::jwt_ok(const std::string& authorization, std::string& why) const {
  if (!authorization.starts_with("Bearer ")) {
    why = "no Bearer JWT";
    return false;
  }
  auto jwt = authorization.substr(7);
  auto d1 = jwt.find('.');
  auto d2 = jwt.find('.', d1 + 1);
  if (d1 == std::string::npos || d2 == std::string::npos) {
    why = "not a JWT";
    return false;
  }
  auto header = json::parse(base64url_decode(jwt.substr(0, d1)));
  auto claims = json::parse(base64url_decode(jwt.substr(d1 + 1, d2 - d1 - 1)));
  auto sig = base64url_decode(jwt.substr(d2 + 1));
  if (!header || header->get_string("alg") != "RS256") {
    why = "alg is not RS256";
    return false;
  }
  BIO* b = BIO_new_mem_buf(pub_pem_.data(), static_cast<int>(pub_pem_.size()));
  EVP_PKEY* pub = PEM_read_bio_PUBKEY(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  auto input = jwt.substr(0, d2);
  bool valid =
      EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, pub) == 1 &&
      EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pub);
  if (!valid) {
    why = "bad signature";
    return false;
  }
  auto now = now_unix_ms() / 1000;
  if (!claims || claims->get_string("iss") != std::to_string(app_id_)) {
    why = "iss is not the app id";
    return false;
  }
  auto iat = claims->get_int("iat");
  auto exp = claims->get_int("exp");
  if (iat > now + 5 || exp <= now || exp - iat > 600 + 60) {
    why = "iat/exp out of bounds (iat " + std::to_string(iat - now) + "s, exp " +
          std::to_string(exp - now) + "s from now)";
    return false;
  }
  return true;
}

const github_standin::minted* github_standin::token_for(const std::string& authorization,
                                                        const std::string& repo) {
  if (!authorization.starts_with("token ") && !authorization.starts_with("Bearer ")) return nullptr;
  auto tok = authorization.substr(authorization.find(' ') + 1);
  auto now = now_unix_ms() / 1000;
  for (const auto& m : minted_)
    if (m.token == tok && !revoked_.count(tok) && m.expires_unix > now &&
        (repo.empty() || m.repo == repo))
      return &m;
  return nullptr;
}

github_standin::reply github_standin::handle(const std::string& method, const std::string& target,
                                             const std::string& authorization,
                                             const std::string& body) {
  std::lock_guard lock(mu_);
  auto refuse = [&](int status, const std::string& why) {
    refusals_.push_back(method + " " + target + ": " + why);
    return reply{status, json_error(why)};
  };
  auto token_path = "/app/installations/" + std::to_string(installation_id_) + "/access_tokens";
  if (method == "POST" && target == token_path) {
    std::string why;
    if (!jwt_ok(authorization, why))
      return refuse(401, "A JSON web token could not be decoded: " + why);
    auto req = json::parse(body);
    const json::value* repos = req ? req->find("repositories") : nullptr;
    if (!repos || !repos->is_array() || repos->as_array().size() != 1 ||
        !repos->as_array()[0].is_string())
      return refuse(422, "expected exactly one repository name");
    minted m;
    m.repo = owner_ + "/" + repos->as_array()[0].as_string();
    m.permissions =
        req->find("permissions") ? *req->find("permissions") : json::value::make_object();
    m.token = "ghs_" + random_token(long_tokens_ ? 516 : 36);
    m.expires_unix = now_unix_ms() / 1000 + lifetime_s_;
    git_.grant(m.token, m.repo, m.expires_unix);
    minted_.push_back(m);
    json::value out = json::value::make_object();
    out.set("token", m.token);
    out.set("expires_at", format_timestamp(m.expires_unix * 1000).substr(0, 19) + "Z");
    out.set("permissions", m.permissions);
    out.set("repository_selection", "selected");
    json::value rs = json::value::make_array();
    json::value r1 = json::value::make_object();
    r1.set("name", repos->as_array()[0].as_string());
    r1.set("full_name", m.repo);
    rs.push(r1);
    if (broaden_) {
      json::value r2 = json::value::make_object();
      r2.set("name", "other");
      r2.set("full_name", owner_ + "/other");
      rs.push(r2);
    }
    out.set("repositories", std::move(rs));
    return {201, out.dump()};
  }
  if (method == "DELETE" && target == "/installation/token") {
    ++revoke_attempts_;
    if (fail_revokes_ > 0) {
      --fail_revokes_;
      return refuse(502, "Server Error");
    }
    const auto* m = token_for(authorization, "");
    if (!m) return refuse(401, "Bad credentials");
    git_.revoke(m->token);
    revoked_[m->token]++;
    return {204, ""};
  }
  if (target.starts_with("/api/v4/projects/")) {
    auto q = target.find('?');
    auto path = target.substr(17, q == std::string::npos ? std::string::npos : q - 17);
    if (!path.ends_with("/merge_requests")) return refuse(404, "404 Not Found");
    auto project = query_value("p=" + path.substr(0, path.size() - 15), "p");
    auto tok = authorization.starts_with("Bearer ") ? authorization.substr(7) : std::string();
    auto it = gitlab_tokens_.find(tok);
    if (it == gitlab_tokens_.end() || it->second != project) return refuse(401, "401 Unauthorized");
    if (method == "GET") {
      auto source = query_value(target.substr(q + 1), "source_branch");
      json::value out = json::value::make_array();
      for (const auto& p : pulls_)
        if (p.get_string("repo") == project && p.get_string("source_branch") == source) out.push(p);
      return {200, out.dump()};
    }
    auto req = json::parse(body);
    if (!req || req->get_string("source_branch").empty() ||
        req->get_string("target_branch").empty())
      return refuse(400, "source_branch and target_branch are required");
    json::value p = json::value::make_object();
    auto iid = static_cast<std::int64_t>(pulls_.size() + 1);
    p.set("iid", iid);
    p.set("repo", project);
    p.set("web_url",
          "https://gitlab.example/" + project + "/-/merge_requests/" + std::to_string(iid));
    p.set("title", req->get_string("title"));
    p.set("source_branch", req->get_string("source_branch"));
    p.set("target_branch", req->get_string("target_branch"));
    pulls_.push_back(p);
    return {201, p.dump()};
  }
  auto [repo, query] = pulls_target(target);
  if (!repo.empty()) {
    const auto* m = token_for(authorization, repo);
    if (!m) return refuse(401, "Bad credentials");
    if (m->permissions.get_string("pull_requests") != "write")
      return refuse(403, "Resource not accessible by integration");
    if (method == "GET") {
      auto head = query_value(query, "head");
      json::value out = json::value::make_array();
      for (const auto& p : pulls_)
        if (p.get_string("repo") == repo && owner_ + ":" + p.get_string("head") == head)
          out.push(p);
      return {200, out.dump()};
    }
    if (method == "POST") {
      auto req = json::parse(body);
      if (!req || req->get_string("title").empty() || req->get_string("head").empty() ||
          req->get_string("base").empty())
        return refuse(422, "Validation Failed: title, head and base are required");
      auto ref = git_.repo_dir(repo) + "/refs/heads/" + req->get_string("head");
      bool packed = false;
      if (!std::filesystem::exists(ref)) {
        std::ifstream in(git_.repo_dir(repo) + "/packed-refs");
        for (std::string line; std::getline(in, line);)
          packed = packed || line.ends_with(" refs/heads/" + req->get_string("head"));
        if (!packed)
          return refuse(422,
                        "Validation Failed: head " + req->get_string("head") + " does not exist");
      }
      json::value p = json::value::make_object();
      auto number = static_cast<std::int64_t>(pulls_.size() + 1);
      p.set("number", number);
      p.set("repo", repo);
      p.set("html_url", "https://github.example/" + repo + "/pull/" + std::to_string(number));
      p.set("title", req->get_string("title"));
      p.set("body", req->get_string("body"));
      p.set("head", req->get_string("head"));
      p.set("base", req->get_string("base"));
      p.set("state", "open");
      pulls_.push_back(p);
      return {201, p.dump()};
    }
  }
  return refuse(404, "Not Found");
}

std::vector<github_standin::minted> github_standin::tokens() const {
  std::lock_guard lock(mu_);
  return minted_;
}

std::map<std::string, int> github_standin::revocations() const {
  std::lock_guard lock(mu_);
  return revoked_;
}

std::vector<json::value> github_standin::pulls() const {
  std::lock_guard lock(mu_);
  return pulls_;
}

std::vector<std::string> github_standin::refusals() const {
  std::lock_guard lock(mu_);
  return refusals_;
}

}  // namespace berth::test
