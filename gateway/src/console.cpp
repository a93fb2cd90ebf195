// The console's files: the ones compiled in (gateway/console/), or with options::console_dir a
// folder on disk (to work on the console without rebuilding). Either way a request only ever
// reaches a file of that set: no "..", no dot files, nothing a symlink leads out to.

#include "internal.hpp"

#include "berth/base/fs.hpp"

#include <climits>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <utility>

namespace berth::gateway {

namespace console_assets {
extern const std::pair<std::string_view, std::string_view> embedded_files[];
}  // namespace console_assets

namespace {

const char* content_type(const std::string& path) {
  auto dot = path.rfind('.');
  auto ext = dot == std::string::npos ? std::string() : path.substr(dot + 1);
  if (ext == "html") return "text/html; charset=utf-8";
  if (ext == "js" || ext == "mjs") return "text/javascript; charset=utf-8";
  if (ext == "css") return "text/css; charset=utf-8";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "png") return "image/png";
  if (ext == "ico") return "image/x-icon";
  if (ext == "json") return "application/json";
  if (ext == "txt" || ext == "md") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

// Every segment a plain name: not empty, not "." or "..", not hidden, no backslash.
bool plain(const std::string& path) {
  if (path.empty() || path[0] != '/') return false;
  std::size_t at = 1;
  while (at <= path.size()) {
    auto slash = path.find('/', at);
    if (slash == std::string::npos) slash = path.size();
    auto seg = std::string_view(path).substr(at, slash - at);
    if (seg.empty() || seg[0] == '.' || seg.find('\\') != std::string_view::npos ||
        seg.find('\0') != std::string_view::npos)
      return false;
    at = slash + 1;
  }
  return true;
}

}  // namespace

status server::impl::load_console() {
  if (opts.console_dir.empty()) {
    for (const auto* f = console_assets::embedded_files; !f->first.empty(); ++f)
      console.emplace(std::string(f->first), std::string(f->second));
    return {};
  }
  char root[PATH_MAX];
  if (!::realpath(opts.console_dir.c_str(), root))
    return error{errc::invalid_argument,
                 "gateway.console_dir: " + opts.console_dir + ": " + errno_text(errno)};
  std::error_code ec;
  if (!std::filesystem::exists(std::string(root) + "/index.html", ec))
    return error{errc::invalid_argument,
                 "gateway.console_dir: " + opts.console_dir + " has no index.html"};
  console_root = root;
  return {};
}

std::optional<reply> server::impl::console_file(const std::string& path) const {
  auto p = path == "/" ? std::string("/index.html") : path;
  if (!plain(p)) return std::nullopt;
  std::string body;
  if (console_root.empty()) {
    auto it = console.find(p);
    if (it == console.end()) return std::nullopt;
    body = it->second;
  } else {
    // On disk: the resolved file must still be inside the root (a symlink out is not served).
    char real[PATH_MAX];
    auto want = console_root + p;
    if (!::realpath(want.c_str(), real)) return std::nullopt;
    std::string r(real);
    if (r.rfind(console_root + "/", 0) != 0) return std::nullopt;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(r, ec)) return std::nullopt;
    if (std::filesystem::file_size(r, ec) > (16u << 20)) return std::nullopt;
    auto text = fs::read_file(r);
    if (!text) return std::nullopt;
    body = std::move(*text);
  }
  reply out;
  out.body = std::move(body);
  out.content_type = content_type(p);
  out.headers.emplace_back("Content-Security-Policy",
                           "default-src 'self'; img-src 'self' data:; style-src 'self' "
                           "'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; "
                           "form-action 'self'");
  out.headers.emplace_back("X-Frame-Options", "DENY");
  out.headers.emplace_back("Referrer-Policy", "no-referrer");
  return out;
}

}  // namespace berth::gateway
