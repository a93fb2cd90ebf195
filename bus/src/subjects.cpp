#include "berth/bus/subjects.hpp"

#include <cctype>

namespace berth::bus {

subjects::subjects(std::string prefix) : prefix_(std::move(prefix)) {
  for (char c : prefix_)
    upper_.push_back(c == '-' ? '_'
                              : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
}

std::string subjects::api(std::string_view verb) const {
  return prefix_ + ".api.v1." + std::string(verb);
}
std::string subjects::api_wildcard() const {
  return prefix_ + ".api.v1.>";
}
std::string subjects::input(std::string_view s) const {
  return prefix_ + ".in." + std::string(s);
}
std::string subjects::input_wildcard() const {
  return prefix_ + ".in.*";
}
std::string subjects::journal(std::string_view s) const {
  return prefix_ + ".ev." + std::string(s);
}
std::string subjects::journal_wildcard() const {
  return prefix_ + ".ev.*";
}
std::string subjects::log(std::string_view s, std::string_view step) const {
  return prefix_ + ".log." + std::string(s) + "." + std::string(step);
}
std::string subjects::log_wildcard(std::string_view s) const {
  return prefix_ + ".log." + std::string(s) + ".>";
}
std::string subjects::work(int p) const {
  return prefix_ + ".work." + std::to_string(p);
}
std::string subjects::work_wildcard() const {
  return prefix_ + ".work.*";
}
std::string subjects::stream_in() const {
  return upper_ + "_IN";
}
std::string subjects::stream_ev() const {
  return upper_ + "_EV";
}
std::string subjects::stream_log() const {
  return upper_ + "_LOG";
}
std::string subjects::stream_work() const {
  return upper_ + "_WORK";
}
std::string subjects::bucket_owners() const {
  return prefix_ + "-owners";
}
std::string subjects::bucket_nodes() const {
  return prefix_ + "-nodes";
}
std::string subjects::bucket_sessions() const {
  return prefix_ + "-sessions";
}

std::string subjects::bucket_diffs() const {
  return prefix_ + "-diffs";
}

std::string subjects::bucket_stream(std::string_view bucket) {
  return "KV_" + std::string(bucket);
}

std::string subjects::bucket_keys(std::string_view bucket) {
  return "$KV." + std::string(bucket) + ".>";
}

std::string_view subjects::last_token(std::string_view subject) {
  auto dot = subject.rfind('.');
  return dot == std::string_view::npos ? subject : subject.substr(dot + 1);
}

}  // namespace berth::bus
