#include "berth/lease/provider.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/ids.hpp"
#include "berth/base/process.hpp"
#include "berth/base/redact.hpp"
#include "berth/lease/http.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace berth::lease {

namespace {

std::string trim(std::string s) {
  while (!s.empty() &&
         (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
    s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return s.substr(i);
}

// expires_at as RFC 3339 text or seconds since the epoch.
result<std::int64_t> parse_expiry(const json::value& v, const std::string& field) {
  if (v.is_null()) return std::int64_t{0};
  if (v.is_int()) return v.as_int() * 1000;
  if (v.is_string()) {
    auto ms = parse_timestamp(v.as_string());
    if (ms > 0) return ms;
  }
  return error{errc::invalid_argument,
               field + ": expected an RFC 3339 time or seconds since the epoch"};
}

grant new_grant(const config::credential_rule& rule, const std::string& url) {
  grant g;
  g.id = "lease-" + new_ulid();
  g.issued_ms = now_unix_ms();
  g.provider = rule.provider;
  g.url = url;
  g.username = rule.username;
  g.api_url = rule.api_url;
  g.scope = json::value::make_object();
  g.scope.set("url_prefix", rule.url_prefix);
  return g;
}

class static_provider final : public provider {
 public:
  explicit static_provider(config::credential_rule r) : rule_(std::move(r)) {}
  std::string name() const override { return "static"; }
  result<grant> mint(const std::string& url) override {
    auto text = read_secret_file(rule_.token_file, "credentials.static token_file");
    if (!text) return text.err();
    auto tok = trim(*text);
    if (tok.empty())
      return error{errc::invalid_argument,
                   "credentials.static token_file " + rule_.token_file + ": is empty"};
    if (tok.find_first_of(" \n\r\t") != std::string::npos)
      return error{errc::invalid_argument, "credentials.static token_file " + rule_.token_file +
                                               ": must hold one token on one line"};
    auto g = new_grant(rule_, url);
    g.token = tok;
    redact::add(g.token, g.username);
    return g;
  }
  status revoke(const grant&) override { return {}; }
  bool revocable() const override { return false; }

 private:
  config::credential_rule rule_;
};

class command_provider final : public provider {
 public:
  explicit command_provider(config::credential_rule r) : rule_(std::move(r)) {}
  std::string name() const override { return "command"; }
  result<grant> mint(const std::string& url) override {
    auto argv = rule_.run;
    argv.push_back(url);
    const std::string what = "credentials.command " + rule_.run[0];
    process::spawn_options so;
    so.search_path = false;
    auto c = process::run_capture(argv, {}, std::chrono::seconds(30), std::size_t{64} << 10, so);
    if (!c) return error{c.err().code, what + ": " + c.err().message};
    // The helper's output may hold the token: never quote it in an error.
    if (c->timed_out) return error{errc::timeout, what + ": did not finish within 30s"};
    if (c->signal)
      return error{errc::unavailable, what + ": killed by signal " + std::to_string(c->signal)};
    if (c->exit_code != 0)
      return error{errc::unavailable,
                   what + ": exited with code " + std::to_string(c->exit_code) +
                       (c->err.empty() ? "" : ": " + redact::apply(trim(c->err.substr(0, 300))))};
    auto doc = json::parse(c->out);
    if (!doc || !doc->is_object())
      return error{errc::invalid_argument,
                   what + ": did not print a JSON object {\"token\": ..., \"expires_at\": ...}"};
    const auto* tok = doc->find("token");
    if (!tok || !tok->is_string() || trim(tok->as_string()).empty())
      return error{errc::invalid_argument, what + ": its JSON has no non-empty \"token\" string"};
    auto g = new_grant(rule_, url);
    g.token = trim(tok->as_string());
    redact::add(g.token, g.username);
    if (auto u = doc->get_string("username"); !u.empty()) g.username = u;
    redact::add(g.token, g.username);
    if (const auto* e = doc->find("expires_at")) {
      auto ms = parse_expiry(*e, what + ": expires_at");
      if (!ms) return ms.err();
      g.expires_ms = *ms;
    }
    return g;
  }
  status revoke(const grant& g) override {
    if (rule_.revoke.empty()) return {};
    auto argv = rule_.revoke;
    argv.push_back(g.url);
    process::spawn_options so;
    so.search_path = false;
    auto c = process::run_capture(argv, g.token + "\n", std::chrono::seconds(30),
                                  std::size_t{64} << 10, so);
    const std::string what = "credentials.command revoke " + rule_.revoke[0];
    if (!c) return error{c.err().code, what + ": " + c.err().message};
    if (c->timed_out || c->signal || c->exit_code != 0)
      return error{errc::unavailable,
                   what + ": failed (exit code " + std::to_string(c->exit_code) + ")"};
    return {};
  }
  bool revocable() const override { return !rule_.revoke.empty(); }

 private:
  config::credential_rule rule_;
};

class github_app_provider final : public provider {
 public:
  explicit github_app_provider(config::credential_rule r) : rule_(std::move(r)) {
    while (!rule_.api_url.empty() && rule_.api_url.back() == '/') rule_.api_url.pop_back();
  }
  std::string name() const override { return "github_app"; }
  result<grant> mint(const std::string& url) override {
    auto repo = repo_of(url);
    if (!repo) return repo.err();
    auto pem = read_secret_file(rule_.private_key_file, "credentials.github_app private_key_file");
    if (!pem) return pem.err();
    auto jwt = github_app_jwt(*pem, rule_.app_id, now_unix_ms() / 1000);
    if (!jwt) return jwt.err();
    redact::add(*jwt, "");
    json::value body = json::value::make_object();
    json::value repos = json::value::make_array();
    repos.push(repo->second);
    body.set("repositories", std::move(repos));
    json::value perms = json::value::make_object();
    perms.set("contents", "write");
    perms.set("pull_requests", "write");
    body.set("permissions", perms);
    auto endpoint = rule_.api_url + "/app/installations/" + std::to_string(rule_.installation_id) +
                    "/access_tokens";
    auto r = http_call("POST", endpoint,
                       {{"Authorization", "Bearer " + *jwt},
                        {"Accept", "application/vnd.github+json"},
                        {"X-GitHub-Api-Version", "2022-11-28"},
                        {"Content-Type", "application/json"}},
                       body.dump(), std::chrono::seconds(30));
    redact::remove(*jwt, "");
    if (!r) return error{r.err().code, "credentials.github_app: " + r.err().message};
    if (r->status != 201 && r->status != 200)
      return error{errc::unavailable, "credentials.github_app: minting an installation token for " +
                                          repo->first + "/" + repo->second + " was refused: HTTP " +
                                          std::to_string(r->status) + " " +
                                          redact::apply(api_message(r->body))};
    auto doc = json::parse(r->body);
    const json::value* tok = doc ? doc->find("token") : nullptr;
    if (!tok || !tok->is_string() || tok->as_string().empty())
      return error{errc::unavailable, "credentials.github_app: the token response has no token"};
    auto g = new_grant(rule_, url);
    g.token = tok->as_string();
    redact::add(g.token, g.username);
    if (const auto* e = doc->find("expires_at")) {
      auto ms = parse_expiry(*e, "credentials.github_app: expires_at");
      if (!ms) return ms.err();
      g.expires_ms = *ms;
    }
    g.scope.set("repository", repo->first + "/" + repo->second);
    g.scope.set("permissions", doc->find("permissions") ? *doc->find("permissions") : perms);
    g.scope.set("installation_id", rule_.installation_id);
    // Trust, but verify: a token for more than this one repository is given back at once.
    if (const auto* rs = doc->find("repositories"); rs && rs->is_array()) {
      bool narrow = rs->as_array().size() == 1;
      if (narrow) {
        const auto& only = rs->as_array()[0];
        auto n = only.is_object() ? only.get_string("name") : std::string();
        narrow = n == repo->second;
      }
      if (!narrow) {
        auto revoked = revoke(g);
        return error{errc::unavailable,
                     "credentials.github_app: the installation token covers more than " +
                         repo->first + "/" + repo->second +
                         (revoked ? "; it was revoked and not used"
                                  : "; it was not used, and revoking it failed (" +
                                        revoked.err().message + "): it lives until it expires")};
      }
    }
    return g;
  }
  status revoke(const grant& g) override {
    auto r = http_call("DELETE", rule_.api_url + "/installation/token",
                       {{"Authorization", "token " + g.token},
                        {"Accept", "application/vnd.github+json"},
                        {"X-GitHub-Api-Version", "2022-11-28"}},
                       {}, std::chrono::seconds(30));
    if (!r) return error{r.err().code, "credentials.github_app revoke: " + r.err().message};
    // 401: the token no longer works (revoked before, or expired) — the goal is reached.
    if (r->status == 204 || r->status == 401) return {};
    return error{errc::unavailable,
                 "credentials.github_app revoke: HTTP " + std::to_string(r->status)};
  }
  bool revocable() const override { return true; }

 private:
  static std::string api_message(const std::string& body) {
    auto doc = json::parse(body);
    if (doc && doc->is_object()) return doc->get_string("message");
    return body.substr(0, 200);
  }
  config::credential_rule rule_;
};

}  // namespace

json::value grant::metadata() const {
  json::value v = json::value::make_object();
  v.set("lease", id);
  v.set("provider", provider);
  v.set("url", url);
  if (expires_ms) v.set("expires_at", format_timestamp(expires_ms));
  v.set("scope", scope.is_null() ? json::value::make_object() : scope);
  return v;
}

json::value grant::to_json() const {
  json::value v = metadata();
  v.set("username", username);
  v.set("token", token);
  v.set("expires_ms", expires_ms);
  v.set("issued_ms", issued_ms);
  if (retired) v.set("retired", true);
  if (!api_url.empty()) v.set("api_url", api_url);
  return v;
}

result<grant> grant::from_json(const json::value& v) {
  if (!v.is_object()) return error{errc::corrupt, "lease: not an object"};
  grant g;
  g.id = v.get_string("lease");
  g.provider = v.get_string("provider");
  g.url = v.get_string("url");
  g.username = v.get_string("username");
  g.token = v.get_string("token");
  g.expires_ms = v.get_int("expires_ms");
  g.issued_ms = v.get_int("issued_ms");
  g.retired = v.get_bool("retired");
  g.api_url = v.get_string("api_url");
  if (const auto* s = v.find("scope")) g.scope = *s;
  if (g.id.empty() || g.token.empty()) return error{errc::corrupt, "lease: id or token missing"};
  return g;
}

result<std::string> read_secret_file(const std::string& path, const std::string& field) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return error{errno == ENOENT ? errc::not_found : errc::io_error,
                 field + " " + path + ": cannot be opened: " + errno_text(errno)};
  struct stat st {};
  ::fstat(fd, &st);
  ::close(fd);
  if (!S_ISREG(st.st_mode))
    return error{errc::invalid_argument, field + " " + path + ": is not a regular file"};
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return error{errc::invalid_argument, field + " " + path + ": mode " + mode +
                                             " lets other users read it; it must be 0600 (chmod "
                                             "600 " +
                                             path + ")"};
  }
  if (st.st_uid != ::geteuid())
    return error{errc::invalid_argument,
                 field + " " + path + ": must be owned by the user the node runs as"};
  return fs::read_file(path);
}

