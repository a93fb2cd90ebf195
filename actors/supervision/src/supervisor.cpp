#include "berth/supervision/supervisor.hpp"

#include "berth/base/log.hpp"
#include "berth/protocol/atoms.hpp"

#include <caf/all.hpp>

#include <map>

namespace berth::supervision {

restart_tracker::decision restart_tracker::on_failure(std::int64_t now_ms) {
  failures_.push_back(now_ms);
  while (!failures_.empty() && failures_.front() <= now_ms - policy_.window.count())
    failures_.pop_front();
  decision d;
  d.failures_in_window = static_cast<int>(failures_.size());
  if (d.failures_in_window > policy_.max_restarts) return d;
  d.restart = true;
  auto delay = policy_.initial_backoff.count();
  for (int i = 1; i < d.failures_in_window && delay < policy_.max_backoff.count(); ++i) delay *= 2;
  d.delay = millis(std::min(delay, static_cast<std::int64_t>(policy_.max_backoff.count())));
  return d;
}

namespace {

struct child {
  caf::actor handle;
  restart_tracker tracker;
  bool escalated = false;
};

struct supervisor_state {
  restart_policy policy;
  child_factory factory;
  std::function<void(const std::string&, const std::string&)> on_event;
  std::map<std::string, child> children;
  std::map<caf::actor_addr, std::string> keys;
  bool stopping = false;
  caf::actor stop_requester;
  static inline const char* name = "berth.supervisor";
};

using actor_t = caf::stateful_actor<supervisor_state>;

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("supervisor");
  return l;
}

void maybe_finish_stop(actor_t* self) {
  auto& s = self->state;
  if (s.stopping && s.keys.empty()) {
    if (s.stop_requester) self->send(s.stop_requester, stopped_atom::value);
    self->quit();
  }
}

void spawn_child(actor_t* self, const std::string& key, const caf::message& args) {
  auto& s = self->state;
  if (s.stopping) return;
  auto it = s.children.find(key);
  if (it != s.children.end() && it->second.handle) return;
  auto h = s.factory(key, args, "");
  self->monitor(h);
  s.keys[h.address()] = key;
  auto& c =
      s.children.try_emplace(key, child{nullptr, restart_tracker(s.policy), false}).first->second;
  c.handle = h;
}

caf::behavior supervisor_behavior(
    actor_t* self, restart_policy policy, child_factory factory,
    std::function<void(const std::string&, const std::string&)> on_event) {
  self->state.policy = policy;
  self->state.factory = std::move(factory);
  self->state.on_event = std::move(on_event);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& s = self->state;
    auto it = s.keys.find(dm.source);
    if (it == s.keys.end()) return;
    auto key = it->second;
    s.keys.erase(it);
    auto cit = s.children.find(key);
    if (cit == s.children.end()) return;
    auto& c = cit->second;
    c.handle = nullptr;
    bool normal = dm.reason == caf::none || dm.reason == caf::exit_reason::normal;
    bool fenced = dm.reason == caf::exit_reason::user_shutdown;
    if (normal || fenced || s.stopping || c.escalated) {
      if (c.escalated && !normal)
        logger()->error("{}: exited abnormally after escalation: {}", key, to_string(dm.reason));
      s.children.erase(cit);
      maybe_finish_stop(self);
      return;
    }
    auto what = to_string(dm.reason);
    auto d = c.tracker.on_failure(now_unix_ms());
    if (d.restart) {
      logger()->warn("{}: exited with {}; restart {} in {} ms", key, what, d.failures_in_window,
                     d.delay.count());
      if (s.on_event) s.on_event(key, "restart");
      self->delayed_send(self, d.delay, restart_atom::value, key);
    } else {
      auto reason = "supervisor gave up after " + std::to_string(d.failures_in_window) +
                    " failures within " + format_duration(s.policy.window) + "; last: " + what;
      logger()->error("{}: {}", key, reason);
      if (s.on_event) s.on_event(key, "escalate");
      c.escalated = true;
      auto h = s.factory(key, caf::message{}, reason);
      self->monitor(h);
      s.keys[h.address()] = key;
      c.handle = h;
    }
  });
  return {
      [=](spawn_atom, const std::string& key) { spawn_child(self, key, caf::message{}); },
      [=](spawn_atom, const std::string& key, const caf::message& args) {
        spawn_child(self, key, args);
      },
      [=](restart_atom, const std::string& key) {
        auto& s = self->state;
        auto it = s.children.find(key);
        if (s.stopping || it == s.children.end() || it->second.handle) return;
        auto h = s.factory(key, caf::message{}, "");
        self->monitor(h);
        s.keys[h.address()] = key;
        it->second.handle = h;
      },
      [=](stop_atom) {
        auto& s = self->state;
        s.stopping = true;
        s.stop_requester = caf::actor_cast<caf::actor>(self->current_sender());
        for (auto& [key, c] : s.children)
          if (c.handle) self->send(c.handle, stop_atom::value);
        // Children waiting for a delayed restart are dropped: their state is durable.
        for (auto it = s.children.begin(); it != s.children.end();)
          it = it->second.handle ? std::next(it) : s.children.erase(it);
        maybe_finish_stop(self);
      },
  };
}

}  // namespace

caf::actor spawn_supervisor(
    caf::actor_system& sys, restart_policy policy, child_factory factory,
    std::function<void(const std::string& key, const std::string& what)> on_event) {
  return sys.spawn(supervisor_behavior, policy, std::move(factory), std::move(on_event));
}

}  // namespace berth::supervision
