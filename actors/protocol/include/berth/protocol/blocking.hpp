#pragma once

// "Run blocking work on a pool, then continue on the actor that asked": the one way actors here
// leave their scheduler thread for libgit2, RocksDB, JetStream round trips or a provider call.

#include "berth/base/worker_pool.hpp"

#include <caf/actor_cast.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/send.hpp>

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace berth::protocol {

/// The continuation of a blocking job, sent back to the actor that posted it. Never serialized
/// (it holds a closure, and may hold credentials): local delivery only.
struct resume_job {
  std::function<void()> run;
};

/// Run `work()` on `pool`; then `then(self, result)` runs on `self`, inside its handler for
/// resume_job (which is where the actor calls its pump(): `then` only records what changed).
/// The job holds a strong handle to `self`, so the actor lives until the continuation is
/// delivered. If the actor has exited, the continuation is dropped.
///
/// `Self` is any actor type whose behaviour handles `resume_job& j` by calling `j.run()`.
template <class Self, class Work, class Then>
void run_blocking(Self* self, worker_pool& pool, Work work, Then then) {
  using result_type = std::invoke_result_t<Work&>;
  auto me = caf::actor_cast<caf::actor>(self);
  pool.post([self, me, work = std::move(work), then = std::move(then)]() mutable {
    auto box = std::make_shared<result_type>(work());
    caf::anon_send(me, resume_job{[self, box, then = std::move(then)]() mutable {
                     then(self, std::move(*box));
                   }});
  });
}

/// The same for work that returns nothing.
template <class Self, class Work, class Then>
void run_blocking_void(Self* self, worker_pool& pool, Work work, Then then) {
  auto me = caf::actor_cast<caf::actor>(self);
  pool.post([self, me, work = std::move(work), then = std::move(then)]() mutable {
    work();
    caf::anon_send(me, resume_job{[self, then = std::move(then)]() mutable { then(self); }});
  });
}

}  // namespace berth::protocol

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(berth::protocol::resume_job)
