#pragma once

#include "berth/base/error.hpp"
#include "berth/base/time.hpp"
#include "berth/bus/subjects.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace berth::bus {

/// A NATS URL fit for logs and error messages: user info (tokens, passwords) replaced by "***".
[[nodiscard]] std::string redact_url(const std::string& url);

/// A message as Berth sees it: copied out of nats.c, safe to keep and move across threads.
struct message {
  std::string subject;
  std::string data;
  std::string reply;
  std::map<std::string, std::string> headers;
  std::uint64_t seq = 0;     ///< stream sequence (JetStream messages only)
  std::int64_t time_ns = 0;  ///< stream timestamp (JetStream messages only)
  [[nodiscard]] std::string header(const std::string& key) const;
};

/// The acknowledgement of a JetStream publish.
struct pub_ack {
  std::uint64_t seq = 0;
  bool duplicate = false;  ///< the Nats-Msg-Id was seen inside the duplicate window
};

/// How a JetStream publish is guarded.
struct publish_options {
  std::string msg_id;  ///< Nats-Msg-Id for de-duplication; empty: none
  /// Nats-Expected-Last-Subject-Sequence: the publish is refused (errc::fenced) unless the last
  /// message on the subject has this stream sequence (0: the subject must be empty).
  std::optional<std::uint64_t> expected_last_subject_seq;
};

struct kv_entry {
  std::string value;
  std::uint64_t revision = 0;
};

/// Stream and bucket settings applied by `provision`.
struct provision_options {
  std::int64_t replicas = 1;
  millis duplicate_window{std::chrono::hours(24)};
  std::int64_t log_max_bytes = 1LL << 30;
  millis log_max_age{std::chrono::hours(24 * 7)};
};

class subscription;
class pull_consumer;

/// A connection to NATS with JetStream. Thread-safe: every method may be called from any
/// thread; callbacks run on nats.c's threads and must only copy and hand off (never block).
///
/// Blocking calls (publish, request, KV, direct get) retry "no responders" and JetStream
/// "not available" answers for up to the request timeout, which covers a leader election.
class client {
 public:
  struct options {
    std::vector<std::string> servers;
    std::string creds;
    std::string name = "berth";
    millis connect_timeout{std::chrono::seconds(10)};
    millis request_timeout{std::chrono::seconds(5)};
    bool send_asap = true;  ///< flush every publish at once (latency over batching)
    /// Called (on a nats.c thread) when the connection is lost / comes back.
    std::function<void(bool connected)> on_connection_change;
  };

  /// Connect, retrying until `connect_timeout`; then wait until JetStream answers.
  [[nodiscard]] static result<std::unique_ptr<client>> connect(options opts);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Create or update the streams and KV buckets; idempotent.
  [[nodiscard]] status provision(const subjects& names, const provision_options& opts);

  /// JetStream publish with headers; waits for the ack.
  [[nodiscard]] result<pub_ack> publish(const std::string& subject, const std::string& data,
                                        const publish_options& opts = {});
  /// JetStream publish that does not wait: `done` runs on a nats.c thread with the ack or the
  /// error (refusals, a timeout after the request timeout, a closed connection). It must only
  /// hand off, and may publish again. `opts.msg_id` is required and must not be in flight
  /// already. Failures to send at all are returned here and `done` is not called.
  [[nodiscard]] status publish_async(const std::string& subject, const std::string& data,
                                     const publish_options& opts,
                                     std::function<void(result<pub_ack>)> done);
  /// Core NATS publish, no ack (log chunks, replies). Non-blocking.
  [[nodiscard]] status publish_core(const std::string& subject, const std::string& data,
                                    const std::map<std::string, std::string>& headers = {});
  /// Request-reply on core NATS.
  [[nodiscard]] result<message> request(const std::string& subject, const std::string& data,
                                        millis timeout);

