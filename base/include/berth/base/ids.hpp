#pragma once

#include "berth/base/error.hpp"

#include <string>
#include <string_view>

namespace berth {

/// A new ULID (26 characters, Crockford base32, sortable by creation time). Thread-safe.
[[nodiscard]] std::string new_ulid();

/// Session and node ids are `[A-Za-z0-9_-]{1,128}`: safe as a NATS subject token, a file name
/// and a RocksDB key. `field` names the offending field in the error.
[[nodiscard]] status validate_id(std::string_view id, std::string_view field);

}  // namespace berth
