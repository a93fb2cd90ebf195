// The store's share for Go: module zips and go.mod files named by the h1 hash that go.sum
// gives them. The node computes that hash itself (Go's dirhash: the sha256 of each file of the
// zip, summarised), so the store only ever holds what some go.sum pins; a session is served
// through a file:// GOPROXY in its home that holds exactly what its own go.sum pins, and the go
// command checks every file against go.sum again.

#include "store.hpp"

#include "berth/setup/cache.hpp"
#include "berth/setup/environment.hpp"

#include <openssl/evp.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

namespace berth::setup {

using namespace detail;

namespace {

constexpr std::uint64_t max_zip_bytes = 500ULL << 20;  // Go's own limit for a module zip
constexpr std::uint64_t max_zip_files = 100000;

std::uint32_t le16(const unsigned char* p) {
  return p[0] | (p[1] << 8);
}
std::uint32_t le32(const unsigned char* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

bool read_at(int fd, std::uint64_t off, void* buf, std::size_t n) {
  auto* out = static_cast<unsigned char*>(buf);
  std::size_t got = 0;
  while (got < n) {
    auto k = ::pread(fd, out + got, n - got, static_cast<off_t>(off + got));
    if (k <= 0) return false;
    got += static_cast<std::size_t>(k);
  }
  return true;
}

// Incremental sha256 over a file's content.
class sha256_ctx {
 public:
  sha256_ctx() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  sha256_ctx(const sha256_ctx&) = delete;
  sha256_ctx& operator=(const sha256_ctx&) = delete;
  ~sha256_ctx() { EVP_MD_CTX_free(ctx_); }
  void update(const void* p, std::size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx_, out, &len);
    return to_hex(std::string_view(reinterpret_cast<const char*>(out), len));
  }

 private:
  EVP_MD_CTX* ctx_;
};

// The sha256 hex of one zip member's uncompressed content, checked against its CRC and size.
std::string member_digest(int fd, std::uint64_t data_at, std::uint64_t csize, std::uint64_t usize,
                          unsigned method, std::uint32_t crc, std::string& err) {
  sha256_ctx h;
  std::uint32_t c = ::crc32(0, nullptr, 0);
  std::vector<unsigned char> in(1 << 16), out(1 << 16);
  std::uint64_t produced = 0;
  if (method == 0) {
    if (csize != usize) return err = "a stored member's sizes differ", "";
    for (std::uint64_t at = 0; at < csize;) {
      auto k = static_cast<std::size_t>(std::min<std::uint64_t>(csize - at, in.size()));
      if (!read_at(fd, data_at + at, in.data(), k)) return err = "the zip ends early", "";
      h.update(in.data(), k);
      c = ::crc32(c, in.data(), static_cast<uInt>(k));
      at += k;
    }
    produced = csize;
  } else {
    z_stream z{};
    if (::inflateInit2(&z, -MAX_WBITS) != Z_OK) return err = "zlib could not start", "";
    std::uint64_t at = 0;
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
      if (z.avail_in == 0) {
        auto k = static_cast<std::size_t>(std::min<std::uint64_t>(csize - at, in.size()));
        if (k == 0 || !read_at(fd, data_at + at, in.data(), k)) break;
        at += k;
        z.next_in = in.data();
        z.avail_in = static_cast<uInt>(k);
      }
      z.next_out = out.data();
      z.avail_out = static_cast<uInt>(out.size());
      rc = ::inflate(&z, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END) break;
      auto n = out.size() - z.avail_out;
      produced += n;
      if (produced > usize) break;
      h.update(out.data(), n);
      c = ::crc32(c, out.data(), static_cast<uInt>(n));
    }
    ::inflateEnd(&z);
    if (rc != Z_STREAM_END) return err = "a member does not inflate", "";
  }
  if (produced != usize) return err = "a member's size is not what the zip says", "";
  if (c != crc) return err = "a member's CRC does not match", "";
  return h.hex();
}

bool good_path_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
         c == '~' || c == '/' || c == '+' || c == '!';
}

// A module path or version as the go command writes them in go.sum; nullopt for anything that
// could name a path outside the proxy directory.
std::optional<std::string> escaped(std::string_view s) {
  if (s.empty() || s.size() > 400 || s.front() == '/' || s.back() == '/') return std::nullopt;
  std::string out;
  std::size_t seg = 0;
  for (std::size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == '/') {
      auto part = s.substr(seg, i - seg);
      if (part.empty() || part == "." || part == ".." || part == "@v") return std::nullopt;
      seg = i + 1;
      if (i == s.size()) break;
    }
    char c = s[i];
    if (!good_path_char(c) || c == '!') return std::nullopt;
    if (c >= 'A' && c <= 'Z') {
      out += '!';
      out += static_cast<char>(c - 'A' + 'a');
    } else {
      out += c;
    }
  }
  return out;
}