  /// First message on `subject` with stream sequence >= `from_seq` (direct get); nullopt: none.
  [[nodiscard]] result<std::optional<message>> next_message(const std::string& stream,
                                                            const std::string& subject,
                                                            std::uint64_t from_seq);
  /// Every message on `subject` with stream sequence >= `from_seq`, in order, through `fn`
  /// (one direct get each; for bounded subjects such as one session's journal or inputs).
  /// `fn` returns false to stop early.
  [[nodiscard]] status read_subject(const std::string& stream, const std::string& subject,
                                    std::uint64_t from_seq,
                                    const std::function<bool(message&)>& fn);
  /// Last message on `subject`; nullopt: the subject is empty.
  [[nodiscard]] result<std::optional<message>> last_message(const std::string& stream,
                                                            const std::string& subject);
  /// The message at a stream sequence; nullopt: none.
  [[nodiscard]] result<std::optional<message>> message_at(const std::string& stream,
                                                          std::uint64_t seq);
  /// Subjects of a stream matching `filter`, with their message counts.
  [[nodiscard]] result<std::map<std::string, std::uint64_t>> stream_subjects(
      const std::string& stream, const std::string& filter);

  /// KV: create only if absent (errc::conflict when present); returns the revision.
  [[nodiscard]] result<std::uint64_t> kv_create(const std::string& bucket, const std::string& key,
                                                const std::string& value);
  [[nodiscard]] result<std::uint64_t> kv_put(const std::string& bucket, const std::string& key,
                                             const std::string& value);
  /// KV: compare-and-set on the revision (errc::conflict when it moved).
  [[nodiscard]] result<std::uint64_t> kv_update(const std::string& bucket, const std::string& key,
                                                const std::string& value, std::uint64_t revision);
  [[nodiscard]] result<std::optional<kv_entry>> kv_get(const std::string& bucket,
                                                       const std::string& key);
  [[nodiscard]] status kv_delete(const std::string& bucket, const std::string& key);
  /// Every current entry of a bucket, read in one pass (a watcher over the bucket's stream).
  [[nodiscard]] result<std::map<std::string, kv_entry>> kv_entries(const std::string& bucket);

  /// Core subscription; `queue` empty for none. The callback runs on a nats.c thread.
  [[nodiscard]] result<std::unique_ptr<subscription>> subscribe(
      const std::string& subject, const std::string& queue,
      std::function<void(message)> on_message);
  /// Ordered push consumer over a stream from `start_seq` (0: from the first message).
  [[nodiscard]] result<std::unique_ptr<subscription>> follow(
      const std::string& stream, const std::string& filter, std::uint64_t start_seq,
      std::function<void(message)> on_message);
  /// Ordered push consumer over a stream delivering only messages stored from now on.
  [[nodiscard]] result<std::unique_ptr<subscription>> follow_new(
      const std::string& stream, const std::string& filter,
      std::function<void(message)> on_message);
  /// Bind (creating if needed) a durable pull consumer with explicit acks.
  [[nodiscard]] result<std::unique_ptr<pull_consumer>> pull(const std::string& stream,
                                                            const std::string& durable,
                                                            const std::string& filter,
                                                            millis ack_wait);

  [[nodiscard]] std::string connected_url() const;
  [[nodiscard]] millis request_timeout() const;
  [[nodiscard]] bool is_connected() const;

  struct impl;

 private:
  explicit client(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

/// An active subscription; unsubscribes when destroyed.
class subscription {
 public:
  ~subscription();
  struct impl;
  explicit subscription(std::unique_ptr<impl> i);

 private:
  std::unique_ptr<impl> impl_;
};

/// A JetStream message fetched from a pull consumer, to be acknowledged once handled.
class fetched_message {
 public:
  ~fetched_message();
  fetched_message(fetched_message&&) noexcept;
  fetched_message& operator=(fetched_message&&) noexcept;
  [[nodiscard]] const message& msg() const { return msg_; }
  [[nodiscard]] status ack();
  [[nodiscard]] status nak(millis delay);
  [[nodiscard]] status term();
  [[nodiscard]] std::uint64_t delivered() const { return delivered_; }

  fetched_message(void* raw, message m, std::uint64_t delivered);

 private:
  void* raw_ = nullptr;  // natsMsg*
  message msg_;
  std::uint64_t delivered_ = 0;
};

/// A durable pull consumer (work queue).
class pull_consumer {
 public:
  ~pull_consumer();
  /// Fetch up to `batch` messages, waiting up to `timeout` for the first one. Empty: none.
  [[nodiscard]] result<std::vector<fetched_message>> fetch(int batch, millis timeout);
  struct impl;
  explicit pull_consumer(std::unique_ptr<impl> i);

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace berth::bus
