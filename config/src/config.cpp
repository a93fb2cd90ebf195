#include "berth/config/config.hpp"

#include "schema.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/ids.hpp"
#include "berth/base/process.hpp"

#include <toml++/toml.h>

#include <cctype>
#include <functional>
#include <sstream>
#include <variant>

namespace berth::config {
namespace {

using namespace detail;  // NOLINT(google-build-using-namespace): the schema's own types

const char* toml_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date/time";
  }
}

std::string where(const std::string& source, const toml::source_region& r) {
  return source + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
}

// Check bounds and choices of an already-typed value.
status check_value(const key_spec& k, const raw& v, const std::string& at) {
  std::string name = std::string(k.section) + "." + k.key;
  if (k.type == kind::integer) {
    auto i = as<std::int64_t>(v);
    if (i < k.min || i > k.max)
      return error{errc::invalid_argument, at + name + ": " + std::to_string(i) +
                                               " is out of range [" + std::to_string(k.min) + ", " +
                                               std::to_string(k.max) + "]"};
  }
  if (k.type == kind::duration) {
    auto d = as<millis>(v).count();
    if (d < k.min || d > k.max)
      return error{errc::invalid_argument, at + name + ": " + format_duration(millis(d)) +
                                               " is out of range [" +
                                               format_duration(millis(k.min)) + ", " +
                                               format_duration(millis(k.max)) + "]"};
  }
  if (k.type == kind::string && !k.choices.empty()) {
    const auto& s = as<std::string>(v);
    bool found = false;
    std::string list;
    for (const auto& c : k.choices) {
      found = found || c == s;
      list += (list.empty() ? "\"" : ", \"") + c + "\"";
    }
    if (!found)
      return error{errc::invalid_argument, at + name + ": \"" + s + "\" is not one of " + list};
  }
  if (k.section == std::string_view("sandbox") && k.key == std::string_view("env")) {
    for (const auto& e : as<std::vector<std::string>>(v)) {
      auto eq = e.find('=');
      auto var = e.substr(0, eq);
      bool valid =
          eq != std::string::npos && eq > 0 && !std::isdigit(static_cast<unsigned char>(var[0]));
      for (unsigned char c : var) valid = valid && (std::isalnum(c) || c == '_');
      if (!valid)
        return error{errc::invalid_argument,
                     at + name + ": \"" + e + "\" is not NAME=value (NAME: letters, digits, _)"};
      if (var == "HOME" || var.rfind("BERTH_", 0) == 0)
        return error{errc::invalid_argument,
                     at + name + ": " + var +
                         " is set by the node for every command and cannot be configured"};
    }
  }
  if (std::string_view(k.key) == "subject_prefix" ||
      (std::string_view(k.key) == "id" && !as<std::string>(v).empty())) {
    BERTH_TRY(validate_id(as<std::string>(v), at + name));
  }
  return {};
}

result<raw> from_toml(const key_spec& k, const toml::node& n, const std::string& source) {
  std::string at = where(source, n.source()) + ": ";
  std::string name = std::string(k.section) + "." + k.key;
  auto wrong = [&] {
    return error{errc::invalid_argument,
                 at + name + ": expected " + kind_name(k.type) + ", got " + toml_type_name(n)};
  };
  switch (k.type) {
    case kind::string:
      if (!n.is_string()) return wrong();
      return raw(*n.value<std::string>());
    case kind::integer:
      if (!n.is_integer()) return wrong();
      return raw(*n.value<std::int64_t>());
    case kind::boolean:
      if (!n.is_boolean()) return wrong();
      return raw(*n.value<bool>());
    case kind::duration: {
      if (!n.is_string()) return wrong();
      auto d = parse_duration(*n.value<std::string>(), at + name);
      if (!d) return d.err();
      return raw(*d);
    }
    case kind::string_list: {
      if (!n.is_array()) return wrong();
      std::vector<std::string> out;
      std::size_t idx = 0;
      for (const auto& e : *n.as_array()) {
        if (!e.is_string())
          return error{errc::invalid_argument,
                       where(source, e.source()) + ": " + name + "[" + std::to_string(idx) +
                           "]: expected a string, got " + toml_type_name(e)};
        out.push_back(*e.value<std::string>());
        ++idx;
      }
      return raw(std::move(out));
    }
  }
  return wrong();
}

