#include "berth/setup/cache.hpp"

#include "berth/setup/environment.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <tuple>

namespace berth::setup {
namespace sfs = std::filesystem;

namespace {

constexpr const char* npm = "npm";
constexpr std::uint64_t max_entry_bytes = 1ULL << 30;  // larger files are never shared

// A file descriptor that closes itself.
struct fd_t {
  int fd = -1;
  fd_t() = default;
  explicit fd_t(int f) : fd(f) {}
  fd_t(const fd_t&) = delete;
  fd_t& operator=(const fd_t&) = delete;
  fd_t(fd_t&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  fd_t& operator=(fd_t&& o) noexcept {
    if (this != &o) {
      if (fd >= 0) ::close(fd);
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~fd_t() {
    if (fd >= 0) ::close(fd);
  }
  explicit operator bool() const { return fd >= 0; }
};

std::optional<std::string> base64_decode(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  unsigned buf = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = val(c);
    if (v < 0) return std::nullopt;
    buf = (buf << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buf >> bits) & 0xff));
    }
  }
  return out;
}

std::string to_hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

// Digest lengths in bytes, for the algorithms npm's integrity strings use.
std::size_t digest_bytes(std::string_view algo) {
  if (algo == "sha512") return 64;
  if (algo == "sha384") return 48;
  if (algo == "sha256") return 32;
  if (algo == "sha1") return 20;
  return 0;
}

bool is_hex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

// Open (and with `create`, make, owned by uid/gid) each directory of `parts` below `base`,
// never following a symlink: a session cannot redirect the node's writes out of its home.
fd_t open_dirs(int base, const std::vector<std::string>& parts, bool create, int uid, int gid) {
  fd_t cur(::dup(base));
  for (const auto& p : parts) {
    int next = ::openat(cur.fd, p.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT && create) {
      if (::mkdirat(cur.fd, p.c_str(), 0755) != 0 && errno != EEXIST) return fd_t();
      next = ::openat(cur.fd, p.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (next >= 0 && uid >= 0)
        (void)::fchown(next, static_cast<uid_t>(uid), static_cast<gid_t>(gid >= 0 ? gid : uid));
    }
    if (next < 0) return fd_t();
    cur = fd_t(next);
  }
  return cur;
}

fd_t open_root(const std::string& path) {
  return fd_t(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

std::optional<std::string> read_small(int dir, const char* name, std::size_t cap) {
  fd_t f(::openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!f) return std::nullopt;
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) > cap)
    return std::nullopt;
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    auto n = ::read(f.fd, text.data() + got, text.size() - got);
    if (n <= 0) return std::nullopt;
    got += static_cast<std::size_t>(n);
  }
  return text;
}

// The hex digest of what `fd` holds (read from the start), or nullopt.
std::optional<std::string> digest_of(int fd, std::string_view algo) {
  const EVP_MD* md = EVP_get_digestbyname(std::string(algo).c_str());
  if (!md) return std::nullopt;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, md, nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    return std::nullopt;
  }
  char buf[1 << 16];
  bool ok = true;
  off_t off = 0;
  for (;;) {
    auto n = ::pread(fd, buf, sizeof buf, off);
    if (n < 0) {
      ok = false;
      break;
    }
    if (n == 0) break;
    off += n;
    if (EVP_DigestUpdate(ctx, buf, static_cast<std::size_t>(n)) != 1) {
      ok = false;
      break;
    }
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (ok) ok = EVP_DigestFinal_ex(ctx, out, &len) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) return std::nullopt;
  return to_hex(std::string_view(reinterpret_cast<const char*>(out), len));
}

