#include "berth/base/json.hpp"

#include <cmath>
#include <cstdio>

namespace berth::json {

const value* value::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : as_object())
    if (k == key) return &v;
  return nullptr;
}

std::string value::get_string(std::string_view key, std::string fallback) const {
  const auto* v = find(key);
  return v && v->is_string() ? v->as_string() : fallback;
}

std::int64_t value::get_int(std::string_view key, std::int64_t fallback) const {
  const auto* v = find(key);
  return v && v->is_int() ? v->as_int() : fallback;
}

bool value::get_bool(std::string_view key, bool fallback) const {
  const auto* v = find(key);
  return v && v->is_bool() ? v->as_bool() : fallback;
}

value& value::set(std::string_view key, value v) {
  if (is_null()) v_ = object{};
  auto& obj = as_object();
  for (auto& [k, existing] : obj) {
    if (k == key) {
      existing = std::move(v);
      return existing;
    }
  }
  obj.emplace_back(std::string(key), std::move(v));
  return obj.back().second;
}

value& value::push(value v) {
  if (is_null()) v_ = array{};
  auto& arr = as_array();
  arr.push_back(std::move(v));
  return arr.back();
}

namespace {
// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlongs, no
// surrogates, nothing past U+10FFFF), or 0.
std::size_t utf8_len(std::string_view s, std::size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  auto cont = [&](std::size_t k) {
    return i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
  };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    auto c1 = static_cast<unsigned char>(s[i + 1]);
    if (c == 0xE0 && c1 < 0xA0) return 0;  // overlong
    if (c == 0xED && c1 > 0x9F) return 0;  // a surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    auto c1 = static_cast<unsigned char>(s[i + 1]);
    if (c == 0xF0 && c1 < 0x90) return 0;
    if (c == 0xF4 && c1 > 0x8F) return 0;
    return 4;
  }
  return 0;
}
}  // namespace

void quote_to(std::string& out, std::string_view s) {
  out.push_back('"');
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else if (c < 0x80) {
          out.push_back(static_cast<char>(c));
        } else if (auto n = utf8_len(s, i)) {
          out.append(s.substr(i, n));
          i += n - 1;
        } else {
          // JSON is UTF-8: a byte that is not (command output, a cut-off chunk) becomes U+FFFD.
          out += "\xEF\xBF\xBD";
        }
    }
  }
  out.push_back('"');
}

std::string quote(std::string_view s) {
  std::string out;
  quote_to(out, s);
  return out;
}

void value::dump_to(std::string& out) const {
  switch (type()) {
    case kind::null:
      out += "null";
      break;
    case kind::boolean:
      out += as_bool() ? "true" : "false";
      break;
    case kind::integer:
      out += std::to_string(as_int());
      break;
    case kind::number: {
      double d = std::get<double>(v_);
      if (!std::isfinite(d)) {
        out += "null";
      } else {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.17g", d);
        out += buf;
      }
      break;
    }
    case kind::string:
      quote_to(out, as_string());
      break;
    case kind::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& v : as_array()) {
        if (!first) out.push_back(',');
        first = false;
        v.dump_to(out);
      }
      out.push_back(']');
      break;
    }
    case kind::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [k, v] : as_object()) {
        if (!first) out.push_back(',');
        first = false;
        quote_to(out, k);
        out.push_back(':');
        v.dump_to(out);
      }
      out.push_back('}');
      break;
    }
  }
}

std::string value::dump() const {
  std::string out;
  dump_to(out);
  return out;
}

const char* kind_name(value::kind k) {
  switch (k) {
    case value::kind::null:
      return "null";
    case value::kind::boolean:
      return "boolean";
    case value::kind::integer:
      return "integer";
    case value::kind::number:
      return "number";
    case value::kind::string:
      return "string";
    case value::kind::array:
      return "array";
    case value::kind::object:
      return "object";
  }
  return "?";
}

}  // namespace berth::json
