#include "berth/bus/client.hpp"

#include "translate.hpp"

#include "berth/base/log.hpp"

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace berth::bus {

namespace {

using clock = std::chrono::steady_clock;

std::once_flag nats_init_once;

void init_library() {
  std::call_once(nats_init_once, [] { nats_Open(-1); });
}

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("bus");
  return l;
}

// Copy a natsMsg into a berth message (does not destroy it).
message copy_message(natsMsg* m) {
  message out;
  out.subject = natsMsg_GetSubject(m);
  if (const char* r = natsMsg_GetReply(m)) out.reply = r;
  if (const char* d = natsMsg_GetData(m))
    out.data.assign(d, static_cast<std::size_t>(natsMsg_GetDataLength(m)));
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(m, &keys, &count) == NATS_OK) {
    for (int i = 0; i < count; ++i) {
      const char* v = nullptr;
      if (natsMsgHeader_Get(m, keys[i], &v) == NATS_OK && v) out.headers[keys[i]] = v;
    }
    free(static_cast<void*>(keys));
  }
  out.seq = natsMsg_GetSequence(m);
  out.time_ns = natsMsg_GetTime(m);
  if (out.seq == 0) {
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK && meta) {
      out.seq = meta->Sequence.Stream;
      out.time_ns = meta->Timestamp;
      jsMsgMetaData_Destroy(meta);
    }
  }
  if (out.seq == 0) {
    auto it = out.headers.find("Nats-Sequence");
    if (it != out.headers.end()) out.seq = std::stoull(it->second);
  }
  // Direct-get answers carry the original subject in a header.
  auto subj = out.headers.find("Nats-Subject");
  if (subj != out.headers.end()) out.subject = subj->second;
  return out;
}

}  // namespace

std::string redact_url(const std::string& url) {
  auto scheme = url.find("://");
  auto start = scheme == std::string::npos ? 0 : scheme + 3;
  auto at = url.find('@', start);
  if (at == std::string::npos) return url;
  return url.substr(0, start) + "***" + url.substr(at);
}

std::string message::header(const std::string& key) const {
  auto it = headers.find(key);
  return it == headers.end() ? std::string() : it->second;
}

// ---------------------------------------------------------------------------------------------
// client::impl

struct client::impl {
  options opts;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  std::mutex kv_mu;
  std::map<std::string, kvStore*> kvs;
  std::atomic<bool> closing{false};
  // In-flight asynchronous publishes by Nats-Msg-Id.
  std::mutex async_mu;
  std::unordered_map<std::string, std::pair<std::string, std::function<void(result<pub_ack>)>>>
      async_done;
  std::mutex closed_mu;
  std::condition_variable closed_cv;
  bool closed = false;

  ~impl() {
    for (auto& [_, kv] : kvs) kvStore_Destroy(kv);
    if (js) jsCtx_Destroy(js);
    if (nc) {
      closing = true;
      natsConnection_Close(nc);
      // The connection callbacks run on nats.c's own thread; wait for the last one (closed)
      // so that none of them touches this object after it is gone.
      std::unique_lock lock(closed_mu);
      closed_cv.wait_for(lock, std::chrono::seconds(5), [&] { return closed; });
      lock.unlock();
      natsConnection_Destroy(nc);
    }
  }

  // Run `attempt` until it succeeds, fails for good, or the request timeout passes.
  // `attempt` returns the natsStatus and fills `js_err`.
  template <class F>
  std::pair<natsStatus, jsErrCode> with_retry(F&& attempt) {
    auto deadline = clock::now() + opts.request_timeout;
    auto backoff = std::chrono::milliseconds(50);
    for (;;) {
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = attempt(&jerr);
      if (s == NATS_OK || !is_transient(s, jerr) || clock::now() + backoff >= deadline)
        return {s, jerr};
      logger()->debug("transient NATS answer ({}, JetStream error {}); retrying in {} ms",
                      natsStatus_GetText(s), static_cast<int>(jerr), backoff.count());
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
    }
  }

  result<kvStore*> bucket(const std::string& name) {
    std::lock_guard lock(kv_mu);
    auto it = kvs.find(name);
    if (it != kvs.end()) return it->second;
    kvStore* kv = nullptr;
    auto [s, jerr] = with_retry([&](jsErrCode*) { return js_KeyValue(&kv, js, name.c_str()); });
    if (s != NATS_OK) return translate(s, jerr, "bind KV bucket " + name);
    kvs.emplace(name, kv);
    return kv;
  }
};