result<std::unique_ptr<provider>> make_provider(const config::credential_rule& rule) {
  std::unique_ptr<provider> p;
  if (rule.provider == "static") {
    auto t = read_secret_file(rule.token_file, "credentials.static token_file");
    if (!t) return error{t.err().code, rule.where + ": " + t.err().message};
    p = std::make_unique<static_provider>(rule);
  } else if (rule.provider == "command") {
    if (::access(rule.run[0].c_str(), X_OK) != 0)
      return error{errc::not_found, rule.where + ": credentials.command run: " + rule.run[0] +
                                        " is not an executable file"};
    p = std::make_unique<command_provider>(rule);
  } else if (rule.provider == "github_app") {
    auto pem = read_secret_file(rule.private_key_file, "credentials.github_app private_key_file");
    if (!pem) return error{pem.err().code, rule.where + ": " + pem.err().message};
    if (auto j = github_app_jwt(*pem, rule.app_id, 0); !j)
      return error{j.err().code, rule.where + ": " + j.err().message};
    auto parts = split_url(rule.api_url, "credentials.github_app api_url");
    if (!parts) return error{parts.err().code, rule.where + ": " + parts.err().message};
    p = std::make_unique<github_app_provider>(rule);
  } else {
    return error{errc::invalid_argument, rule.where + ": unknown provider " + rule.provider};
  }
  return p;
}

