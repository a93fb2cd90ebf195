#pragma once

#include <string>
#include <string_view>

namespace berth::redact {

/// Register a secret the moment it exists. From then on `apply` replaces it, its base64, and
/// the base64 of `<username>:<secret>` (an HTTP basic Authorization header) with "[REDACTED]".
/// Secrets shorter than 8 bytes are not registered (they would mask ordinary text).
void add(const std::string& secret, const std::string& username = "x-access-token");

/// Forget a secret (after it has been revoked and can no longer be used).
void remove(const std::string& secret, const std::string& username = "x-access-token");

/// `text` with every registered secret replaced, and anything shaped like a GitHub token
/// (ghs_, ghp_, gho_, ghu_, ghr_, github_pat_ followed by 20 or more token characters) or a
/// JWT (eyJ....eyJ....sig) replaced even if it was never registered.
[[nodiscard]] std::string apply(std::string_view text);

/// Standard base64 (with padding) of `data`; and base64url without padding (JWT).
[[nodiscard]] std::string base64(std::string_view data);
[[nodiscard]] std::string base64url(std::string_view data);

}  // namespace berth::redact