// Copy `from` (an open regular file) into `dir`/`name`, created exclusively; owned by uid/gid
// when given, mode `mode`. False on any failure (nothing half-written is left).
bool copy_into(int from, int dir, const std::string& name, mode_t mode, int uid, int gid,
               bool sync) {
  fd_t to(::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!to) return false;
  char buf[1 << 16];
  off_t off = 0;
  bool ok = true;
  for (;;) {
    auto n = ::pread(from, buf, sizeof buf, off);
    if (n < 0) ok = false;
    if (n <= 0) break;
    off += n;
    for (ssize_t w = 0; w < n;) {
      auto k = ::write(to.fd, buf + w, static_cast<std::size_t>(n - w));
      if (k <= 0) {
        ok = false;
        break;
      }
      w += k;
    }
    if (!ok) break;
  }
  if (ok && uid >= 0)
    ok = ::fchown(to.fd, static_cast<uid_t>(uid), static_cast<gid_t>(gid >= 0 ? gid : uid)) == 0;
  if (ok) ok = ::fchmod(to.fd, mode) == 0;
  if (ok && sync) ok = ::fdatasync(to.fd) == 0;
  if (!ok) ::unlinkat(dir, name.c_str(), 0);
  return ok;
}

// Entries of a directory (names only, no dot entries), never following symlinks.
std::vector<std::string> names_in(int dir) {
  std::vector<std::string> out;
  int d = ::dup(dir);
  if (d < 0) return out;
  DIR* dp = ::fdopendir(d);
  if (!dp) {
    ::close(d);
    return out;
  }
  ::rewinddir(dp);
  while (auto* e = ::readdir(dp)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(std::move(n));
  }
  ::closedir(dp);
  return out;
}

// A store-wide lock: promote, evict and prune never run at once (several sessions, and the
// CLI's prune, share one store).
struct store_lock {
  fd_t f;
  explicit store_lock(const std::string& root)
      : f(::open((root + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (f) (void)::flock(f.fd, LOCK_EX);
  }
};

struct entry {
  std::string path;
  std::uint64_t bytes;
  std::int64_t mtime_ns;
  std::string ecosystem;
};

std::vector<entry> all_entries(const std::string& root) {
  std::vector<entry> out;
  std::error_code ec;
  for (sfs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec) || it.depth() != 3) continue;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    auto rel = it->path().lexically_relative(root);
    out.push_back({it->path().string(), static_cast<std::uint64_t>(st.st_size),
                   static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                   rel.begin()->string()});
  }
  return out;
}

pruned evict(const std::string& root, std::uint64_t keep) {
  auto all = all_entries(root);
  std::uint64_t total = 0;
  for (const auto& e : all) total += e.bytes;
  pruned p;
  if (total <= keep) return p;
  std::sort(all.begin(), all.end(),
            [](const entry& a, const entry& b) { return a.mtime_ns < b.mtime_ns; });
  for (const auto& e : all) {
    if (total <= keep) break;
    if (::unlink(e.path.c_str()) != 0) continue;
    total -= e.bytes;
    p.entries++;
    p.bytes += e.bytes;
  }
  return p;
}

// npm's content path below its cache: _cacache/content-v2/<algo>/<hex 0-2>/<hex 2-4>/<rest>.
std::vector<std::string> npm_content_dirs(const pin& p) {
  std::string base = npm_cache_dir;
  std::vector<std::string> parts;
  for (auto part : sfs::path(base)) parts.push_back(part.string());
  for (const char* s : {"_cacache", "content-v2"}) parts.emplace_back(s);
  parts.push_back(p.algorithm);
  parts.push_back(p.hex.substr(0, 2));
  parts.push_back(p.hex.substr(2, 2));
  return parts;
}

}  // namespace