std::string store_name(const std::string& hex, const char* ext) {
  return hex + ext;
}

}  // namespace

result<std::string> go_zip_hash(int fd) {
  auto bad = [](const std::string& why) { return error{errc::invalid_argument, why}; };
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return bad("not a regular file");
  auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < 22 || size > max_zip_bytes) return bad("not a module zip (size)");
  // The end of central directory record: within the last 64 KiB + 22 bytes.
  auto tail_len = static_cast<std::size_t>(std::min<std::uint64_t>(size, 65557));
  std::vector<unsigned char> tail(tail_len);
  if (!read_at(fd, size - tail_len, tail.data(), tail_len)) return bad("cannot read the zip");
  std::size_t eocd = std::string::npos;
  for (std::size_t i = tail_len - 22 + 1; i-- > 0;)
    if (le32(&tail[i]) == 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd == std::string::npos) return bad("not a zip (no end of central directory)");
  std::uint32_t entries = le16(&tail[eocd + 10]);
  std::uint64_t cd_size = le32(&tail[eocd + 12]), cd_at = le32(&tail[eocd + 16]);
  if (entries == 0xffff || cd_at == 0xffffffff) return bad("zip64 module zips are not shared");
  if (entries > max_zip_files || cd_at + cd_size > size) return bad("a bad central directory");
  std::vector<unsigned char> cd(cd_size);
  if (!read_at(fd, cd_at, cd.data(), cd.size())) return bad("cannot read the central directory");
  std::map<std::string, std::string> digests;  // sorted by name, as Go's Hash1 sorts
  std::uint64_t total = 0;
  std::size_t p = 0;
  for (std::uint32_t e = 0; e < entries; ++e) {
    if (p + 46 > cd.size() || le32(&cd[p]) != 0x02014b50) return bad("a bad central directory");
    unsigned flags = le16(&cd[p + 8]), method = le16(&cd[p + 10]);
    std::uint32_t crc = le32(&cd[p + 16]);
    std::uint64_t csize = le32(&cd[p + 20]), usize = le32(&cd[p + 24]);
    std::size_t nlen = le16(&cd[p + 28]), elen = le16(&cd[p + 30]), clen = le16(&cd[p + 32]);
    std::uint64_t local = le32(&cd[p + 42]);
    if (p + 46 + nlen > cd.size()) return bad("a bad central directory");
    std::string name(reinterpret_cast<const char*>(&cd[p + 46]), nlen);
    p += 46 + nlen + elen + clen;
    if (flags & 1) return bad("an encrypted member");
    if (method != 0 && method != 8)
      return bad("a member compressed with method " + std::to_string(method));
    if (name.find('\n') != std::string::npos) return bad("a member name holds a newline");
    if (digests.count(name)) return bad("a member is listed twice: " + name);
    total += usize;
    if (total > max_zip_bytes) return bad("more than 500 MiB unpacked");
    unsigned char lh[30];
    if (local + 30 > size || !read_at(fd, local, lh, sizeof lh) || le32(lh) != 0x04034b50)
      return bad("a bad local header");
    auto data_at = local + 30 + le16(&lh[26]) + le16(&lh[28]);
    if (data_at + csize > size) return bad("a member runs past the end");
    std::string err;
    auto d = member_digest(fd, data_at, csize, usize, method, crc, err);
    if (d.empty()) return bad(err + " (" + name + ")");
    digests[name] = d;
  }
  std::string summary;
  for (const auto& [name, d] : digests) summary += d + "  " + name + "\n";
  return sha256_hex(summary);
}

result<std::string> go_mod_hash(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (16 << 20))
    return error{errc::invalid_argument, "not a go.mod file"};
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  if (!read_at(fd, 0, text.data(), text.size()))
    return error{errc::io_error, "cannot read the go.mod file"};
  return sha256_hex(sha256_hex(text) + "  go.mod\n");
}

std::vector<go_pin> parse_go_sum(std::string_view text) {
  std::map<std::pair<std::string, std::string>, go_pin> by;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    std::istringstream w(line);
    std::string mod, ver, hash;
    if (!(w >> mod >> ver >> hash) || hash.rfind("h1:", 0) != 0) continue;
    bool mod_only = ver.size() > 7 && ver.compare(ver.size() - 7, 7, "/go.mod") == 0;
    if (mod_only) ver.resize(ver.size() - 7);
    if (!escaped(mod) || !escaped(ver) || ver.find('/') != std::string::npos) continue;
    auto raw = base64_decode(hash.substr(3));
    if (!raw || raw->size() != 32) continue;
    auto& p = by[{mod, ver}];
    p.module = mod;
    p.version = ver;
    (mod_only ? p.mod_hex : p.zip_hex) = to_hex(*raw);
  }
  std::vector<go_pin> out;
  out.reserve(by.size());
  for (auto& [k, v] : by) out.push_back(std::move(v));
  return out;
}