client::client(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
client::~client() = default;

namespace {
// Every asynchronous publish ends here, acked or not (nats.c's thread).
void on_async_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  auto* i = static_cast<client::impl*>(closure);
  // With an AckHandler the original message is ours to destroy (nats.h, jsPubAckHandler).
  std::string id;
  if (const char* h = nullptr; natsMsgHeader_Get(msg, "Nats-Msg-Id", &h) == NATS_OK && h) id = h;
  natsMsg_Destroy(msg);
  std::pair<std::string, std::function<void(result<pub_ack>)>> entry;
  {
    std::lock_guard lock(i->async_mu);
    auto it = i->async_done.find(id);
    if (it == i->async_done.end()) return;
    entry = std::move(it->second);
    i->async_done.erase(it);
  }
  if (pae != nullptr) {
    entry.second(translate(pae->Err, pae->ErrCode, "publish to " + entry.first));
  } else if (pa != nullptr) {
    entry.second(pub_ack{pa->Sequence, pa->Duplicate});
  } else {
    entry.second(error{errc::internal, "publish to " + entry.first + ": no acknowledgement"});
  }
}

void on_closed(natsConnection*, void* closure) {
  auto* i = static_cast<client::impl*>(closure);
  std::lock_guard lock(i->closed_mu);
  i->closed = true;
  i->closed_cv.notify_all();
}
void on_disconnected(natsConnection*, void* closure) {
  auto* i = static_cast<client::impl*>(closure);
  if (i->closing) return;
  logger()->warn("disconnected from NATS; reconnecting");
  if (i->opts.on_connection_change) i->opts.on_connection_change(false);
}
void on_reconnected(natsConnection* nc, void* closure) {
  auto* i = static_cast<client::impl*>(closure);
  char url[256] = {0};
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  logger()->info("reconnected to NATS at {}", redact_url(url));
  if (i->opts.on_connection_change) i->opts.on_connection_change(true);
}
}  // namespace