result<std::shared_ptr<registry>> registry::create(const config::credentials_section& cfg) {
  auto r = std::make_shared<registry>();
  r->cfg_ = cfg;
  for (const auto& rule : r->cfg_.rules) {
    auto p = make_provider(rule);
    if (!p) return p.err();
    r->providers_.push_back(std::move(*p));
  }
  return r;
}

provider* registry::for_url(const std::string& url) const {
  const auto* rule = config::credential_for(cfg_, url);
  return rule ? providers_[static_cast<std::size_t>(rule - cfg_.rules.data())].get() : nullptr;
}

provider* registry::for_grant(const grant& g) const {
  auto prefix = g.scope.is_object() ? g.scope.get_string("url_prefix") : std::string();
  for (std::size_t i = 0; i < cfg_.rules.size(); ++i)
    if (cfg_.rules[i].provider == g.provider && cfg_.rules[i].url_prefix == prefix)
      return providers_[i].get();
  return nullptr;
}

vault::vault(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  ::chmod(dir_.c_str(), 0700);
}

std::vector<grant> vault::of(const std::string& session) const {
  std::lock_guard lock(mu_);
  std::vector<grant> out;
  auto text = fs::read_file(dir_ + "/" + session + ".json");
  if (!text) return out;
  auto doc = json::parse(*text);
  if (!doc || !doc->is_array()) return out;
  for (const auto& e : doc->as_array())
    if (auto g = grant::from_json(e)) out.push_back(std::move(*g));
  return out;
}