std::vector<pin> npm_pins(std::string_view lockfile) {
  std::vector<pin> out;
  auto doc = json::parse(lockfile);
  if (!doc || !doc->is_object()) return out;
  auto take = [&](const json::value& pkg) {
    if (!pkg.is_object()) return;
    const auto* integ = pkg.find("integrity");
    if (!integ || !integ->is_string()) return;
    std::string_view s = integ->as_string();
    while (!s.empty()) {
      auto sp = s.find(' ');
      auto one = s.substr(0, sp);
      s = sp == std::string_view::npos ? std::string_view() : s.substr(sp + 1);
      auto dash = one.find('-');
      if (dash == std::string_view::npos) continue;
      std::string algo(one.substr(0, dash));
      auto raw = base64_decode(one.substr(dash + 1));
      if (!raw || digest_bytes(algo) == 0 || raw->size() != digest_bytes(algo)) continue;
      out.push_back({algo, to_hex(*raw)});
    }
  };
  // lockfileVersion 2/3: "packages"; 1: nested "dependencies".
  if (const auto* pk = doc->find("packages"); pk && pk->is_object())
    for (const auto& [name, pkg] : pk->as_object()) take(pkg);
  std::function<void(const json::value&)> walk = [&](const json::value& deps) {
    if (!deps.is_object()) return;
    for (const auto& [name, pkg] : deps.as_object()) {
      take(pkg);
      if (const auto* sub = pkg.find("dependencies")) walk(*sub);
    }
  };
  if (!doc->find("packages"))
    if (const auto* deps = doc->find("dependencies")) walk(*deps);
  std::sort(out.begin(), out.end(), [](const pin& a, const pin& b) {
    return std::tie(a.algorithm, a.hex) < std::tie(b.algorithm, b.hex);
  });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const pin& a, const pin& b) {
                          return a.algorithm == b.algorithm && a.hex == b.hex;
                        }),
            out.end());
  return out;
}

cache_store::cache_store(std::string root, std::uint64_t max_bytes, int uid, int gid)
    : root_(std::move(root)), max_bytes_(max_bytes), uid_(uid), gid_(gid) {}

status cache_store::open() const {
  std::error_code ec;
  sfs::create_directories(root_ + "/" + npm, ec);
  if (ec) return error{errc::io_error, "cache: " + root_ + ": " + ec.message()};
  ::chmod(root_.c_str(), 0700);
  return {};
}

json::value cache_store::seed(const std::string& workspace, const std::string& home) const {
  json::value report = json::value::make_object();
  auto ws = open_root(workspace);
  auto hm = open_root(home);
  if (!ws || !hm) return report;
  std::optional<std::string> lock;
  for (const char* f : {"npm-shrinkwrap.json", "package-lock.json"})
    if (!lock) lock = read_small(ws.fd, f, 256ULL << 20);
  if (!lock) return report;
  auto pins = npm_pins(*lock);
  // Linked when the sandbox user is another user than the store's owner (it cannot write a
  // root-owned 0444 file); copied otherwise, so that nothing in a session reaches the store.
  bool link = ::geteuid() == 0 && uid_ > 0;
  std::uint64_t seeded = 0, bytes = 0;
  for (const auto& p : pins) {
    auto src = root_ + "/" + npm + "/" + p.algorithm + "/" + p.hex.substr(0, 2) + "/" + p.hex;
    fd_t in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) continue;
    struct stat st {};
    if (::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    auto dir = open_dirs(hm.fd, npm_content_dirs(p), true, uid_, gid_);
    if (!dir) continue;
    auto leaf = p.hex.substr(4);
    bool done = false;
    if (link)
      done = ::linkat(in.fd, "", dir.fd, leaf.c_str(), AT_EMPTY_PATH) == 0 || errno == EEXIST;
    if (!done) done = copy_into(in.fd, dir.fd, leaf, 0444, uid_, gid_, false) || errno == EEXIST;
    if (!done) continue;
    // Used now: the least recently used entries are evicted first.
    (void)::futimens(in.fd, nullptr);
    seeded++;
    bytes += static_cast<std::uint64_t>(st.st_size);
  }
  json::value n = json::value::make_object();
  n.set("pinned", static_cast<std::int64_t>(pins.size()));
  n.set("seeded", static_cast<std::int64_t>(seeded));
  n.set("seeded_bytes", static_cast<std::int64_t>(bytes));
  report.set(npm, std::move(n));
  return report;
}

