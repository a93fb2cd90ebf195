#pragma once

#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>

namespace berth {

/// Generic error codes shared by every module. Values are stable: never renumber.
enum class errc : int {
  ok = 0,
  invalid_argument = 1,  ///< bad user input; the message names the field
  not_found = 2,
  conflict = 3,  ///< e.g. an idempotency key reused with a different spec
  timeout = 4,
  unavailable = 5,  ///< a dependency (NATS, disk) cannot be reached right now
  io_error = 6,
  corrupt = 7,      ///< stored data cannot be read back
  unsupported = 8,  ///< e.g. a newer on-disk schema
  fenced = 9,       ///< this writer lost ownership of a session
  internal = 10,
  too_large = 11,
  permission_denied = 12,
  cancelled = 13,
  unauthorized = 14,  ///< no credential, or one that is unknown, revoked or expired
  rate_limited = 15,  ///< over a rate or connection limit; retry later
};

}  // namespace berth

template <>
struct std::is_error_code_enum<berth::errc> : std::true_type {};

namespace berth {

const std::error_category& berth_category() noexcept;

/// The stable, machine-readable name of a code ("invalid_argument", "not_found", ...); codes of
/// other categories are "internal".
const char* errc_name(const std::error_code& c) noexcept;
/// The code of a name from errc_name(); errc::internal for an unknown name.
errc errc_from_name(std::string_view name) noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), berth_category()};
}

/// An error value: a code for programs and a message for people. The message names the field,
/// file or subject at fault and, where useful, what to do next.
struct error {
  std::error_code code;
  std::string message;

  error() = default;
  error(std::error_code c, std::string m) : code(c), message(std::move(m)) {}
  error(errc c, std::string m) : code(make_error_code(c)), message(std::move(m)) {}

  [[nodiscard]] bool is(errc e) const noexcept { return code == make_error_code(e); }
  /// "message" with the code's name appended, for logs.
  [[nodiscard]] std::string describe() const;
};

/// Value or error. Fallible functions return `[[nodiscard]] result<T>`.
template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  result(error e) : v_(std::in_place_index<1>, std::move(e)) {}      // NOLINT
  result(errc c, std::string m) : v_(std::in_place_index<1>, error{c, std::move(m)}) {}

  [[nodiscard]] bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  [[nodiscard]] const error& err() const { return std::get<1>(v_); }
  error&& take_error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, error> v_;
};

/// result<void>: success or an error.
template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(error e) : err_(std::move(e)), failed_(true) {}  // NOLINT
  result(errc c, std::string m) : err_(c, std::move(m)), failed_(true) {}
  [[nodiscard]] bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  [[nodiscard]] const error& err() const { return err_; }
  error&& take_error() && { return std::move(err_); }

 private:
  error err_;
  bool failed_ = false;
};

using status = result<void>;

/// The system's text for an errno value, e.g. "No such file or directory" (strerror_r: safe
/// from any thread, unlike strerror).
[[nodiscard]] std::string errno_text(int err);

}  // namespace berth

/// Propagate an error from a result-returning expression.
#define BERTH_TRY(expr)                                \
  do {                                                 \
    auto&& berth_try_r_ = (expr);                      \
    if (!berth_try_r_.ok()) return berth_try_r_.err(); \
  } while (false)

/// Broken invariant: log and abort; never limp on.
#define BERTH_ASSERT(cond, what)                                          \
  do {                                                                    \
    if (!(cond)) ::berth::assert_failed(#cond, what, __FILE__, __LINE__); \
  } while (false)

namespace berth {
[[noreturn]] void assert_failed(const char* cond, const std::string& what, const char* file,
                                int line);
}
