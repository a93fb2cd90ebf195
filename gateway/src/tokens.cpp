#include "berth/gateway/tokens.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/json.hpp"
#include "berth/base/time.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace berth::gateway {

namespace {

std::string sha256_hex(const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr);
  static const char* x = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex += x[out[i] >> 4];
    hex += x[out[i] & 15];
  }
  return hex;
}

std::string base64url(const unsigned char* p, std::size_t n) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  unsigned buf = 0;
  int bits = 0;
  for (std::size_t i = 0; i < n; ++i) {
    buf = (buf << 8) | p[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += a[(buf >> bits) & 63];
    }
  }
  if (bits > 0) out += a[(buf << (6 - bits)) & 63];
  return out;
}

bool good_name(const std::string& n) {
  return !n.empty() && n.size() <= 64 && std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

const char* prefix_of(credential_kind k) {
  switch (k) {
    case credential_kind::token:
      return "berth_";
    case credential_kind::login:
      return "berthl_";
    case credential_kind::cookie:
      return "berthc_";
  }
  return "berth_";
}

std::optional<credential_kind> kind_from_name(const std::string& n) {
  if (n.empty() || n == "token") return credential_kind::token;
  if (n == "login") return credential_kind::login;
  if (n == "cookie") return credential_kind::cookie;
  return std::nullopt;
}

// Changes by several processes (the CLI, gateways) take turns: an exclusive flock on a file
// beside the tokens file, held for one read-modify-write.
class file_lock {
 public:
  explicit file_lock(const std::string& path) {
    std::error_code ec;
    auto dir = std::filesystem::path(path).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    fd_ = ::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ >= 0)
      while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
  }
  ~file_lock() {
    if (fd_ >= 0) ::close(fd_);
  }
  file_lock(const file_lock&) = delete;
  file_lock& operator=(const file_lock&) = delete;

 private:
  int fd_ = -1;
};

bool expired(const token_record& r, std::int64_t now) {
  return r.expires_ms != 0 && r.expires_ms <= now;
}

}  // namespace

std::optional<scope> scope_from_name(const std::string& name) {
  if (name == "read") return scope::read;
  if (name == "write") return scope::write;
  if (name == "admin") return scope::admin;
  return std::nullopt;
}

const char* scope_name(scope s) {
  switch (s) {
    case scope::read:
      return "read";
    case scope::write:
      return "write";
    case scope::admin:
      return "admin";
  }
  return "read";
}

const char* kind_name(credential_kind k) {
  switch (k) {
    case credential_kind::token:
      return "token";
    case credential_kind::login:
      return "login";
    case credential_kind::cookie:
      return "cookie";
  }
  return "token";
}

token_store::token_store(std::string path) : path_(std::move(path)) {}

result<std::vector<token_record>> token_store::load() const {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::vector<token_record>{};
    return error{errc::io_error, "tokens file " + path_ + ": " + errno_text(errno)};
  }
  auto mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (mtime == cached_mtime_ns_ && st.st_size == cached_size_ &&
      static_cast<std::uint64_t>(st.st_ino) == cached_ino_)
    return cached_;
  auto text = fs::read_file(path_);
  if (!text) return text.err();
  auto v = json::parse(*text);
  if (!v || !v->is_object() || !v->find("tokens") || !v->find("tokens")->is_array())
    return error{errc::corrupt, "tokens file " + path_ + ": not a {\"tokens\": [...]} object"};
  std::vector<token_record> all;
  for (const auto& t : v->find("tokens")->as_array()) {
    token_record r;
    r.name = t.get_string("name");
    auto sc = scope_from_name(t.get_string("scope"));
    auto kind = kind_from_name(t.get_string("kind"));
    r.sha256 = t.get_string("sha256");
    r.created = t.get_string("created");
    r.expires_ms = t.get_int("expires_ms", 0);
    if (!good_name(r.name) || !sc || !kind || r.sha256.size() != 64 || r.expires_ms < 0)
      return error{errc::corrupt,
                   "tokens file " + path_ + ": a malformed entry (" + t.dump() + ")"};
    r.scope = *sc;
    r.kind = *kind;
    all.push_back(std::move(r));
  }
  cached_ = all;
  cached_mtime_ns_ = mtime;
  cached_size_ = st.st_size;
  cached_ino_ = static_cast<std::uint64_t>(st.st_ino);
  return all;
}

status token_store::save(std::vector<token_record> all) const {
  auto now = now_unix_ms();
  std::erase_if(all, [&](const token_record& r) { return expired(r, now); });
  json::value list = json::value::make_array();
  for (const auto& r : all) {
    json::value t = json::value::make_object();
    t.set("name", r.name);
    t.set("scope", scope_name(r.scope));
    t.set("sha256", r.sha256);
    t.set("created", r.created);
    if (r.kind != credential_kind::token) t.set("kind", kind_name(r.kind));
    if (r.expires_ms != 0) t.set("expires_ms", r.expires_ms);
    list.push(std::move(t));
  }
  json::value doc = json::value::make_object();
  doc.set("tokens", std::move(list));
  std::error_code ec;
  auto dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  return fs::write_file_atomic(path_, doc.dump() + "\n", 0600);
}

