#include "berth/gateway/tokens.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/json.hpp"
#include "berth/base/time.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>

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

token_store::token_store(std::string path) : path_(std::move(path)) {}

result<std::vector<token_record>> token_store::load() const {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::vector<token_record>{};
    return error{errc::io_error, "tokens file " + path_ + ": " + std::strerror(errno)};
  }
  auto mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (mtime == cached_mtime_ns_ && st.st_size == cached_size_) return cached_;
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
    r.sha256 = t.get_string("sha256");
    r.created = t.get_string("created");
    if (!good_name(r.name) || !sc || r.sha256.size() != 64)
      return error{errc::corrupt,
                   "tokens file " + path_ + ": a malformed entry (" + t.dump() + ")"};
    r.scope = *sc;
    all.push_back(std::move(r));
  }
  cached_ = all;
  cached_mtime_ns_ = mtime;
  cached_size_ = st.st_size;
  return all;
}

status token_store::save(const std::vector<token_record>& all) const {
  json::value list = json::value::make_array();
  for (const auto& r : all) {
    json::value t = json::value::make_object();
    t.set("name", r.name);
    t.set("scope", scope_name(r.scope));
    t.set("sha256", r.sha256);
    t.set("created", r.created);
    list.push(std::move(t));
  }
  json::value doc = json::value::make_object();
  doc.set("tokens", std::move(list));
  std::error_code ec;
  auto dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  return fs::write_file_atomic(path_, doc.dump() + "\n", 0600);
}

result<std::string> token_store::create(const std::string& name, scope s) {
  if (!good_name(name))
    return error{errc::invalid_argument,
                 "name: \"" + name + "\" must be 1 to 64 characters of [A-Za-z0-9_.-]"};
  std::lock_guard lock(mu_);
  auto all = load();
  if (!all) return all.err();
  for (const auto& r : *all)
    if (r.name == name)
      return error{errc::conflict, "name: a token named \"" + name +
                                       "\" exists; revoke it first (berth token revoke " + name +
                                       ")"};
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1)
    return error{errc::internal, "no random bytes for a token (OpenSSL RAND_bytes failed)"};
  auto token = "berth_" + base64url(raw, sizeof raw);
  all->push_back({name, s, sha256_hex(token), format_timestamp(now_unix_ms())});
  BERTH_TRY(save(*all));
  return token;
}

status token_store::revoke(const std::string& name) {
  std::lock_guard lock(mu_);
  auto all = load();
  if (!all) return all.err();
  auto it =
      std::find_if(all->begin(), all->end(), [&](const token_record& r) { return r.name == name; });
  if (it == all->end()) return error{errc::not_found, "no token named \"" + name + "\""};
  all->erase(it);
  return save(*all);
}

result<std::vector<token_record>> token_store::list() const {
  std::lock_guard lock(mu_);
  return load();
}

std::optional<token_record> token_store::verify(const std::string& token) const {
  if (token.size() != 49 || token.rfind("berth_", 0) != 0) return std::nullopt;
  auto h = sha256_hex(token);
  std::lock_guard lock(mu_);
  auto all = load();
  if (!all) return std::nullopt;
  for (const auto& r : *all)
    if (CRYPTO_memcmp(r.sha256.data(), h.data(), h.size()) == 0) return r;
  return std::nullopt;
}

}  // namespace berth::gateway