config build_defaults() {
  config c;
  for (const auto& k : schema()) {
    auto tbl = toml::parse(std::string("v = ") + k.default_text);
    auto r = from_toml(k, *tbl.get("v"), "default");
    BERTH_ASSERT(r.ok(), "bad default for " + std::string(k.key));
    k.apply(c, *r);
  }
  return c;
}

// `[[credentials.<provider>]]` entries.
status parse_rules(credentials_section& out, const std::string& provider, const toml::node& n,
                   const std::string& source) {
  std::string name = "credentials." + provider;
  if (!n.is_array_of_tables())
    return error{errc::invalid_argument, where(source, n.source()) + ": " + name + ": expected [[" +
                                             name + "]] tables, got " + toml_type_name(n)};
  std::size_t idx = 0;
  for (const auto& t : *n.as_array()) {
    std::string field = name + "[" + std::to_string(idx++) + "]";
    std::string at = where(source, t.source()) + ": ";
    credential_rule r;
    r.provider = provider;
    r.where = where(source, t.source());
    std::vector<std::string> allowed = {"url_prefix", "username", "api_url"};
    if (provider == "static") allowed.push_back("token_file");
    if (provider == "command") {
      allowed.push_back("run");
      allowed.push_back("revoke");
    }
    if (provider == "github_app") {
      allowed.push_back("app_id");
      allowed.push_back("installation_id");
      allowed.push_back("private_key_file");
    }
    for (auto&& [k, node] : *t.as_table()) {
      // A plain reference: lambdas below use it (clang before 16 cannot capture a binding).
      const toml::node& v = node;
      std::string kat = where(source, k.source()) + ": " + field + "." + std::string(k.str());
      bool ok = false;
      for (const auto& a : allowed) ok = ok || k.str() == a;
      if (!ok) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        return error{errc::invalid_argument, kat + ": unknown key (known: " + list + ")"};
      }
      auto want_string = [&](std::string& dst) -> status {
        if (!v.is_string())
          return error{errc::invalid_argument,
                       kat + ": expected a string, got " + toml_type_name(v)};
        dst = *v.value<std::string>();
        if (dst.empty()) return error{errc::invalid_argument, kat + ": must not be empty"};
        return {};
      };
      auto want_list = [&](std::vector<std::string>& dst) -> status {
        if (!v.is_array())
          return error{errc::invalid_argument,
                       kat + ": expected an array of strings, got " + toml_type_name(v)};
        for (const auto& e : *v.as_array()) {
          if (!e.is_string()) return error{errc::invalid_argument, kat + ": expected strings only"};
          dst.push_back(*e.value<std::string>());
        }
        if (dst.empty() || dst[0].empty() || dst[0][0] != '/')
          return error{errc::invalid_argument,
                       kat + ": the first element must be an absolute program path"};
        return {};
      };
      auto want_id = [&](std::int64_t& dst) -> status {
        if (!v.is_integer() || *v.value<std::int64_t>() <= 0)
          return error{errc::invalid_argument, kat + ": expected a positive integer"};
        dst = *v.value<std::int64_t>();
        return {};
      };
      std::string key(k.str());
      if (key == "url_prefix") BERTH_TRY(want_string(r.url_prefix));
      if (key == "username") BERTH_TRY(want_string(r.username));
      if (key == "api_url") BERTH_TRY(want_string(r.api_url));
      if (key == "token_file") BERTH_TRY(want_string(r.token_file));
      if (key == "private_key_file") BERTH_TRY(want_string(r.private_key_file));
      if (key == "run") BERTH_TRY(want_list(r.run));
      if (key == "revoke") BERTH_TRY(want_list(r.revoke));
      if (key == "app_id") BERTH_TRY(want_id(r.app_id));
      if (key == "installation_id") BERTH_TRY(want_id(r.installation_id));
    }
    auto missing = [&](const char* k) {
      return error{errc::invalid_argument, at + field + "." + k + ": is required"};
    };
    if (r.url_prefix.empty()) return missing("url_prefix");
    if (r.url_prefix.find("://") == std::string::npos)
      return error{errc::invalid_argument,
                   at + field + ".url_prefix: \"" + r.url_prefix +
                       "\" is not a URL prefix such as \"https://git.example.com/acme/\""};
    if (provider == "static" && r.token_file.empty()) return missing("token_file");
    if (provider == "command" && r.run.empty()) return missing("run");
    if (provider == "github_app") {
      if (r.app_id == 0) return missing("app_id");
      if (r.installation_id == 0) return missing("installation_id");
      if (r.private_key_file.empty()) return missing("private_key_file");
      if (r.api_url.empty()) r.api_url = "https://api.github.com";
    }
    for (const auto& other : out.rules)
      if (other.url_prefix == r.url_prefix)
        return error{errc::invalid_argument, at + field + ".url_prefix: \"" + r.url_prefix +
                                                 "\" is already served by " + other.provider +
                                                 " (" + other.where + ")"};
    out.rules.push_back(std::move(r));
  }
  return {};
}

}  // namespace