result<std::string> token_store::add(const std::string& name, scope s, credential_kind kind,
                                     std::int64_t expires_ms) {
  if (!good_name(name))
    return error{errc::invalid_argument,
                 "name: \"" + name + "\" must be 1 to 64 characters of [A-Za-z0-9_.-]"};
  std::lock_guard lock(mu_);
  file_lock across(path_);
  auto all = load();
  if (!all) return all.err();
  if (kind == credential_kind::token)
    for (const auto& r : *all)
      if (r.name == name && r.kind == credential_kind::token)
        return error{errc::conflict, "name: a token named \"" + name +
                                         "\" exists; revoke it first (berth token revoke " + name +
                                         ")"};
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1)
    return error{errc::internal, "no random bytes for a token (OpenSSL RAND_bytes failed)"};
  auto secret = prefix_of(kind) + base64url(raw, sizeof raw);
  token_record r{name, s, sha256_hex(secret), format_timestamp(now_unix_ms()), kind, expires_ms};
  all->push_back(std::move(r));
  BERTH_TRY(save(std::move(*all)));
  return secret;
}

result<std::string> token_store::create(const std::string& name, scope s) {
  return add(name, s, credential_kind::token, 0);
}

result<std::string> token_store::create_login(const std::string& name, scope s, millis ttl) {
  return add(name, s, credential_kind::login, now_unix_ms() + ttl.count());
}

result<std::pair<std::string, token_record>> token_store::exchange_login(const std::string& code,
                                                                         millis ttl) {
  auto refused = error{errc::unauthorized,
                       "login code: unknown, already used or expired; run `berth console` for a "
                       "new link"};
  if (code.size() != 50 || code.rfind(prefix_of(credential_kind::login), 0) != 0) return refused;
  auto h = sha256_hex(code);
  std::lock_guard lock(mu_);
  file_lock across(path_);
  auto all = load();
  if (!all) return all.err();
  auto now = now_unix_ms();
  auto it = std::find_if(all->begin(), all->end(), [&](const token_record& r) {
    return r.kind == credential_kind::login && !expired(r, now) &&
           CRYPTO_memcmp(r.sha256.data(), h.data(), h.size()) == 0;
  });
  if (it == all->end()) return refused;
  auto login = *it;
  all->erase(it);
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1)
    return error{errc::internal, "no random bytes for a session (OpenSSL RAND_bytes failed)"};
  auto secret = prefix_of(credential_kind::cookie) + base64url(raw, sizeof raw);
  token_record r{login.name,
                 login.scope,
                 sha256_hex(secret),
                 format_timestamp(now),
                 credential_kind::cookie,
                 now + ttl.count()};
  all->push_back(r);
  BERTH_TRY(save(std::move(*all)));
  return std::make_pair(secret, r);
}

status token_store::revoke(const std::string& name) {
  std::lock_guard lock(mu_);
  file_lock across(path_);
  auto all = load();
  if (!all) return all.err();
  auto n = std::erase_if(*all, [&](const token_record& r) { return r.name == name; });
  if (n == 0) return error{errc::not_found, "no token named \"" + name + "\""};
  return save(std::move(*all));
}

status token_store::end_cookie(const std::string& value) {
  if (value.rfind(prefix_of(credential_kind::cookie), 0) != 0) return {};
  auto h = sha256_hex(value);
  std::lock_guard lock(mu_);
  file_lock across(path_);
  auto all = load();
  if (!all) return all.err();
  auto n = std::erase_if(*all, [&](const token_record& r) {
    return r.kind == credential_kind::cookie && r.sha256 == h;
  });
  if (n == 0) return {};
  return save(std::move(*all));
}

result<std::vector<token_record>> token_store::list() const {
  std::lock_guard lock(mu_);
  auto all = load();
  if (!all) return all;
  auto now = now_unix_ms();
  std::erase_if(*all, [&](const token_record& r) { return expired(r, now); });
  return all;
}

std::optional<token_record> token_store::find(const std::string& secret,
                                              credential_kind kind) const {
  auto prefix = std::string(prefix_of(kind));
  if (secret.size() != prefix.size() + 43 || secret.rfind(prefix, 0) != 0) return std::nullopt;
  auto h = sha256_hex(secret);
  std::lock_guard lock(mu_);
  auto all = load();
  if (!all) return std::nullopt;
  auto now = now_unix_ms();
  for (const auto& r : *all)
    if (r.kind == kind && !expired(r, now) &&
        CRYPTO_memcmp(r.sha256.data(), h.data(), h.size()) == 0)
      return r;
  return std::nullopt;
}

std::optional<token_record> token_store::verify(const std::string& token) const {
  return find(token, credential_kind::token);
}

std::optional<token_record> token_store::verify_cookie(const std::string& value) const {
  return find(value, credential_kind::cookie);
}

}  // namespace berth::gateway
