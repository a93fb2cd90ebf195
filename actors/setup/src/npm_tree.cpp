#include "berth/setup/npm_tree.hpp"

#include "store.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/json.hpp"
#include "berth/base/time.hpp"
#include "berth/setup/cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <thread>

namespace berth::setup {
namespace sfs = std::filesystem;

using namespace detail;

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// npm settings under which `npm ci` installs something else than every package of the
// lockfile with its bins (names as npm spells them, '_' read as '-').
const std::set<std::string, std::less<>> tree_changing = {"omit",
                                                          "include",
                                                          "production",
                                                          "only",
                                                          "also",
                                                          "dev",
                                                          "optional",
                                                          "install-strategy",
                                                          "legacy-bundling",
                                                          "global-style",
                                                          "install-links",
                                                          "bin-links",
                                                          "workspace",
                                                          "workspaces",
                                                          "include-workspace-root",
                                                          "os",
                                                          "cpu",
                                                          "libc",
                                                          "global",
                                                          "prefix",
                                                          "link",
                                                          "package-lock",
                                                          "before"};

// Why `config` changes what npm ci installs, or "".
std::string config_conflict(const std::vector<std::string>& config) {
  for (const auto& entry : config) {
    auto line = trim_blanks(entry);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    auto eq = line.find('=');
    auto name = trim_blanks(std::string_view(line).substr(0, eq));
    auto value = eq == std::string::npos ? std::string("true") : trim_blanks(line.substr(eq + 1));
    if (name == "NODE_ENV") {
      if (lower(value) == "production")
        return "NODE_ENV=production: npm ci leaves devDependencies out";
      continue;
    }
    auto key = lower(name);
    if (key.rfind("npm_config_", 0) == 0) key = key.substr(11);
    std::replace(key.begin(), key.end(), '_', '-');
    if (tree_changing.count(key)) return "the npm setting `" + key + "` is in effect";
  }
  return {};
}

// A path segment npm could have written: a package name's part.
bool good_segment(std::string_view s) {
  return !s.empty() && s != "." && s != ".." && s.size() <= 214 &&
         s.find_first_of(std::string_view("\\\0", 2)) == std::string_view::npos;
}

// "node_modules/a/node_modules/@s/b" -> {"node_modules/a/node_modules", "@s/b"}, or nullopt
// when the path is not a chain of node_modules/<name>.
std::optional<std::pair<std::string, std::string>> node_modules_path(std::string_view path) {
  auto parts = split_slash(path);
  std::size_t i = 0;
  std::string dir, name;
  while (i < parts.size()) {
    if (parts[i] != "node_modules" || i + 1 >= parts.size()) return std::nullopt;
    std::string nm = dir.empty() ? "node_modules" : dir + "/" + name + "/node_modules";
    std::string n = parts[i + 1];
    if (!good_segment(n)) return std::nullopt;
    i += 2;
    if (n[0] == '@') {
      if (i >= parts.size() || !good_segment(parts[i])) return std::nullopt;
      n += "/" + parts[i++];
    }
    dir = std::move(nm);
    name = std::move(n);
  }
  if (name.empty()) return std::nullopt;
  return std::make_pair(dir, name);
}

// A bin target as npm resolves it inside its package ("./bin/x.js" -> "bin/x.js"), or "".
std::string bin_target(std::string_view t) {
  std::string out;
  for (const auto& seg : split_slash(t)) {
    if (seg.empty() || seg == ".") continue;
    if (!good_segment(seg)) return {};
    out += (out.empty() ? "" : "/") + seg;
  }
  return out;
}

std::map<std::string, std::string> string_map(const json::value* v) {
  std::map<std::string, std::string> out;
  if (!v || !v->is_object()) return out;
  for (const auto& [k, x] : v->as_object()) out[k] = x.is_string() ? x.as_string() : x.dump();
  return out;
}

}  // namespace