json::value cache_store::seed_go(const std::vector<go_pin>& pins, const std::string& home) const {
  json::value n = json::value::make_object();
  std::int64_t zips = 0, mods = 0;
  for (const auto& p : pins) zips += p.zip_hex.empty() ? 0 : 1;
  n.set("pinned", zips);
  auto hm = open_root(home);
  if (!hm) return n;
  bool link = ::geteuid() == 0 && uid_ > 0;
  std::uint64_t bytes = 0;
  std::int64_t seeded = 0;
  for (const auto& p : pins) {
    auto mod_esc = *escaped(p.module), ver_esc = *escaped(p.version);
    fd_t dir;
    auto share = [&](const std::string& hex, const char* ext) {
      if (hex.empty()) return false;
      auto src = root_ + "/" + go + "/h1/" + hex.substr(0, 2) + "/" + store_name(hex, ext);
      fd_t in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      struct stat st {};
      if (!in || ::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
      if (!dir) {
        auto parts = split_slash(std::string(go_proxy_dir) + "/" + mod_esc);
        parts.emplace_back("@v");
        dir = open_dirs(hm.fd, parts, true, uid_, gid_);
        if (!dir) return false;
      }
      if (!share_file(in.fd, dir.fd, ver_esc + ext, link, uid_, gid_)) return false;
      bytes += static_cast<std::uint64_t>(st.st_size);
      return true;
    };
    bool has_mod = share(p.mod_hex, ".mod");
    bool has_zip = has_mod && share(p.zip_hex, ".zip");
    if (!has_mod) continue;
    mods++;
    seeded += has_zip ? 1 : 0;
    // The version's .info is no content of the module: the node writes it.
    auto info = "{\"Version\":\"" + p.version + "\"}";
    auto name = ver_esc + ".info";
    fd_t f(
        ::openat(dir.fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444));
    if (f) {
      // A short .info would make go refuse the version: without one it downloads it instead.
      if (::write(f.fd, info.data(), info.size()) != static_cast<ssize_t>(info.size())) {
        ::unlinkat(dir.fd, name.c_str(), 0);
        continue;
      }
      // Owned by root it is still readable (0444): the sandbox user only cannot replace it.
      if (uid_ >= 0)
        (void)::fchown(f.fd, static_cast<uid_t>(uid_), static_cast<gid_t>(gid_ >= 0 ? gid_ : uid_));
    }
  }
  n.set("seeded", seeded);
  n.set("seeded_mods", mods);
  n.set("seeded_bytes", static_cast<std::int64_t>(bytes));
  n.set("complete", zips > 0 && seeded == zips);
  return n;
}

void cache_store::promote_go(const std::vector<go_pin>& pins, const std::string& home,
                             json::value& report) const {
  auto hm = open_root(home);
  if (!hm) return;
  store_lock guard(root_);
  std::int64_t added = 0, refused = 0;
  std::uint64_t bytes = 0;
  for (const auto& p : pins) {
    auto parts =
        split_slash(std::string(go_path_dir) + "/pkg/mod/cache/download/" + *escaped(p.module));
    parts.emplace_back("@v");
    auto dir = open_dirs(hm.fd, parts, false, -1, -1);
    if (!dir) continue;
    for (auto [hex, ext] : {std::pair{p.zip_hex, ".zip"}, std::pair{p.mod_hex, ".mod"}}) {
      if (hex.empty()) continue;
      auto bucket = root_ + "/" + go + "/h1/" + hex.substr(0, 2);
      if (::access((bucket + "/" + store_name(hex, ext)).c_str(), F_OK) == 0) continue;
      auto name = *escaped(p.version) + ext;
      fd_t in(::openat(dir.fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
      if (!in) continue;
      // Verified by the node: the h1 hash go.sum pins, computed from the file itself.
      auto got = std::string(ext) == ".zip" ? go_zip_hash(in.fd) : go_mod_hash(in.fd);
      if (!got || *got != hex) {
        refused++;
        continue;
      }
      struct stat st {};
      if (::fstat(in.fd, &st) != 0) st.st_size = 0;  // only the byte count in the report
      if (!add_file(in.fd, bucket, store_name(hex, ext))) continue;
      added++;
      bytes += static_cast<std::uint64_t>(st.st_size);
    }
  }
  finish_promotion(root_, max_bytes_, report, static_cast<std::uint64_t>(added), bytes,
                   static_cast<std::uint64_t>(refused));
}

}  // namespace berth::setup
