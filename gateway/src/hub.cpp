#include "hub.hpp"

namespace berth::gateway {

namespace {
// What a shared feed keeps for late joiners: enough for a subscription to catch up between its
// backlog's end and its join, not a history.
constexpr std::size_t keep_messages = 4096;
constexpr std::size_t keep_bytes = 8u << 20;
}  // namespace

std::string hub::key_of(const topic& t) {
  switch (t.k) {
    case topic::kind::events:
      return "ev/" + t.session;
    case topic::kind::logs:
      return "log/" + t.session + "/" + t.step;
    case topic::kind::sessions:
      return "sessions";  // filters are applied per connection
  }
  return t.name;
}

std::optional<std::uint64_t> hub::join(const topic& t, std::uint64_t after, sink s) {
  std::lock_guard lock(mu_);
  auto key = key_of(t);
  auto it = feeds_.find(key);
  if (it == feeds_.end()) {
    auto f = std::make_shared<shared>();
    f->covered_after = after;
    std::weak_ptr<shared> weak = f;
    auto consumer = open_feed(g_, t, after, [weak](bus::message m) {
      auto f2 = weak.lock();
      if (!f2) return;
      auto msg = std::make_shared<const bus::message>(std::move(m));
      std::lock_guard l(f2->mu);
      f2->recent.push_back(msg);
      f2->recent_bytes += msg->data.size();
      while (f2->recent.size() > keep_messages || f2->recent_bytes > keep_bytes) {
        f2->covered_after = f2->recent.front()->seq;
        f2->recent_bytes -= f2->recent.front()->data.size();
        f2->recent.pop_front();
      }
      for (auto& [_, l2] : f2->listeners) l2(msg);
    });
    if (!consumer) return std::nullopt;
    std::lock_guard l(f->mu);
    f->consumer = std::move(*consumer);
    it = feeds_.emplace(key, f).first;
  }
  auto& f = *it->second;
  std::lock_guard l(f.mu);
  if (after < f.covered_after) return std::nullopt;
  for (const auto& m : f.recent)
    if (m->seq > after) s(m);
  auto token = f.next_token++;
  f.listeners.emplace(token, std::move(s));
  return token;
}

void hub::leave(const topic& t, std::uint64_t token) {
  std::unique_ptr<bus::subscription> gone;
  {
    std::lock_guard lock(mu_);
    auto it = feeds_.find(key_of(t));
    if (it == feeds_.end()) return;
    std::lock_guard l(it->second->mu);
    it->second->listeners.erase(token);
    if (!it->second->listeners.empty()) return;
    gone = std::move(it->second->consumer);
    feeds_.erase(it);
  }
  close_feed(g_, std::move(gone));
}

std::size_t hub::feeds() const {
  std::lock_guard lock(mu_);
  return feeds_.size();
}

}  // namespace berth::gateway