result<std::unique_ptr<client>> client::connect(options o) {
  init_library();
  if (o.servers.empty()) return error{errc::invalid_argument, "nats.servers: no server URL given"};
  auto i = std::make_unique<impl>();
  i->opts = std::move(o);
  natsOptions* nopts = nullptr;
  if (natsOptions_Create(&nopts) != NATS_OK)
    return error{errc::internal, "cannot create NATS options"};
  std::vector<const char*> urls;
  for (const auto& s : i->opts.servers) urls.push_back(s.c_str());
  natsOptions_SetServers(nopts, urls.data(), static_cast<int>(urls.size()));
  natsOptions_SetName(nopts, i->opts.name.c_str());
  natsOptions_SetMaxReconnect(nopts, -1);
  natsOptions_SetReconnectWait(nopts, 200);
  natsOptions_SetReconnectJitter(nopts, 50, 100);
  natsOptions_SetReconnectBufSize(nopts, 8 * 1024 * 1024);
  natsOptions_SetTimeout(nopts, 2000);
  natsOptions_SetPingInterval(nopts, 10'000);
  natsOptions_SetMaxPingsOut(nopts, 3);
  natsOptions_SetSendAsap(nopts, i->opts.send_asap);
  natsOptions_SetDisconnectedCB(nopts, on_disconnected, i.get());
  natsOptions_SetReconnectedCB(nopts, on_reconnected, i.get());
  natsOptions_SetClosedCB(nopts, on_closed, i.get());
  if (!i->opts.creds.empty()) {
    auto s = natsOptions_SetUserCredentialsFromFiles(nopts, i->opts.creds.c_str(), nullptr);
    if (s != NATS_OK) {
      natsOptions_Destroy(nopts);
      return translate(s, static_cast<jsErrCode>(0), "nats.creds " + i->opts.creds);
    }
  }
  auto deadline = clock::now() + i->opts.connect_timeout;
  natsStatus s = NATS_OK;
  for (;;) {
    s = natsConnection_Connect(&i->nc, nopts);
    if (s == NATS_OK || clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  natsOptions_Destroy(nopts);
  if (s != NATS_OK) {
    i->nc = nullptr;  // nothing to close
    std::string list;
    for (const auto& u : i->opts.servers) list += (list.empty() ? "" : ", ") + redact_url(u);
    auto e = translate(s, static_cast<jsErrCode>(0), "connect to NATS at " + list);
    e.code = make_error_code(errc::unavailable);
    return e;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = i->opts.request_timeout.count();
  jo.PublishAsync.AckHandler = on_async_ack;
  jo.PublishAsync.AckHandlerClosure = i.get();
  s = natsConnection_JetStream(&i->js, i->nc, &jo);
  if (s != NATS_OK) return translate(s, static_cast<jsErrCode>(0), "JetStream context");
  // Wait until JetStream answers (a freshly started or electing server says "no responders").
  jsAccountInfo* ai = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  for (;;) {
    s = js_GetAccountInfo(&ai, i->js, nullptr, &jerr);
    if (s == NATS_OK || clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (s != NATS_OK) {
    auto e = translate(s, jerr, "JetStream is not enabled or not ready on the NATS server");
    e.code = make_error_code(errc::unavailable);
    return e;
  }
  jsAccountInfo_Destroy(ai);
  return std::unique_ptr<client>(new client(std::move(i)));
}

std::string client::connected_url() const {
  char url[256] = {0};
  natsConnection_GetConnectedUrl(impl_->nc, url, sizeof url);
  return url;
}

millis client::request_timeout() const {
  return impl_->opts.request_timeout;
}

bool client::is_connected() const {
  return natsConnection_Status(impl_->nc) == NATS_CONN_STATUS_CONNECTED;
}

// ---------------------------------------------------------------------------------------------
// provisioning

namespace {

status ensure_stream(client::impl& i, jsStreamConfig& cfg) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  auto [s, e] =
      i.with_retry([&](jsErrCode* je) { return js_AddStream(&si, i.js, &cfg, nullptr, je); });
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return {};
  }
  jerr = e;
  if (jerr == JSStreamNameExistErr) {
    auto [s2, e2] =
        i.with_retry([&](jsErrCode* je) { return js_UpdateStream(&si, i.js, &cfg, nullptr, je); });
    if (s2 == NATS_OK) {
      jsStreamInfo_Destroy(si);
      return {};
    }
    return translate(s2, e2, std::string("update stream ") + cfg.Name);
  }
  return translate(s, jerr, std::string("create stream ") + cfg.Name);
}

status ensure_bucket(client::impl& i, const std::string& name, int replicas, std::uint8_t history,
                     std::int64_t ttl_ns = 0) {
  kvConfig kc;
  kvConfig_Init(&kc);
  kc.Bucket = name.c_str();
  kc.History = history;
  kc.TTL = ttl_ns;
  kc.Replicas = replicas;
  kc.StorageType = js_FileStorage;
  kvStore* kv = nullptr;
  auto [s, jerr] = i.with_retry([&](jsErrCode*) { return js_CreateKeyValue(&kv, i.js, &kc); });
  if (s != NATS_OK) {
    // Already there with other settings: bind to it as it is.
    auto [s2, jerr2] =
        i.with_retry([&](jsErrCode*) { return js_KeyValue(&kv, i.js, name.c_str()); });
    if (s2 != NATS_OK) return translate(s, jerr, "create KV bucket " + name);
  }
  std::lock_guard lock(i.kv_mu);
  if (!i.kvs.emplace(name, kv).second) kvStore_Destroy(kv);
  return {};
}

}  // namespace

status client::provision(const subjects& names, const provision_options& po) {
  auto& i = *impl_;
  auto ns = [](millis m) { return static_cast<std::int64_t>(m.count()) * 1'000'000; };
  struct spec {
    std::string name;
    std::string subject;
    jsRetentionPolicy retention;
    std::int64_t max_bytes;
    std::int64_t max_age;
    std::int64_t dup;
  };
  std::vector<spec> streams = {
      {names.stream_in(), names.input_wildcard(), js_LimitsPolicy, -1, 0, ns(po.duplicate_window)},
      {names.stream_ev(), names.journal_wildcard(), js_LimitsPolicy, -1, 0,
       ns(std::chrono::minutes(10))},
      {names.stream_log(), names.prefix() + ".log.>", js_LimitsPolicy, po.log_max_bytes,
       ns(po.log_max_age), ns(std::chrono::minutes(2))},
      {names.stream_work(), names.work_wildcard(), js_WorkQueuePolicy, -1, 0,
       ns(std::chrono::hours(24))},
  };
  for (auto& sp : streams) {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char* subj = sp.subject.c_str();
    cfg.Name = sp.name.c_str();
    cfg.Subjects = &subj;
    cfg.SubjectsLen = 1;
    cfg.Retention = sp.retention;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = po.replicas;
    cfg.MaxBytes = sp.max_bytes;
    cfg.MaxAge = sp.max_age;
    cfg.Duplicates = sp.dup;
    cfg.AllowDirect = true;
    cfg.Discard = js_DiscardOld;
    BERTH_TRY(ensure_stream(i, cfg));
  }
  BERTH_TRY(ensure_bucket(i, names.bucket_owners(), static_cast<int>(po.replicas), 1));
  BERTH_TRY(ensure_bucket(i, names.bucket_nodes(), static_cast<int>(po.replicas), 1));
  BERTH_TRY(ensure_bucket(i, names.bucket_sessions(), static_cast<int>(po.replicas), 1));
  BERTH_TRY(
      ensure_bucket(i, names.bucket_diffs(), static_cast<int>(po.replicas), 1, ns(po.log_max_age)));
  return {};
}

// ---------------------------------------------------------------------------------------------
// publish / request

result<pub_ack> client::publish(const std::string& subject, const std::string& data,
                                const publish_options& po) {
  auto& i = *impl_;
  jsPubAck* pa = nullptr;
  auto [s, jerr] = i.with_retry([&](jsErrCode* je) {
    natsMsg* m = nullptr;
    natsStatus st =
        natsMsg_Create(&m, subject.c_str(), nullptr, data.data(), static_cast<int>(data.size()));
    if (st != NATS_OK) return st;
    if (!po.msg_id.empty()) natsMsgHeader_Set(m, "Nats-Msg-Id", po.msg_id.c_str());
    if (po.expected_last_subject_seq)
      natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence",
                        std::to_string(*po.expected_last_subject_seq).c_str());
    st = js_PublishMsg(&pa, i.js, m, nullptr, je);
    natsMsg_Destroy(m);
    return st;
  });
  if (s != NATS_OK) return translate(s, jerr, "publish to " + subject);
  if (!pa) return error{errc::internal, "publish to " + subject + ": no acknowledgement"};
  pub_ack out{pa->Sequence, pa->Duplicate};
  jsPubAck_Destroy(pa);
  return out;
}

status client::publish_async(const std::string& subject, const std::string& data,
                             const publish_options& po, std::function<void(result<pub_ack>)> done) {
  auto& i = *impl_;
  BERTH_ASSERT(!po.msg_id.empty(), "publish_async needs a Nats-Msg-Id");
  {
    std::lock_guard lock(i.async_mu);
    if (!i.async_done.emplace(po.msg_id, std::make_pair(subject, std::move(done))).second)
      return error{errc::conflict,
                   "publish to " + subject + ": message " + po.msg_id + " is already in flight"};
  }
  natsMsg* m = nullptr;
  natsStatus st =
      natsMsg_Create(&m, subject.c_str(), nullptr, data.data(), static_cast<int>(data.size()));
  if (st == NATS_OK) st = natsMsgHeader_Set(m, "Nats-Msg-Id", po.msg_id.c_str());
  if (st == NATS_OK && po.expected_last_subject_seq)
    st = natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence",
                           std::to_string(*po.expected_last_subject_seq).c_str());
  if (st == NATS_OK) {
    jsPubOptions jpo;
    jsPubOptions_Init(&jpo);
    jpo.MaxWait = i.opts.request_timeout.count();
    st = js_PublishMsgAsync(i.js, &m, &jpo);
  }
  natsMsg_Destroy(m);  // no-op when the library took it
  if (st != NATS_OK) {
    std::lock_guard lock(i.async_mu);
    i.async_done.erase(po.msg_id);
    return translate(st, static_cast<jsErrCode>(0), "publish to " + subject);
  }
  return {};
}

status client::publish_core(const std::string& subject, const std::string& data,
                            const std::map<std::string, std::string>& headers) {
  natsStatus s = NATS_OK;
  if (headers.empty()) {
    s = natsConnection_Publish(impl_->nc, subject.c_str(), data.data(),
                               static_cast<int>(data.size()));
  } else {
    natsMsg* m = nullptr;
    s = natsMsg_Create(&m, subject.c_str(), nullptr, data.data(), static_cast<int>(data.size()));
    if (s == NATS_OK) {
      for (const auto& [k, v] : headers) natsMsgHeader_Set(m, k.c_str(), v.c_str());
      s = natsConnection_PublishMsg(impl_->nc, m);
      natsMsg_Destroy(m);
    }
  }
  if (s != NATS_OK) return translate(s, static_cast<jsErrCode>(0), "publish to " + subject);
  return {};
}

result<message> client::request(const std::string& subject, const std::string& data,
                                millis timeout) {
  natsMsg* reply = nullptr;
  auto s = natsConnection_Request(&reply, impl_->nc, subject.c_str(), data.data(),
                                  static_cast<int>(data.size()), timeout.count());
  if (s != NATS_OK) return translate(s, static_cast<jsErrCode>(0), "request on " + subject);
  auto out = copy_message(reply);
  natsMsg_Destroy(reply);
  return out;
}

// ---------------------------------------------------------------------------------------------
// reads

namespace {
result<std::optional<message>> direct_get(client::impl& i, const std::string& stream,
                                          jsDirectGetMsgOptions& o, const std::string& what) {
  natsMsg* m = nullptr;
  auto [s, jerr] = i.with_retry(
      [&](jsErrCode*) { return js_DirectGetMsg(&m, i.js, stream.c_str(), nullptr, &o); });
  if (s == NATS_NOT_FOUND) {
    return std::optional<message>();
  }
  if (s != NATS_OK) return translate(s, jerr, what);
  auto out = copy_message(m);
  natsMsg_Destroy(m);
  return std::optional<message>(std::move(out));
}
}  // namespace

result<std::optional<message>> client::next_message(const std::string& stream,
                                                    const std::string& subject,
                                                    std::uint64_t from_seq) {
  jsDirectGetMsgOptions o;
  jsDirectGetMsgOptions_Init(&o);
  o.Sequence = from_seq == 0 ? 1 : from_seq;
  o.NextBySubject = subject.c_str();
  return direct_get(*impl_, stream, o,
                    "read " + subject + " from sequence " + std::to_string(from_seq));
}

status client::read_subject(const std::string& stream, const std::string& subject,
                            std::uint64_t from_seq, const std::function<bool(message&)>& fn) {
  auto seq = from_seq == 0 ? 1 : from_seq;
  for (;;) {
    auto msg = next_message(stream, subject, seq);
    if (!msg) return msg.err();
    if (!msg->has_value()) return {};
    seq = (*msg)->seq + 1;
    if (!fn(**msg)) return {};
  }
}

result<std::optional<message>> client::last_message(const std::string& stream,
                                                    const std::string& subject) {
  jsDirectGetMsgOptions o;
  jsDirectGetMsgOptions_Init(&o);
  o.LastBySubject = subject.c_str();
  return direct_get(*impl_, stream, o, "read last message of " + subject);
}

result<std::optional<message>> client::message_at(const std::string& stream, std::uint64_t seq) {
  jsDirectGetMsgOptions o;
  jsDirectGetMsgOptions_Init(&o);
  o.Sequence = seq;
  return direct_get(*impl_, stream, o, "read " + stream + " sequence " + std::to_string(seq));
}

result<std::map<std::string, std::uint64_t>> client::stream_subjects(const std::string& stream,
                                                                     const std::string& filter) {
  auto& i = *impl_;
  jsOptions o;
  jsOptions_Init(&o);
  o.Stream.Info.SubjectsFilter = filter.c_str();
  jsStreamInfo* si = nullptr;
  auto [s, jerr] = i.with_retry(
      [&](jsErrCode* je) { return js_GetStreamInfo(&si, i.js, stream.c_str(), &o, je); });
  if (s != NATS_OK) return translate(s, jerr, "stream info " + stream);
  std::map<std::string, std::uint64_t> out;
  if (si->State.Subjects)
    for (int k = 0; k < si->State.Subjects->Count; ++k)
      out.emplace(si->State.Subjects->List[k].Subject, si->State.Subjects->List[k].Msgs);
  jsStreamInfo_Destroy(si);
  return out;
}

// ---------------------------------------------------------------------------------------------
// KV

result<std::optional<kv_entry>> client::kv_get(const std::string& bucket, const std::string& key) {
  auto kv = impl_->bucket(bucket);
  if (!kv) return kv.err();
  kvEntry* e = nullptr;
  auto [s, jerr] = impl_->with_retry([&](jsErrCode*) { return kvStore_Get(&e, *kv, key.c_str()); });
  if (s == NATS_NOT_FOUND) {
    return std::optional<kv_entry>();
  }
  if (s != NATS_OK) return translate(s, jerr, "KV get " + bucket + "/" + key);
  kv_entry out{std::string(static_cast<const char*>(kvEntry_Value(e)),
                           static_cast<std::size_t>(kvEntry_ValueLen(e))),
               kvEntry_Revision(e)};
  kvEntry_Destroy(e);
  return std::optional<kv_entry>(std::move(out));
}

result<std::uint64_t> client::kv_create(const std::string& bucket, const std::string& key,
                                        const std::string& value) {
  auto kv = impl_->bucket(bucket);
  if (!kv) return kv.err();
  std::uint64_t rev = 0;
  auto [s, jerr] = impl_->with_retry([&](jsErrCode*) {
    return kvStore_Create(&rev, *kv, key.c_str(), value.data(), static_cast<int>(value.size()));
  });
  if (s == NATS_OK) return rev;
  auto failure = translate(s, jerr, "KV create " + bucket + "/" + key);
  auto existing = kv_get(bucket, key);
  if (existing && existing->has_value())
    return error{errc::conflict, "KV " + bucket + "/" + key + " already exists at revision " +
                                     std::to_string((*existing)->revision)};
  return failure;
}

result<std::uint64_t> client::kv_put(const std::string& bucket, const std::string& key,
                                     const std::string& value) {
  auto kv = impl_->bucket(bucket);
  if (!kv) return kv.err();
  std::uint64_t rev = 0;
  auto [s, jerr] = impl_->with_retry([&](jsErrCode*) {
    return kvStore_Put(&rev, *kv, key.c_str(), value.data(), static_cast<int>(value.size()));
  });
  if (s != NATS_OK) return translate(s, jerr, "KV put " + bucket + "/" + key);
  return rev;
}

result<std::uint64_t> client::kv_update(const std::string& bucket, const std::string& key,
                                        const std::string& value, std::uint64_t revision) {
  auto kv = impl_->bucket(bucket);
  if (!kv) return kv.err();
  std::uint64_t rev = 0;
  auto [s, jerr] = impl_->with_retry([&](jsErrCode*) {
    return kvStore_Update(&rev, *kv, key.c_str(), value.data(), static_cast<int>(value.size()),
                          revision);
  });
  if (s == NATS_OK) return rev;
  auto failure = translate(s, jerr, "KV update " + bucket + "/" + key);
  auto existing = kv_get(bucket, key);
  if (existing && (!existing->has_value() || (*existing)->revision != revision))
    return error{errc::conflict,
                 "KV " + bucket + "/" + key + " moved past revision " + std::to_string(revision)};
  return failure;
}

status client::kv_delete(const std::string& bucket, const std::string& key) {
  auto kv = impl_->bucket(bucket);
  if (!kv) return kv.err();
  auto [s, jerr] = impl_->with_retry([&](jsErrCode*) { return kvStore_Delete(*kv, key.c_str()); });
  if (s != NATS_OK) return translate(s, jerr, "KV delete " + bucket + "/" + key);
  return {};
}

result<std::map<std::string, kv_entry>> client::kv_entries(const std::string& bucket) {
  auto kv = impl_->bucket(bucket);
  if (!kv) return kv.err();
  kvWatchOptions o;
  kvWatchOptions_Init(&o);
  o.IgnoreDeletes = true;
  kvWatcher* w = nullptr;
  auto s = kvStore_WatchAll(&w, *kv, &o);
  if (s != NATS_OK) return translate(s, static_cast<jsErrCode>(0), "KV watch " + bucket);
  std::map<std::string, kv_entry> out;
  for (;;) {
    kvEntry* e = nullptr;
    s = kvWatcher_Next(&e, w, impl_->opts.request_timeout.count());
    if (s != NATS_OK) break;
    if (!e) break;  // the initial state is complete
    out[kvEntry_Key(e)] = kv_entry{std::string(static_cast<const char*>(kvEntry_Value(e)),
                                               static_cast<std::size_t>(kvEntry_ValueLen(e))),
                                   kvEntry_Revision(e)};
    kvEntry_Destroy(e);
  }
  kvWatcher_Destroy(w);
  if (s != NATS_OK) return translate(s, static_cast<jsErrCode>(0), "KV read of " + bucket);
  return out;
}

// ---------------------------------------------------------------------------------------------
// subscriptions

struct subscription::impl {
  natsSubscription* sub = nullptr;
  std::function<void(message)> fn;
  std::mutex mu;
  std::condition_variable cv;
  bool complete = false;

  ~impl() {
    if (!sub) return;
    natsSubscription_Unsubscribe(sub);
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::seconds(5), [&] { return complete; });
    lock.unlock();
    natsSubscription_Destroy(sub);
  }
};

subscription::subscription(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
subscription::~subscription() = default;

namespace {
void on_sub_message(natsConnection*, natsSubscription*, natsMsg* m, void* closure) {
  auto* i = static_cast<subscription::impl*>(closure);
  auto copy = copy_message(m);
  natsMsg_Destroy(m);
  i->fn(std::move(copy));
}
void on_sub_complete(void* closure) {
  auto* i = static_cast<subscription::impl*>(closure);
  std::lock_guard lock(i->mu);
  i->complete = true;
  i->cv.notify_all();
}
}  // namespace

result<std::unique_ptr<subscription>> client::subscribe(const std::string& subject,
                                                        const std::string& queue,
                                                        std::function<void(message)> on_message) {
  auto i = std::make_unique<subscription::impl>();
  i->fn = std::move(on_message);
  natsStatus s =
      queue.empty()
          ? natsConnection_Subscribe(&i->sub, impl_->nc, subject.c_str(), on_sub_message, i.get())
          : natsConnection_QueueSubscribe(&i->sub, impl_->nc, subject.c_str(), queue.c_str(),
                                          on_sub_message, i.get());
  if (s != NATS_OK) return translate(s, static_cast<jsErrCode>(0), "subscribe to " + subject);
  natsSubscription_SetPendingLimits(i->sub, 1'000'000, 1LL << 30);
  natsSubscription_SetOnCompleteCB(i->sub, on_sub_complete, i.get());
  natsConnection_Flush(impl_->nc);
  return std::make_unique<subscription>(std::move(i));
}

namespace {
result<std::unique_ptr<subscription>> ordered(jsCtx* js, const std::string& stream,
                                              const std::string& filter, jsDeliverPolicy policy,
                                              std::uint64_t start_seq,
                                              std::function<void(message)> on_message);
}  // namespace

result<std::unique_ptr<subscription>> client::follow_new(const std::string& stream,
                                                         const std::string& filter,
                                                         std::function<void(message)> on_message) {
  return ordered(impl_->js, stream, filter, js_DeliverNew, 0, std::move(on_message));
}

result<std::unique_ptr<subscription>> client::follow(const std::string& stream,
                                                     const std::string& filter,
                                                     std::uint64_t start_seq,
                                                     std::function<void(message)> on_message) {
  return ordered(impl_->js, stream, filter,
                 start_seq > 0 ? js_DeliverByStartSequence : js_DeliverAll, start_seq,
                 std::move(on_message));
}

namespace {
result<std::unique_ptr<subscription>> ordered(jsCtx* js, const std::string& stream,
                                              const std::string& filter, jsDeliverPolicy policy,
                                              std::uint64_t start_seq,
                                              std::function<void(message)> on_message) {
  auto i = std::make_unique<subscription::impl>();
  i->fn = std::move(on_message);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Ordered = true;
  so.Config.DeliverPolicy = policy;
  if (policy == js_DeliverByStartSequence) so.Config.OptStartSeq = start_seq;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  auto s = js_Subscribe(&i->sub, js, filter.c_str(), on_sub_message, i.get(), nullptr, &so, &jerr);
  if (s != NATS_OK) return translate(s, jerr, "follow " + filter);
  natsSubscription_SetPendingLimits(i->sub, 1'000'000, 1LL << 30);
  natsSubscription_SetOnCompleteCB(i->sub, on_sub_complete, i.get());
  return std::make_unique<subscription>(std::move(i));
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// pull consumers

struct pull_consumer::impl {
  natsSubscription* sub = nullptr;
  std::string what;
  ~impl() {
    if (sub) natsSubscription_Destroy(sub);
  }
};

pull_consumer::pull_consumer(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
pull_consumer::~pull_consumer() = default;

result<std::unique_ptr<pull_consumer>> client::pull(const std::string& stream,
                                                    const std::string& durable,
                                                    const std::string& filter, millis ack_wait) {
  auto i = std::make_unique<pull_consumer::impl>();
  i->what = "consumer " + stream + "/" + durable;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Config.AckPolicy = js_AckExplicit;
  so.Config.AckWait = static_cast<std::int64_t>(ack_wait.count()) * 1'000'000;
  so.Config.MaxDeliver = -1;
  auto [s, jerr] = impl_->with_retry([&](jsErrCode* je) {
    return js_PullSubscribe(&i->sub, impl_->js, filter.c_str(), durable.c_str(), nullptr, &so, je);
  });
  if (s != NATS_OK) return translate(s, jerr, "bind " + i->what);
  return std::make_unique<pull_consumer>(std::move(i));
}

result<std::vector<fetched_message>> pull_consumer::fetch(int batch, millis timeout) {
  natsMsgList list{};
  jsErrCode jerr = static_cast<jsErrCode>(0);
  auto s = natsSubscription_Fetch(&list, impl_->sub, batch,
                                  std::max<std::int64_t>(1, timeout.count()), &jerr);
  std::vector<fetched_message> out;
  if (s == NATS_TIMEOUT || s == NATS_NOT_FOUND) {
    return out;
  }
  if (s != NATS_OK) return translate(s, jerr, "fetch from " + impl_->what);
  for (int k = 0; k < list.Count; ++k) {
    natsMsg* m = list.Msgs[k];
    list.Msgs[k] = nullptr;
    std::uint64_t delivered = 1;
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK && meta) {
      delivered = meta->NumDelivered;
      jsMsgMetaData_Destroy(meta);
    }
    auto copy = copy_message(m);
    out.emplace_back(m, std::move(copy), delivered);
  }
  natsMsgList_Destroy(&list);
  return out;
}

fetched_message::fetched_message(void* raw, message m, std::uint64_t delivered)
    : raw_(raw), msg_(std::move(m)), delivered_(delivered) {}
fetched_message::~fetched_message() {
  if (raw_) natsMsg_Destroy(static_cast<natsMsg*>(raw_));
}
fetched_message::fetched_message(fetched_message&& o) noexcept
    : raw_(std::exchange(o.raw_, nullptr)), msg_(std::move(o.msg_)), delivered_(o.delivered_) {}
fetched_message& fetched_message::operator=(fetched_message&& o) noexcept {
  if (this != &o) {
    if (raw_) natsMsg_Destroy(static_cast<natsMsg*>(raw_));
    raw_ = std::exchange(o.raw_, nullptr);
    msg_ = std::move(o.msg_);
    delivered_ = o.delivered_;
  }
  return *this;
}

status fetched_message::ack() {
  auto s = natsMsg_Ack(static_cast<natsMsg*>(raw_), nullptr);
  if (s != NATS_OK) return translate(s, static_cast<jsErrCode>(0), "ack " + msg_.subject);
  return {};
}
status fetched_message::nak(millis delay) {
  auto s = natsMsg_NakWithDelay(static_cast<natsMsg*>(raw_), delay.count(), nullptr);
  if (s != NATS_OK) return translate(s, static_cast<jsErrCode>(0), "nak " + msg_.subject);
  return {};
}
status fetched_message::term() {
  auto s = natsMsg_Term(static_cast<natsMsg*>(raw_), nullptr);
  if (s != NATS_OK) return translate(s, static_cast<jsErrCode>(0), "term " + msg_.subject);
  return {};
}

}  // namespace berth::bus