npm_tree plan_npm_tree(std::string_view package_json, std::string_view lockfile,
                       const std::vector<std::string>& config) {
  npm_tree t;
  auto no = [&](std::string why) {
    t.ineligible = std::move(why);
    t.packages.clear();
    t.key.clear();
    return t;
  };
  if (auto why = config_conflict(config); !why.empty()) return no(why);
  auto pkg = json::parse(package_json);
  if (!pkg || !pkg->is_object()) return no("package.json is not a JSON object");
  if (const auto* scripts = pkg->find("scripts"); scripts && scripts->is_object())
    for (const char* s : {"preinstall", "install", "postinstall", "prepublish", "preprepare",
                          "prepare", "postprepare"})
      if (scripts->find(s))
        return no(std::string("package.json has a `") + s + "` script, which npm ci runs");
  for (const char* f : {"workspaces", "bundleDependencies", "bundledDependencies"})
    if (pkg->find(f)) return no(std::string("package.json declares `") + f + "`");

  auto lock = json::parse(lockfile);
  if (!lock || !lock->is_object()) return no("the lockfile is not a JSON object");
  auto version = lock->get_int("lockfileVersion", 0);
  if (version != 2 && version != 3)
    return no("lockfileVersion " + std::to_string(version) +
              ": only versions 2 and 3 list the installed tree");
  const auto* packages = lock->find("packages");
  if (!packages || !packages->is_object()) return no("the lockfile has no `packages`");
  const json::value* root = packages->find("");
  for (const char* f :
       {"dependencies", "devDependencies", "optionalDependencies", "peerDependencies"})
    if (string_map(root ? root->find(f) : nullptr) != string_map(pkg->find(f)))
      return no(std::string("the lockfile is out of sync with package.json (") + f + ")");

  std::set<std::pair<std::string, std::string>> bins_seen;
  std::set<std::string, std::less<>> paths_seen;
  std::string canon = "berth-npm-tree-1\n";
  for (const auto& [path, e] : packages->as_object()) {
    if (path.empty()) continue;
    auto where = node_modules_path(path);
    if (!where) return no("`" + path + "` is not a node_modules path");
    if (!e.is_object()) return no("`" + path + "` is not an object");
    if (!paths_seen.insert(path).second) return no("`" + path + "` is listed twice");
    for (const char* flag : {"link", "inBundle", "hasInstallScript", "extraneous"})
      if (e.get_bool(flag, false))
        return no("`" + path + "` is " +
                  (std::string(flag) == "hasInstallScript" ? std::string("built by install scripts")
                                                           : "marked " + std::string(flag)));
    for (const char* cond : {"os", "cpu", "libc"})
      if (e.find(cond)) return no("`" + path + "` is platform-specific (" + cond + ")");
    if (const auto* r = e.find("resolved")) {
      auto url = r->is_string() ? r->as_string() : std::string();
      if (url.rfind("https://", 0) != 0 && url.rfind("http://", 0) != 0)
        return no("`" + path + "` is not a registry tarball (" + url + ")");
    }
    const auto* integ = e.find("integrity");
    if (!integ || !integ->is_string()) return no("`" + path + "` has no integrity");
    npm_tree::package p;
    p.path = path;
    int best = 0;
    for (const auto& pin : integrity_pins(integ->as_string())) {
      int rank = pin.algorithm == "sha512"   ? 3
                 : pin.algorithm == "sha384" ? 2
                 : pin.algorithm == "sha256" ? 1
                                             : 0;
      if (rank > best) {
        best = rank;
        p.algorithm = pin.algorithm;
        p.hex = pin.hex;
      }
    }
    if (!best) return no("`" + path + "` is pinned by no sha256 or stronger digest");
    if (const auto* bin = e.find("bin")) {
      if (!bin->is_object()) return no("`" + path + "` has a `bin` that is not an object");
      for (const auto& [name, target] : bin->as_object()) {
        auto to = target.is_string() ? bin_target(target.as_string()) : std::string();
        if (!good_segment(name) || name.find('/') != std::string::npos || to.empty())
          return no("`" + path + "` has a bin npm would not link (" + name + ")");
        if (!bins_seen.insert({where->first, name}).second)
          return no("two packages link the bin `" + name + "` in " + where->first);
        p.bins.emplace_back(name, to);
      }
      std::sort(p.bins.begin(), p.bins.end());
    }
    t.packages.push_back(std::move(p));
  }
  if (t.packages.empty()) return no("the lockfile installs no packages");
  std::sort(t.packages.begin(), t.packages.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  for (const auto& p : t.packages) {
    canon += p.path + "\t" + p.algorithm + "-" + p.hex;
    for (const auto& [n, to] : p.bins) canon += "\t" + n + "=" + to;
    canon += "\n";
  }
  t.key = sha256_hex(canon);
  return t;
}

namespace {

// A gzip stream read in exact amounts.
class gz_reader {
 public:
  explicit gz_reader(int fd) : fd_(fd), in_(1 << 16) {
    ok_ = ::inflateInit2(&z_, 15 + 32) == Z_OK;  // +32: gzip or zlib header
  }
  gz_reader(const gz_reader&) = delete;
  gz_reader& operator=(const gz_reader&) = delete;
  ~gz_reader() {
    if (ok_) ::inflateEnd(&z_);
  }

  // Exactly n bytes into `out`; an error message otherwise.
  std::string read(unsigned char* out, std::size_t n) {
    if (!ok_) return "zlib could not start";
    z_.next_out = out;
    z_.avail_out = static_cast<uInt>(n);
    while (z_.avail_out > 0) {
      if (z_.avail_in == 0) {
        auto got = ::pread(fd_, in_.data(), in_.size(), off_);
        if (got < 0) return errno_text(errno);
        if (got == 0) return "the tarball ends early";
        off_ += got;
        z_.next_in = in_.data();
        z_.avail_in = static_cast<uInt>(got);
      }
      int rc = ::inflate(&z_, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        (void)::inflateReset(&z_);  // a second gzip member may follow
        continue;
      }
      if (rc != Z_OK && rc != Z_BUF_ERROR)
        return std::string("not a gzip'd tarball (") + (z_.msg ? z_.msg : "zlib error") + ")";
    }
    return {};
  }

  std::string skip(std::uint64_t n) {
    std::array<unsigned char, 1 << 14> buf{};
    while (n > 0) {
      auto k = static_cast<std::size_t>(std::min<std::uint64_t>(n, buf.size()));
      if (auto e = read(buf.data(), k); !e.empty()) return e;
      n -= k;
    }
    return {};
  }

 private:
  int fd_;
  std::vector<unsigned char> in_;
  z_stream z_{};
  bool ok_ = false;
  off_t off_ = 0;
};

// A tar number: octal (NUL/space padded) or base-256 when the high bit is set.
std::optional<std::uint64_t> tar_number(const unsigned char* f, std::size_t n) {
  if (f[0] & 0x80) {
    std::uint64_t v = f[0] & 0x7f;
    for (std::size_t i = 1; i < n; ++i) {
      if (v >> 56) return std::nullopt;
      v = (v << 8) | f[i];
    }
    return v;
  }
  std::size_t i = 0;
  while (i < n && (f[i] == ' ' || f[i] == 0)) ++i;
  std::uint64_t v = 0;
  bool any = false;
  for (; i < n && f[i] >= '0' && f[i] <= '7'; ++i) {
    if (v >> 60) return std::nullopt;
    v = v * 8 + (f[i] - '0');
    any = true;
  }
  if (i < n && f[i] != ' ' && f[i] != 0) return std::nullopt;
  return any ? std::optional<std::uint64_t>(v) : std::optional<std::uint64_t>(0);
}

std::string field(const unsigned char* f, std::size_t n) {
  return std::string(reinterpret_cast<const char*>(f),
                     ::strnlen(reinterpret_cast<const char*>(f), n));
}

// "path" and "size" of a pax extended header's records ("<len> <key>=<value>\n").
constexpr std::uint64_t no_size = ~std::uint64_t{0};

void pax_records(std::string_view data, std::string& path, std::uint64_t& size) {
  while (!data.empty()) {
    auto sp = data.find(' ');
    if (sp == std::string_view::npos) return;
    std::size_t len = 0;
    for (char c : data.substr(0, sp)) {
      if (c < '0' || c > '9') return;
      len = len * 10 + static_cast<std::size_t>(c - '0');
      if (len > data.size()) return;
    }
    if (len <= sp + 1 || len > data.size()) return;
    auto rec = data.substr(sp + 1, len - sp - 2);  // without the trailing newline
    data = data.substr(len);
    auto eq = rec.find('=');
    if (eq == std::string_view::npos) continue;
    auto key = rec.substr(0, eq);
    auto value = rec.substr(eq + 1);
    if (key == "path") path = std::string(value);
    if (key == "size") {
      std::uint64_t v = 0;
      bool good = !value.empty();
      for (char c : value) good = good && c >= '0' && c <= '9' && !((v = v * 10 + (c - '0')) >> 62);
      if (good) size = v;
    }
  }
}

}  // namespace

status unpack_npm_tarball(int tarball, int dir, std::uint64_t max_bytes, std::uint64_t max_files,
                          unpacked& budget) {
  auto bad = [](const std::string& why) { return error{errc::invalid_argument, why}; };
  gz_reader gz(tarball);
  std::array<unsigned char, 512> h{};
  std::string next_path;
  std::uint64_t next_size = no_size;  // a pax header's size for the next entry
  std::vector<char> buf(1 << 16);
  for (;;) {
    if (auto e = gz.read(h.data(), h.size()); !e.empty()) return bad(e);
    if (std::all_of(h.begin(), h.end(), [](unsigned char c) { return c == 0; })) break;
    auto sum = tar_number(h.data() + 148, 8);
    std::uint64_t usum = 0;
    std::int64_t ssum = 0;
    for (std::size_t i = 0; i < h.size(); ++i) {
      unsigned char c = (i >= 148 && i < 156) ? ' ' : h[i];
      usum += c;
      ssum += static_cast<signed char>(c);
    }
    if (!sum || (*sum != usum && static_cast<std::int64_t>(*sum) != ssum))
      return bad("a tar header's checksum does not match");
    auto size = tar_number(h.data() + 124, 12);
    if (!size) return bad("a tar header has a bad size");
    char type = static_cast<char>(h[156]);
    bool meta = type == 'x' || type == 'L' || type == 'g' || type == 'K';
    std::uint64_t n = !meta && next_size != no_size ? next_size : *size;
    auto pad = (512 - n % 512) % 512;
    if (type == 'x' || type == 'L') {
      if (n > (1u << 20)) return bad("a tar extended header is larger than 1 MiB");
      std::string data(n, '\0');
      if (auto e = gz.read(reinterpret_cast<unsigned char*>(data.data()), n); !e.empty())
        return bad(e);
      if (auto e = gz.skip(pad); !e.empty()) return bad(e);
      if (type == 'x')
        pax_records(data, next_path, next_size);
      else
        next_path = std::string(data.c_str());
      continue;
    }
    std::string name = next_path;
    if (name.empty()) {
      name = field(h.data(), 100);
      if (std::memcmp(h.data() + 257, "ustar", 5) == 0) {
        auto prefix = field(h.data() + 345, 155);
        if (!prefix.empty()) name = prefix + "/" + name;
      }
    }
    next_path.clear();
    next_size = no_size;
    // npm strips the first component ("package/") and skips what would climb out.
    std::vector<std::string> parts;
    bool climbs = false;
    bool first = true;
    for (auto& seg : split_slash(name)) {
      if (first) {
        first = false;
        continue;
      }
      if (seg.empty() || seg == ".") continue;
      if (seg == "..") climbs = true;
      parts.push_back(std::move(seg));
    }
    bool file = type == '0' || type == '\0' || type == '7';
    bool directory = type == '5';
    if (climbs || parts.empty() || (!file && !directory)) {
      // Links, devices, global headers, the package/ directory itself: nothing to write.
      if (auto e = gz.skip(n + pad); !e.empty()) return bad(e);
      continue;
    }
    if (directory) {
      if (!open_dirs(dir, parts, true, -1, -1)) return bad("cannot make " + name);
      if (auto e = gz.skip(n + pad); !e.empty()) return bad(e);
      continue;
    }
    if (budget.files + 1 > max_files)
      return bad("more than " + std::to_string(max_files) + " files");
    if (budget.bytes + n > max_bytes)
      return bad("more than " + std::to_string(max_bytes) + " bytes unpacked");
    auto leaf = parts.back();
    parts.pop_back();
    auto parent = open_dirs(dir, parts, true, -1, -1);
    if (!parent) return bad("cannot make the directory of " + name);
    fd_t out(::openat(parent.fd, leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      0600));
    if (!out && errno == EEXIST && ::unlinkat(parent.fd, leaf.c_str(), 0) == 0)
      out = fd_t(::openat(parent.fd, leaf.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out) return bad("cannot write " + name + ": " + errno_text(errno));
    for (std::uint64_t left = n; left > 0;) {
      auto k = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
      if (auto e = gz.read(reinterpret_cast<unsigned char*>(buf.data()), k); !e.empty())
        return bad(e);
      for (std::size_t w = 0; w < k;) {
        auto got = ::write(out.fd, buf.data() + w, k - w);
        if (got <= 0) return bad("cannot write " + name + ": " + errno_text(errno));
        w += static_cast<std::size_t>(got);
      }
      left -= k;
    }
    if (auto e = gz.skip(pad); !e.empty()) return bad(e);
    auto mode = tar_number(h.data() + 100, 8).value_or(0644);
    if (::fchmod(out.fd, (mode & 0111) ? 0555 : 0444) != 0)
      return bad("cannot set the mode of " + name);
    budget.files++;
    budget.bytes += n;
  }
  return {};
}

// --- the store's installed trees ---

json::value tree_use::to_json() const {
  json::value v = json::value::make_object();
  v.set("state", state);
  if (!reason.empty()) v.set("reason", reason);
  if (!key.empty()) v.set("key", key.substr(0, 16));
  if (packages) v.set("packages", static_cast<std::int64_t>(packages));
  if (files) v.set("files", static_cast<std::int64_t>(files));
  if (bytes) v.set("bytes", static_cast<std::int64_t>(bytes));
  if (state == "restored" || state == "built") v.set("ms", ms);
  return v;
}

namespace {

struct tree_copy {
  bool link;
  int uid, gid;
  std::uint64_t files = 0, bytes = 0;
  std::string failed;

  // Everything below `from` (the store's) into `to` (the workspace's, opened by the node).
  bool copy(int from, int to, const std::string& where) {
    for (const auto& name : names_in(from)) {
      struct stat st {};
      if (::fstatat(from, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return fail(where + name);
      if (S_ISDIR(st.st_mode)) {
        if (::mkdirat(to, name.c_str(), 0755) != 0) return fail(where + name);
        fd_t src(::openat(from, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        fd_t dst(::openat(to, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!src || !dst) return fail(where + name);
        // Not owned by the user, a copied directory is read-only to it: npm then rebuilds it.
        if (uid >= 0) (void)::fchown(dst.fd, static_cast<uid_t>(uid), static_cast<gid_t>(gid));
        if (!copy(src.fd, dst.fd, where + name + "/")) return false;
      } else if (S_ISLNK(st.st_mode)) {
        std::string target(4096, '\0');
        auto n = ::readlinkat(from, name.c_str(), target.data(), target.size());
        if (n <= 0) return fail(where + name);
        target.resize(static_cast<std::size_t>(n));
        if (::symlinkat(target.c_str(), to, name.c_str()) != 0) return fail(where + name);
        if (uid >= 0)  // a link's owner matters only to who may remove it
          (void)::fchownat(to, name.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid),
                           AT_SYMLINK_NOFOLLOW);
      } else if (S_ISREG(st.st_mode)) {
        bool exec = (st.st_mode & 0111) != 0;
        // Executables are the session's own copies: npm may chmod a bin it links again.
        bool done = link && !exec && ::linkat(from, name.c_str(), to, name.c_str(), 0) == 0;
        if (!done) {
          fd_t in(::openat(from, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
          done = in && copy_into(in.fd, to, name, exec ? 0755 : 0644, uid, gid, false);
        }
        if (!done) return fail(where + name);
        files++;
        bytes += static_cast<std::uint64_t>(st.st_size);
      }
    }
    return true;
  }

  bool fail(const std::string& what) {
    failed = what + ": " + errno_text(errno);
    return false;
  }
};

std::int64_t ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               t0)
      .count();
}

// A tree_use for `t`: state "ineligible" with the reason, or no state yet.
tree_use use_of(const npm_tree& t) {
  tree_use u;
  u.key = t.key;
  if (!t.ineligible.empty()) {
    u.state = "ineligible";
    u.reason = t.ineligible;
  }
  return u;
}

}  // namespace

// --- building trees in the background ---

cache_store::~cache_store() {
  std::unique_ptr<tree_worker> w;
  {
    std::lock_guard lock(worker_mu_);
    w = std::move(worker_);
  }
  if (!w) return;
  {
    std::lock_guard lock(w->mu);
    w->stop = true;
    w->queue.clear();
  }
  w->cv.notify_all();
  if (w->thread.joinable()) w->thread.join();
}

tree_use cache_store::build_npm_tree_later(const npm_tree& t) const {
  auto u = use_of(t);
  if (!u.state.empty()) return u;
  struct stat st {};
  if (tree_record(root_ + "/" + npm_tree_dir + "/" + t.key, &st)) {
    u.state = "present";
    return u;
  }
  tree_worker* w = nullptr;
  {
    std::lock_guard lock(worker_mu_);
    auto& slot = worker_;
    if (!slot) {
      slot = std::make_unique<tree_worker>();
      auto* raw = slot.get();
      raw->thread = std::thread([this, raw] {
        std::unique_lock lock(raw->mu);
        for (;;) {
          raw->cv.wait(lock, [&] { return raw->stop || !raw->queue.empty(); });
          if (raw->stop) return;
          auto next = std::move(raw->queue.front());
          raw->queue.pop_front();
          lock.unlock();
          // A background build that fails leaves no tree: the next session runs npm ci and
          // reports that in its setup.done, where a user sees it.
          (void)build_npm_tree(next, &raw->stop);
          lock.lock();
          raw->pending.erase(next.key);
          raw->cv.notify_all();
        }
      });
    }
    w = slot.get();
  }
  {
    std::lock_guard lock(w->mu);
    if (w->pending.insert(t.key).second) w->queue.push_back(t);
  }
  w->cv.notify_all();
  u.state = "building";
  u.packages = t.packages.size();
  return u;
}

tree_use cache_store::restore_npm_tree(const npm_tree& t, const std::string& workspace) const {
  auto t0 = std::chrono::steady_clock::now();
  auto u = use_of(t);
  if (!u.state.empty()) return u;
  {
    // A build of this tree in progress (the previous session's): worth waiting for.
    std::unique_lock guard(worker_mu_);
    if (auto* w = worker_.get()) {
      guard.unlock();
      std::unique_lock lock(w->mu);
      w->cv.wait_for(lock, tree_wait, [&] { return w->stop || !w->pending.count(t.key); });
    }
  }
  auto dir = root_ + "/" + npm_tree_dir + "/" + t.key;
  struct stat st {};
  auto rec = tree_record(dir, &st);
  fd_t src(
      ::open((dir + "/node_modules").c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!rec || !src) {
    u.state = "absent";
    return u;
  }
  auto ws = open_root(workspace);
  if (!ws) {
    u.state = "failed";
    u.reason = workspace + ": " + errno_text(errno);
    return u;
  }
  // A repository that ships node_modules, or a step that made one: npm ci decides.
  if (::mkdirat(ws.fd, "node_modules", 0755) != 0) {
    u.state = "ineligible";
    u.reason = errno == EEXIST ? "the workspace has a node_modules already"
                               : std::string("node_modules: ") + errno_text(errno);
    return u;
  }
  fd_t dst(::openat(ws.fd, "node_modules", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  tree_copy c{::geteuid() == 0 && uid_ > 0, uid_, gid_ >= 0 ? gid_ : uid_};
  // Left root's, node_modules is read-only to the user: npm then replaces it (slower, correct).
  if (dst && uid_ >= 0) (void)::fchown(dst.fd, static_cast<uid_t>(uid_), static_cast<gid_t>(c.gid));
  if (!dst || !c.copy(src.fd, dst.fd, "node_modules/")) {
    if (c.failed.empty()) c.failed = std::string("node_modules: ") + errno_text(errno);
    remove_at(ws.fd, "node_modules");
    u.state = "failed";
    u.reason = "restoring " + c.failed;
    return u;
  }
  if (c.files != static_cast<std::uint64_t>(rec->get_int("files")) ||
      c.bytes != static_cast<std::uint64_t>(rec->get_int("bytes"))) {
    // Not what was built (files lost in a crash): dropped, and npm ci runs.
    remove_at(ws.fd, "node_modules");
    store_lock guard(root_);
    // A tree that cannot be removed now is damaged either way; eviction retries it later.
    (void)remove_entry({dir, 0, 0, npm_tree_dir, true});
    u.state = "failed";
    u.reason = "the stored tree is damaged (" + std::to_string(c.files) + " files, " +
               std::to_string(c.bytes) + " bytes; built with " +
               std::to_string(rec->get_int("files")) + " and " +
               std::to_string(rec->get_int("bytes")) + "): removed";
    return u;
  }
  // Used now: the least recently used trees are evicted first.
  // Only an eviction hint: a failed touch makes this tree look older, nothing more.
  (void)::utimensat(AT_FDCWD, (dir + "/" + tree_complete).c_str(), nullptr, AT_SYMLINK_NOFOLLOW);
  u.state = "restored";
  u.packages = static_cast<std::uint64_t>(rec->get_int("packages"));
  u.files = c.files;
  u.bytes = c.bytes;
  u.ms = ms_since(t0);
  return u;
}

tree_use cache_store::build_npm_tree(const npm_tree& t, const std::atomic<bool>* cancel) const {
  auto t0 = std::chrono::steady_clock::now();
  auto u = use_of(t);
  if (!u.state.empty()) return u;
  auto base = root_ + "/" + npm_tree_dir;
  auto final_dir = base + "/" + t.key;
  struct stat st {};
  if (tree_record(final_dir, &st)) {
    u.state = "present";
    return u;
  }
  static std::atomic<std::uint64_t> builds{0};
  auto tmp = base + "/.tmp-" + t.key.substr(0, 16) + "-" + std::to_string(::getpid()) + "-" +
             std::to_string(builds++);
  auto failed = [&](std::string why) {
    fs::remove_tree(tmp);  // the node's own directory: no session can reach it
    u.state = "failed";
    u.reason = std::move(why);
    return u;
  };
  std::error_code ec;
  sfs::create_directories(tmp + "/node_modules", ec);
  if (ec) return failed(tmp + ": " + ec.message());
  auto top = open_root(tmp);
  if (!top) return failed(tmp + ": " + errno_text(errno));
  unpacked used;
  for (const auto& p : t.packages) {
    if (cancel && cancel->load()) return failed("cancelled: the node is stopping");
    auto src = root_ + "/" + npm + "/" + p.algorithm + "/" + p.hex.substr(0, 2) + "/" + p.hex;
    fd_t in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) return failed("the store has no tarball for " + p.path);
    std::vector<std::string> parts;
    for (const auto& part : sfs::path(p.path)) parts.push_back(part.string());
    auto into = open_dirs(top.fd, parts, true, -1, -1);
    if (!into) return failed("cannot make " + p.path);
    if (auto st2 = unpack_npm_tarball(in.fd, into.fd, max_tree_bytes, max_tree_files, used); !st2)
      return failed(p.path + ": " + st2.err().message);
  }
  // The bins, linked as npm links them: <node_modules>/.bin/<name> -> ../<package>/<target>.
  for (const auto& p : t.packages) {
    if (p.bins.empty()) continue;
    auto path = sfs::path(p.path);
    auto name = path.filename().string();
    auto nm = path.parent_path();
    if (!name.empty() && nm.filename().string().rfind('@', 0) == 0) {
      name = nm.filename().string() + "/" + name;
      nm = nm.parent_path();
    }
    std::vector<std::string> bin_dir;
    for (const auto& part : nm) bin_dir.push_back(part.string());
    bin_dir.emplace_back(".bin");
    auto bins = open_dirs(top.fd, bin_dir, true, -1, -1);
    if (!bins) return failed("cannot make " + nm.string() + "/.bin");
    for (const auto& [bin, target] : p.bins) {
      auto file = tmp + "/" + p.path + "/" + target;
      struct stat fst {};
      if (::lstat(file.c_str(), &fst) != 0 || !S_ISREG(fst.st_mode)) continue;  // as npm: none
      ::chmod(file.c_str(), 0555);
      ::unlinkat(bins.fd, bin.c_str(), 0);
      if (::symlinkat(("../" + name + "/" + target).c_str(), bins.fd, bin.c_str()) != 0)
        return failed("cannot link the bin " + bin + " of " + p.path);
    }
  }
  // What restore must find again: regular files as they are on disk (a tarball may list one
  // file twice).
  std::uint64_t files = 0, bytes = 0;
  std::function<void(int)> count = [&](int d) {
    for (const auto& name : names_in(d)) {
      struct stat fst {};
      if (::fstatat(d, name.c_str(), &fst, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISREG(fst.st_mode)) {
        files++;
        bytes += static_cast<std::uint64_t>(fst.st_size);
      } else if (S_ISDIR(fst.st_mode)) {
        fd_t sub(::openat(d, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub) count(sub.fd);
      }
    }
  };
  if (auto nm = open_dirs(top.fd, {"node_modules"}, false, -1, -1)) count(nm.fd);
  json::value rec = json::value::make_object();
  rec.set("key", t.key);
  rec.set("packages", static_cast<std::int64_t>(t.packages.size()));
  rec.set("files", static_cast<std::int64_t>(files));
  rec.set("bytes", static_cast<std::int64_t>(bytes));
  rec.set("built", now_unix_ms());
  // Not synced (that would flush the whole filesystem on every first setup): a crash may leave
  // files empty, which restore detects by the count and bytes recorded here, and drops.
  if (auto w = fs::write_file_atomic(tmp + "/" + tree_complete, rec.dump()); !w)
    return failed(w.err().message);
  store_lock guard(root_);
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    fs::remove_tree(tmp);  // another session built it first
    u.state = "present";
    return u;
  }
  // Over the cap, the store shrinks on the next promotion or prune; the tree stands.
  (void)evict(root_, max_bytes_);
  u.state = "built";
  u.packages = t.packages.size();
  u.files = files;
  u.bytes = bytes;
  u.ms = ms_since(t0);
  return u;
}

}  // namespace berth::setup
