#include "berth/base/ids.hpp"

#include <chrono>
#include <cstdint>
#include <mutex>
#include <random>

namespace berth {

std::string new_ulid() {
  static constexpr char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  auto ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  {
    std::lock_guard lock(mu);
    hi = rng();
    lo = rng();
  }
  std::string out(26, '0');
  for (int i = 9; i >= 0; --i) {  // 10 chars = 50 bits of time (48 used)
    out[static_cast<std::size_t>(i)] = alphabet[ms & 31];
    ms >>= 5;
  }
  // 80 bits of randomness: 16 chars.
  for (int i = 25; i >= 10; --i) {
    out[static_cast<std::size_t>(i)] = alphabet[lo & 31];
    lo = (lo >> 5) | ((hi & 31) << 59);
    hi >>= 5;
  }
  return out;
}

status validate_id(std::string_view id, std::string_view field) {
  if (id.empty()) return error{errc::invalid_argument, std::string(field) + ": must not be empty"};
  if (id.size() > 128)
    return error{errc::invalid_argument, std::string(field) + ": " + std::to_string(id.size()) +
                                             " characters, at most 128 allowed"};
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) {
      std::string shown =
          (c == ' ') ? "a space"
                     : (static_cast<unsigned char>(c) < 0x20 ? "a control character"
                                                             : "'" + std::string(1, c) + "'");
      return error{errc::invalid_argument, std::string(field) + ": contains " + shown +
                                               "; only letters, digits, '_' and '-' are allowed"};
    }
  }
  return {};
}

}  // namespace berth
