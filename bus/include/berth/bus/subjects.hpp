#pragma once

#include <string>
#include <string_view>

namespace berth::bus {

/// Subject, stream and bucket names under one configurable prefix (DESIGN.md "Subjects").
class subjects {
 public:
  explicit subjects(std::string prefix = "berth");

  [[nodiscard]] const std::string& prefix() const { return prefix_; }
  [[nodiscard]] std::string api(std::string_view verb) const;       ///< berth.api.v1.<verb>
  [[nodiscard]] std::string api_wildcard() const;                   ///< berth.api.v1.>
  [[nodiscard]] std::string input(std::string_view session) const;  ///< berth.in.<session>
  [[nodiscard]] std::string input_wildcard() const;
  [[nodiscard]] std::string journal(std::string_view session) const;  ///< berth.ev.<session>
  [[nodiscard]] std::string journal_wildcard() const;
  [[nodiscard]] std::string log(std::string_view session, std::string_view step) const;
  [[nodiscard]] std::string log_wildcard(
      std::string_view session) const;                 ///< berth.log.<session>.>
  [[nodiscard]] std::string work(int priority) const;  ///< berth.work.<priority>
  [[nodiscard]] std::string work_wildcard() const;

  [[nodiscard]] std::string stream_in() const;      ///< BERTH_IN
  [[nodiscard]] std::string stream_ev() const;      ///< BERTH_EV
  [[nodiscard]] std::string stream_log() const;     ///< BERTH_LOG
  [[nodiscard]] std::string stream_work() const;    ///< BERTH_WORK
  [[nodiscard]] std::string bucket_owners() const;  ///< berth-owners
  [[nodiscard]] std::string bucket_nodes() const;   ///< berth-nodes
  /// berth-sessions: one entry per session, its queue state (the list and stats index)
  [[nodiscard]] std::string bucket_sessions() const;
  /// berth-diffs: one entry per session, its changes at the latest checkpoint (the console's
  /// changes tab, `session.diff`)
  [[nodiscard]] std::string bucket_diffs() const;

  /// The stream behind a KV bucket (KV_<bucket>) and the subjects of its keys ($KV.<bucket>.>):
  /// to follow a bucket's changes as an ordered consumer.
  [[nodiscard]] static std::string bucket_stream(std::string_view bucket);
  [[nodiscard]] static std::string bucket_keys(std::string_view bucket);

  /// The last token of a subject (the session id of berth.in.<id> / berth.ev.<id>).
  [[nodiscard]] static std::string_view last_token(std::string_view subject);

 private:
  std::string prefix_;
  std::string upper_;
};

}  // namespace berth::bus