void cache_store::promote(const std::string& home, json::value& report) const {
  auto hm = open_root(home);
  if (!hm) return;
  std::vector<std::string> base;
  for (auto part : sfs::path(npm_cache_dir)) base.push_back(part.string());
  base.emplace_back("_cacache");
  base.emplace_back("content-v2");
  auto content = open_dirs(hm.fd, base, false, -1, -1);
  if (!content) return;
  store_lock guard(root_);
  std::uint64_t added = 0, bytes = 0, refused = 0;
  for (const auto& algo : names_in(content.fd)) {
    if (digest_bytes(algo) == 0) continue;
    auto a = open_dirs(content.fd, {algo}, false, -1, -1);
    for (const auto& d1 : a ? names_in(a.fd) : std::vector<std::string>{}) {
      auto x = open_dirs(a.fd, {d1}, false, -1, -1);
      for (const auto& d2 : x ? names_in(x.fd) : std::vector<std::string>{}) {
        auto y = open_dirs(x.fd, {d2}, false, -1, -1);
        for (const auto& rest : y ? names_in(y.fd) : std::vector<std::string>{}) {
          auto hex = d1 + d2 + rest;
          if (d1.size() != 2 || d2.size() != 2 || hex.size() != digest_bytes(algo) * 2 ||
              !is_hex(hex))
            continue;
          auto dir = root_ + "/" + npm + "/" + algo + "/" + hex.substr(0, 2);
          if (::access((dir + "/" + hex).c_str(), F_OK) == 0) continue;  // shared already
          fd_t in(::openat(y.fd, rest.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
          struct stat st {};
          if (!in || ::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode) ||
              static_cast<std::uint64_t>(st.st_size) > max_entry_bytes)
            continue;
          // Verified by the node: a file whose content does not hash to its name is refused.
          auto got = digest_of(in.fd, algo);
          if (!got || *got != hex) {
            refused++;
            continue;
          }
          std::error_code ec;
          sfs::create_directories(dir, ec);
          auto out = open_root(dir);
          if (!out) continue;
          auto tmp = ".tmp-" + hex;
          ::unlinkat(out.fd, tmp.c_str(), 0);
          if (!copy_into(in.fd, out.fd, tmp, 0444, -1, -1, true)) continue;
          if (::renameat(out.fd, tmp.c_str(), out.fd, hex.c_str()) != 0) {
            ::unlinkat(out.fd, tmp.c_str(), 0);
            continue;
          }
          added++;
          bytes += static_cast<std::uint64_t>(st.st_size);
        }
      }
    }
  }
  auto gone = evict(root_, max_bytes_);
  json::value n = report.find(npm) ? *report.find(npm) : json::value::make_object();
  n.set("added", static_cast<std::int64_t>(added));
  n.set("added_bytes", static_cast<std::int64_t>(bytes));
  if (refused) n.set("refused", static_cast<std::int64_t>(refused));
  if (gone.entries) n.set("evicted", static_cast<std::int64_t>(gone.entries));
  report.set(npm, std::move(n));
}

std::vector<cache_usage> cache_store::usage() const {
  std::map<std::string, cache_usage> by;
  by[npm].ecosystem = npm;
  for (const auto& e : all_entries(root_)) {
    auto& u = by[e.ecosystem];
    u.ecosystem = e.ecosystem;
    u.entries++;
    u.bytes += e.bytes;
    auto ms = e.mtime_ns / 1000000;
    u.oldest_ms = u.oldest_ms == 0 ? ms : std::min(u.oldest_ms, ms);
    u.newest_ms = std::max(u.newest_ms, ms);
  }
  std::vector<cache_usage> out;
  for (auto& [k, v] : by) out.push_back(v);
  return out;
}

result<pruned> cache_store::prune(std::uint64_t keep_bytes) const {
  std::error_code ec;
  if (!sfs::is_directory(root_, ec))
    return error{errc::not_found, "cache: " + root_ + " does not exist (no node has used it)"};
  store_lock guard(root_);
  return evict(root_, keep_bytes);
}

}  // namespace berth::setup
