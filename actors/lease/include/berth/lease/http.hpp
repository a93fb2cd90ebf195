#pragma once

#include "berth/base/error.hpp"
#include "berth/base/time.hpp"

#include <map>
#include <string>

namespace berth::lease {

struct http_response {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  ///< names lower-case
};

/// One HTTP/1.1 request to an http:// or https:// URL (TLS verified against the system's CA
/// store, with SNI), the whole exchange bounded by `timeout`. Errors name the method and URL,
/// never a header value (they carry credentials).
[[nodiscard]] result<http_response> http_call(const std::string& method, const std::string& url,
                                              const std::map<std::string, std::string>& headers,
                                              const std::string& body, millis timeout);

/// Split a URL into scheme, host, port (default for the scheme) and target ("/..." with the
/// query). Errors name `field`.
struct url_parts {
  std::string scheme, host, port, target;
};
[[nodiscard]] result<url_parts> split_url(const std::string& url, const std::string& field);

}  // namespace berth::lease
