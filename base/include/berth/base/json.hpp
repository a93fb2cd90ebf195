#pragma once

#include "berth/base/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace berth::json {

/// A JSON document as a plain value: parsed by simdjson, printed by `dump()`. Objects keep
/// their key order. Used for API payloads, events and snapshots (all small).
class value {
 public:
  using array = std::vector<value>;
  using object = std::vector<std::pair<std::string, value>>;
  enum class kind { null, boolean, integer, number, string, array, object };

  value() = default;
  value(std::nullptr_t) {}  // NOLINT
  value(bool b) : v_(b) {}  // NOLINT
  template <class I, std::enable_if_t<std::is_integral_v<I> && !std::is_same_v<I, bool>, int> = 0>
  value(I i) : v_(static_cast<std::int64_t>(i)) {}   // NOLINT
  value(double d) : v_(d) {}                         // NOLINT
  value(std::string s) : v_(std::move(s)) {}         // NOLINT
  value(std::string_view s) : v_(std::string(s)) {}  // NOLINT
  value(const char* s) : v_(std::string(s)) {}       // NOLINT
  value(array a) : v_(std::move(a)) {}               // NOLINT
  value(object o) : v_(std::move(o)) {}              // NOLINT

  static value make_object() { return value(object{}); }
  static value make_array() { return value(array{}); }

  [[nodiscard]] kind type() const noexcept { return static_cast<kind>(v_.index()); }
  [[nodiscard]] bool is_null() const noexcept { return type() == kind::null; }
  [[nodiscard]] bool is_bool() const noexcept { return type() == kind::boolean; }
  [[nodiscard]] bool is_int() const noexcept { return type() == kind::integer; }
  [[nodiscard]] bool is_number() const noexcept { return is_int() || type() == kind::number; }
  [[nodiscard]] bool is_string() const noexcept { return type() == kind::string; }
  [[nodiscard]] bool is_array() const noexcept { return type() == kind::array; }
  [[nodiscard]] bool is_object() const noexcept { return type() == kind::object; }

  [[nodiscard]] bool as_bool() const { return std::get<bool>(v_); }
  [[nodiscard]] std::int64_t as_int() const { return std::get<std::int64_t>(v_); }
  [[nodiscard]] double as_double() const {
    return is_int() ? static_cast<double>(as_int()) : std::get<double>(v_);
  }
  [[nodiscard]] const std::string& as_string() const { return std::get<std::string>(v_); }
  [[nodiscard]] const array& as_array() const { return std::get<array>(v_); }
  [[nodiscard]] array& as_array() { return std::get<array>(v_); }
  [[nodiscard]] const object& as_object() const { return std::get<object>(v_); }
  [[nodiscard]] object& as_object() { return std::get<object>(v_); }

  /// Member lookup; nullptr when absent or when this is not an object.
  [[nodiscard]] const value* find(std::string_view key) const;
  /// Typed member lookups with a fallback (the fallback also covers a wrong type).
  [[nodiscard]] std::string get_string(std::string_view key, std::string fallback = {}) const;
  [[nodiscard]] std::int64_t get_int(std::string_view key, std::int64_t fallback = 0) const;
  [[nodiscard]] bool get_bool(std::string_view key, bool fallback = false) const;

  /// Set (or replace) a member; turns a null into an object.
  value& set(std::string_view key, value v);
  /// Append to an array; turns a null into an array.
  value& push(value v);

  /// Compact JSON text.
  [[nodiscard]] std::string dump() const;
  void dump_to(std::string& out) const;

  friend bool operator==(const value& a, const value& b) { return a.v_ == b.v_; }

 private:
  std::variant<std::nullptr_t, bool, std::int64_t, double, std::string, array, object> v_;
};

/// Parse JSON text. Errors (errc::invalid_argument) say what is wrong and where.
[[nodiscard]] result<value> parse(std::string_view text);

/// Append `s` as a quoted, escaped JSON string.
void quote_to(std::string& out, std::string_view s);
[[nodiscard]] std::string quote(std::string_view s);

/// A name for a kind, for error messages ("string", "array", ...).
[[nodiscard]] const char* kind_name(value::kind k);

}  // namespace berth::json