const credential_rule* credential_for(const credentials_section& c, const std::string& url) {
  const credential_rule* best = nullptr;
  for (const auto& r : c.rules)
    if (url.starts_with(r.url_prefix) && (!best || r.url_prefix.size() > best->url_prefix.size()))
      best = &r;
  return best;
}

config defaults() {
  static const config d = build_defaults();
  return d;
}

std::int64_t effective_replicas(const config& c) {
  if (c.nats.replicas > 0) return c.nats.replicas;
  if (!c.nats.servers.empty() || c.cluster.peers.empty()) return 1;
  return std::min<std::int64_t>(3, 1 + static_cast<std::int64_t>(c.cluster.peers.size()));
}

namespace {

// "host:port" (IPv4, a name, or [IPv6]), port 1..65535; peers may carry nats-route://.
status check_address(const std::string& text, const std::string& field, bool route_scheme) {
  std::string a = text;
  if (route_scheme && a.rfind("nats-route://", 0) == 0) a = a.substr(13);
  auto colon = a.rfind(':');
  auto bad = [&] {
    return error{errc::invalid_argument,
                 field + ": \"" + text + "\" is not host:port (e.g. \"10.0.0.2:6222\")"};
  };
  if (colon == std::string::npos || colon == 0 || colon + 1 == a.size()) return bad();
  for (char ch : a.substr(colon + 1))
    if (ch < '0' || ch > '9') return bad();
  if (a.size() - colon - 1 > 5) return bad();
  auto port = std::stoi(a.substr(colon + 1));
  if (port < 1 || port > 65535) return bad();
  if (a.find_first_of(" /@") != std::string::npos) return bad();
  return {};
}

}  // namespace

status check_cluster(const config& c, const std::string& where) {
  auto at = where.empty() ? std::string() : where + ": ";
  if (!c.cluster.listen.empty())
    BERTH_TRY(check_address(c.cluster.listen, at + "cluster.listen", false));
  for (std::size_t i = 0; i < c.cluster.peers.size(); ++i)
    BERTH_TRY(
        check_address(c.cluster.peers[i], at + "cluster.peers[" + std::to_string(i) + "]", true));
  if (c.cluster.node_ttl <= 3 * c.cluster.heartbeat)
    return error{errc::invalid_argument,
                 at + "cluster.node_ttl: " + format_duration(c.cluster.node_ttl) +
                     " must be more than three heartbeats (cluster.heartbeat = " +
                     format_duration(c.cluster.heartbeat) + ")"};
  if (!c.cluster.peers.empty() && !c.nats.servers.empty())
    return error{errc::invalid_argument,
                 at + "cluster.peers: routes of the embedded nats-server; with nats.servers (an "
                      "external NATS cluster) leave it empty"};
  if (!c.cluster.peers.empty() && c.cluster.listen.empty())
    return error{errc::invalid_argument,
                 at + "cluster.peers: needs cluster.listen, the address this node's peers name "
                      "for it"};
  if (c.nats.servers.empty() &&
      c.nats.replicas > 1 + static_cast<std::int64_t>(c.cluster.peers.size()))
    return error{errc::invalid_argument, at + "nats.replicas: " + std::to_string(c.nats.replicas) +
                                             " needs " + std::to_string(c.nats.replicas) +
                                             " servers; this node and cluster.peers " + "make " +
                                             std::to_string(1 + c.cluster.peers.size())};
  return {};
}

