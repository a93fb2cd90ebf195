#include "berth/core/workflow.hpp"

#include "berth/base/fs.hpp"
#include "berth/core/spec.hpp"

#include <toml++/toml.h>

#include <algorithm>

namespace berth::core {

namespace {

std::string at(const std::string& file, const toml::source_region& r) {
  return file + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
}

// Convert TOML to JSON values, keeping positions for errors on the way.
result<json::value> to_json(const toml::node& n, const std::string& file,
                            const std::string& field) {
  switch (n.type()) {
    case toml::node_type::string:
      return json::value(*n.value<std::string>());
    case toml::node_type::integer:
      return json::value(*n.value<std::int64_t>());
    case toml::node_type::floating_point:
      return json::value(*n.value<double>());
    case toml::node_type::boolean:
      return json::value(*n.value<bool>());
    case toml::node_type::array: {
      json::value arr = json::value::make_array();
      std::size_t i = 0;
      for (const auto& e : *n.as_array()) {
        auto v = to_json(e, file, field + "[" + std::to_string(i++) + "]");
        if (!v) return v;
        arr.push(std::move(*v));
      }
      return arr;
    }
    case toml::node_type::table: {
      json::value obj = json::value::make_object();
      for (const auto& [k, v] : *n.as_table()) {
        auto j = to_json(v, file, field + "." + std::string(k.str()));
        if (!j) return j;
        obj.set(k.str(), std::move(*j));
      }
      return obj;
    }
    default:
      return error{errc::invalid_argument,
                   at(file, n.source()) + ": " + field + ": dates and times are not supported"};
  }
}

bool known_key(const std::vector<std::string>& keys, std::string_view k) {
  return std::find(keys.begin(), keys.end(), k) != keys.end();
}

std::string key_list(const std::vector<std::string>& keys, std::string_view except) {
  std::string out;
  for (const auto& k : keys)
    if (k != except) out += (out.empty() ? "" : ", ") + k;
  return out;
}

}  // namespace

result<json::value> load_workflow(const std::string& path) {
  auto text = fs::read_file(path);
  if (!text) return error{errc::not_found, "--workflow " + path + ": cannot be read"};
  return parse_workflow(*text, path);
}

result<json::value> parse_workflow(std::string_view text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return error{errc::invalid_argument,
                 at(path, e.source()) + ": invalid TOML: " + std::string(e.description())};
  }
  json::value spec = json::value::make_object();
  for (const auto& [k, v] : root) {
    std::string key(k.str());
    if (key == "session") {
      if (!v.is_table())
        return error{errc::invalid_argument, at(path, k.source()) + ": session: expected a table"};
      for (const auto& [sk, sv] : *v.as_table()) {
        if (sk.str() == "steps" || !known_key(session_keys(), sk.str()))
          return error{errc::invalid_argument,
                       at(path, sk.source()) + ": session." + std::string(sk.str()) +
                           ": unknown key (known: " + key_list(session_keys(), "steps") + ")"};
        auto j = to_json(sv, path, "session." + std::string(sk.str()));
        if (!j) return j;
        spec.set(sk.str(), std::move(*j));
      }
    } else if (key == "steps") {
      if (!v.is_array_of_tables())
        return error{errc::invalid_argument,
                     at(path, k.source()) + ": steps: expected [[steps]] tables"};
      json::value steps = json::value::make_array();
      std::size_t i = 0;
      for (const auto& t : *v.as_array()) {
        std::string f = "steps[" + std::to_string(i++) + "]";
        for (const auto& [sk, sv] : *t.as_table())
          if (!known_key(step_keys(), sk.str()))
            return error{errc::invalid_argument,
                         at(path, sk.source()) + ": " + f + "." + std::string(sk.str()) +
                             ": unknown key (known: " + key_list(step_keys(), "") + ")"};
        auto j = to_json(t, path, f);
        if (!j) return j;
        steps.push(std::move(*j));
      }
      spec.set("steps", std::move(steps));
    } else {
      return error{errc::invalid_argument,
                   at(path, k.source()) + ": " + key +
                       ": unknown key (a workflow has [session] and [[steps]])"};
    }
  }
  return spec;
}

}  // namespace berth::core