std::map<std::string, std::vector<grant>> vault::all() const {
  std::map<std::string, std::vector<grant>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    auto name = e.path().filename().string();
    if (!name.ends_with(".json")) continue;
    auto session = name.substr(0, name.size() - 5);
    auto gs = of(session);
    if (!gs.empty()) out[session] = std::move(gs);
  }
  return out;
}

status vault::write(const std::string& session, const std::vector<grant>& gs) {
  auto path = dir_ + "/" + session + ".json";
  if (gs.empty()) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return error{errc::io_error, "lease vault: cannot remove " + path + ": " + errno_text(errno)};
    return {};
  }
  json::value arr = json::value::make_array();
  for (const auto& g : gs) arr.push(g.to_json());
  return fs::write_file_atomic(path, arr.dump(), 0600);
}

status vault::put(const std::string& session, const grant& g) {
  auto gs = of(session);
  std::lock_guard lock(mu_);
  std::erase_if(gs, [&](const grant& x) { return x.id == g.id; });
  gs.push_back(g);
  return write(session, gs);
}

status vault::remove(const std::string& session, const std::string& lease_id) {
  auto gs = of(session);
  std::lock_guard lock(mu_);
  std::erase_if(gs, [&](const grant& x) { return x.id == lease_id; });
  return write(session, gs);
}

result<std::string> github_app_jwt(const std::string& pem, std::int64_t app_id,
                                   std::int64_t now_s) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr) : nullptr;
  if (bio) BIO_free(bio);
  if (!key)
    return error{errc::invalid_argument,
                 "credentials.github_app private_key_file: not a PEM private key"};
  if (EVP_PKEY_base_id(key) != EVP_PKEY_RSA) {
    EVP_PKEY_free(key);
    return error{errc::invalid_argument,
                 "credentials.github_app private_key_file: an RSA key is required (RS256)"};
  }
  std::string header = redact::base64url(R"({"alg":"RS256","typ":"JWT"})");
  json::value claims = json::value::make_object();
  claims.set("iat", now_s - 60);
  claims.set("exp", now_s + 540);
  claims.set("iss", std::to_string(app_id));
  std::string input = header + "." + redact::base64url(claims.dump());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::size_t len = 0;
  std::string sig;
  bool ok = ctx && EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
            EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                           input.size()) == 1;
  if (ok) {
    sig.resize(len);
    ok = EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                        reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
    sig.resize(len);
  }
  if (ctx) EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  if (!ok) return error{errc::internal, "credentials.github_app: signing the app JWT failed"};
  return input + "." + redact::base64url(sig);
}

result<std::pair<std::string, std::string>> repo_of(const std::string& url) {
  auto s = url;
  while (!s.empty() && s.back() == '/') s.pop_back();
  if (s.ends_with(".git")) s.resize(s.size() - 4);
  auto scheme = s.find("://");
  auto path_start = scheme == std::string::npos ? 0 : s.find('/', scheme + 3);
  if (path_start == std::string::npos)
    return error{errc::invalid_argument, "repo " + url + ": has no owner/name path"};
  auto name_at = s.rfind('/');
  auto owner_at = name_at > path_start ? s.rfind('/', name_at - 1) : std::string::npos;
  if (owner_at == std::string::npos || owner_at < path_start || name_at + 1 >= s.size())
    return error{errc::invalid_argument,
                 "repo " + url + ": expected a URL ending in /<owner>/<name>[.git]"};
  return std::make_pair(s.substr(owner_at + 1, name_at - owner_at - 1), s.substr(name_at + 1));
}

}  // namespace berth::lease