result<config> parse(const std::string& text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return error{errc::invalid_argument,
                 where(source, e.source()) + ": invalid TOML: " + std::string(e.description())};
  }
  config c = defaults();
  for (auto&& [section_key, section_node] : root) {
    std::string section(section_key.str());
    std::string at = where(source, section_key.source()) + ": ";
    bool known_section = false;
    for (const auto& k : schema()) known_section = known_section || section == k.section;
    if (!known_section)
      return error{errc::invalid_argument,
                   at + "unknown section [" + section +
                       "]; see `berth config print --defaults` for every key"};
    if (!section_node.is_table())
      return error{errc::invalid_argument,
                   at + section + ": expected a table, got " + toml_type_name(section_node)};
    for (auto&& [key, value] : *section_node.as_table()) {
      std::string kat = where(source, key.source()) + ": ";
      if (section == "credentials" &&
          (key.str() == "static" || key.str() == "command" || key.str() == "github_app")) {
        BERTH_TRY(parse_rules(c.credentials, std::string(key.str()), value, source));
        continue;
      }
      const key_spec* spec = nullptr;
      for (const auto& k : schema())
        if (section == k.section && key.str() == k.key) spec = &k;
      if (!spec)
        return error{errc::invalid_argument,
                     kat + "unknown key " + section + "." + std::string(key.str()) +
                         "; see `berth config print --defaults` for every key"};
      auto v = from_toml(*spec, value, source);
      if (!v) return v.err();
      BERTH_TRY(check_value(*spec, *v, where(source, value.source()) + ": "));
      spec->apply(c, *v);
    }
  }
  BERTH_TRY(check_cluster(c, source));
  return c;
}

result<config> load_file(const std::string& path) {
  auto text = fs::read_file(path);
  if (!text)
    return error{errc::not_found,
                 "config file " + path + ": cannot be read: " + text.err().message};
  return parse(*text, path);
}

status apply_env(config& cfg, const std::map<std::string, std::string>& env) {
  for (const auto& k : schema()) {
    std::string var = "BERTH_";
    for (const char* p = k.section; *p; ++p) var.push_back(static_cast<char>(std::toupper(*p)));
    var.push_back('_');
    for (const char* p = k.key; *p; ++p) var.push_back(static_cast<char>(std::toupper(*p)));
    auto it = env.find(var);
    if (it == env.end()) continue;
    const std::string& s = it->second;
    std::string at = "environment variable " + var + ": ";
    raw v;
    switch (k.type) {
      case kind::string:
        v = s;
        break;
      case kind::integer: {
        try {
          std::size_t used = 0;
          v = static_cast<std::int64_t>(std::stoll(s, &used));
          if (used != s.size()) throw std::invalid_argument("trailing");
        } catch (const std::exception&) {
          return error{errc::invalid_argument, at + "\"" + s + "\" is not an integer"};
        }
        break;
      }
      case kind::boolean:
        if (s == "true" || s == "1")
          v = true;
        else if (s == "false" || s == "0")
          v = false;
        else
          return error{errc::invalid_argument, at + "\"" + s + "\" is not true or false"};
        break;
      case kind::duration: {
        auto d = parse_duration(s, var);
        if (!d) return d.err();
        v = *d;
        break;
      }
      case kind::string_list: {
        std::vector<std::string> items;
        std::stringstream ss(s);
        std::string item;
        while (std::getline(ss, item, ','))
          if (!item.empty()) items.push_back(item);
        v = items;
        break;
      }
    }
    BERTH_TRY(check_value(k, v, at));
    k.apply(cfg, v);
  }
  return check_cluster(cfg, "configuration with the environment");
}

std::map<std::string, std::string> process_env() {
  std::map<std::string, std::string> out;
  for (auto& [k, v] : process::current_env())
    if (k.rfind("BERTH_", 0) == 0) out.emplace(k, v);
  return out;
}

namespace {
std::string bounds_text(const key_spec& k) {
  if (k.type == kind::integer) return std::to_string(k.min) + " to " + std::to_string(k.max);
  if (k.type == kind::duration)
    return format_duration(millis(k.min)) + " to " + format_duration(millis(k.max));
  if (!k.choices.empty()) {
    std::string s;
    for (const auto& c : k.choices) s += (s.empty() ? "" : ", ") + ("\"" + c + "\"");
    return "one of " + s;
  }
  return "";
}
}  // namespace

std::string print_defaults_toml() {
  std::string out =
      "# Berth configuration: every key with its default.\n"
      "# Each key can be overridden by BERTH_<SECTION>_<KEY> in the environment.\n";
  std::string section;
  for (const auto& k : schema()) {
    if (section != k.section) {
      section = k.section;
      out += "\n[" + section + "]\n";
    }
    out += "# " + std::string(k.description);
    auto b = bounds_text(k);
    if (!b.empty()) out += " (" + b + ")";
    out += "\n" + std::string(k.key) + " = " + k.default_text + "\n";
  }
  return out;
}

std::string reference_markdown() {
  std::string out =
      "# Configuration reference\n\n"
      "Generated from the config schema (`berth config print --markdown`); do not edit by hand.\n"
      "A config file is TOML. Unknown sections and keys are errors, reported as "
      "`file:line:column`. Durations are strings such as `\"500ms\"`, `\"30s\"`, `\"10m\"`, "
      "`\"1h30m\"`. Every key can be overridden from the environment as "
      "`BERTH_<SECTION>_<KEY>` (lists comma-separated), e.g. `BERTH_NODE_MAX_SESSIONS=8`.\n\n"
      "`berth config check FILE` validates a file; `berth config print --defaults` prints every "
      "key with its default.\n";
  std::string section;
  for (const auto& k : schema()) {
    if (section != k.section) {
      section = k.section;
      out += "\n## [" + section +
             "]\n\n| key | type | default | allowed | description |\n|---|---|---|---|---|\n";
    }
    std::string t = kind_name(k.type);
    out += "| `" + std::string(k.key) + "` | " + t + " | `" + k.default_text + "` | " +
           bounds_text(k) + " | " + k.description + " |\n";
  }
  out +=
      "\n## [[credentials.static]], [[credentials.command]], [[credentials.github_app]]\n\n"
      "One entry per remote URL prefix; a session's repo uses the entry with the longest "
      "matching `url_prefix`, and no credential when none matches. See docs/credentials.md.\n\n"
      "| provider | key | required | description |\n|---|---|---|---|\n"
      "| all | `url_prefix` | yes | Remotes starting with this string use the entry. |\n"
      "| all | `username` | no | HTTP basic user name sent with the token (default "
      "`x-access-token`). |\n"
      "| all | `api_url` | no | The forge API for pull requests (github_app default: "
      "`https://api.github.com`). |\n"
      "| static | `token_file` | yes | File holding the token; must be mode 0600 and owned by "
      "the node's user. Read at each lease, so rotation needs no restart. |\n"
      "| command | `run` | yes | Absolute program path and arguments; the repo URL is appended. "
      "It prints `{\"token\": ..., \"expires_at\": ...}` (RFC 3339 or Unix seconds; "
      "optional). |\n"
      "| command | `revoke` | no | Program run when a lease ends; the token arrives on stdin, the "
      "URL as last argument. |\n"
      "| github_app | `app_id`, `installation_id` | yes | The GitHub App and its installation. "
      "|\n"
      "| github_app | `private_key_file` | yes | The App's RSA private key (PEM, mode 0600). |\n";
  return out;
}

}  // namespace berth::config
