// The host emulator's streams and events: work queued on a stream runs later, as on a GPU.
//
// Kernel launches, cuBLAS / cuBLASLt calls, cudaMemcpyAsync, cudaMemset[Async] and event
// records are queued on their stream; nothing runs until a synchronisation point asks for it
// (cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize, cudaMemcpy,
// cudaStreamQuery, cudaEventQuery, a copy into pageable host memory, cudaFree,
// cudaFreeHost). A synchronisation point runs what it waits for, in stream order, and what
// that work depends on: the work an event marks (cudaStreamWaitEvent), and the legacy default
// stream's rules (stream 0 waits for the work queued before it on every blocking stream, and
// a blocking stream waits for the work queued before it on stream 0; cudaStreamNonBlocking
// streams are independent of stream 0). Every dependency points at work queued earlier, so
// running everything in the order it was queued is one valid schedule, and a synchronisation
// point runs only what it must: a missing synchronisation or event wait leaves the other
// work undone, and the host or another stream reads the old contents.
//
// An error thrown by queued work (a kernel's milmer::Error, a deadlock) is thrown by the
// synchronisation point that ran it, and every queue is dropped, as a faulted CUDA context
// drops its work. Where the point cannot throw (cudaFree and the destroy calls, which run in
// destructors), the error is kept and thrown by the next synchronisation point.
//
// Without strict mode (MILMER_EMU_STRICT=0) each piece of work runs as it is queued (after
// what it depends on): the synchronous behaviour, where a missing synchronisation does not
// show.
#pragma once

#include <driver_types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "milmer/emu/scheduler.hpp"

namespace milmer::emu::detail {
struct QueuedOp {
  std::uint64_t serial = 0;  // the order of queueing, over all streams
  std::function<void()> run;
  // Before running: the work of stream `first` queued before serial `second`.
  std::vector<std::pair<CUstream_st*, std::uint64_t>> after;
};

// The runtime's last error (cudaGetLastError): every failing call sets it.
inline thread_local cudaError_t last_error = cudaSuccess;
inline cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}
}  // namespace milmer::emu::detail

struct CUstream_st {
  unsigned flags = 0;
  std::deque<milmer::emu::detail::QueuedOp> ops;
};
struct CUevent_st {
  CUstream_st* stream = nullptr;  // where the latest record was queued
  std::uint64_t serial = 0;       // the latest record's place in that queue
  std::uint64_t generation = 0;   // records so far; a record marks the event only if latest
  bool recorded = false;
  bool done = false;  // the latest record has run
  std::chrono::steady_clock::time_point when{};
};

namespace milmer::emu {
namespace detail {

struct Streams {
  std::recursive_mutex mu;
  CUstream_st legacy;      // stream 0 and cudaStreamLegacy
  CUstream_st per_thread;  // cudaStreamPerThread (one for the process: a blocking stream)
  std::set<CUstream_st*> live;
  std::set<CUevent_st*> events;
  std::uint64_t next_serial = 0;
  std::exception_ptr deferred_error;  // from a synchronisation point that could not throw
  Streams() {
    live.insert(&legacy);
    live.insert(&per_thread);
  }
  static Streams& get() {
    static Streams s;
    return s;
  }

  // cudaStreamCreate, cudaEventCreate: a new stream or event in its set.
  template <class T>
  cudaError_t create(T** out, std::set<T*> Streams::*set) {
    if (out == nullptr) return fail(cudaErrorInvalidValue);
    std::lock_guard lk(mu);
    *out = new T{};
    (this->*set).insert(*out);
    return cudaSuccess;
  }

  CUstream_st* resolve(cudaStream_t s) {
    if (s == nullptr || s == cudaStreamLegacy) return &legacy;
    if (s == cudaStreamPerThread) return &per_thread;
    return s;
  }

  // Runs the work of `st` queued before `limit`, with what each piece depends on first.
  void run_until(CUstream_st* st, std::uint64_t limit) {
    if (!live.count(st)) return;
    while (!st->ops.empty() && st->ops.front().serial < limit) {
      const auto after = st->ops.front().after;
      for (const auto& [other, serial] : after) run_until(other, serial);
      QueuedOp op = std::move(st->ops.front());
      st->ops.pop_front();
      op.run();
    }
  }
  void run_all() {
    for (CUstream_st* st : std::vector<CUstream_st*>(live.begin(), live.end()))
      run_until(st, next_serial + 1);
  }

  // A synchronisation point: throws a kept error first, drops every queue when work fails.
  template <class F>
  void synchronize(F&& fn) {
    if (deferred_error) std::rethrow_exception(std::exchange(deferred_error, nullptr));
    try {
      fn();
    } catch (...) {
      for (CUstream_st* st : live) st->ops.clear();
      throw;
    }
  }
  // A synchronisation point that cannot throw: a failure is kept for the next one.
  template <class F>
  void synchronize_quietly(F&& fn) noexcept {
    try {
      synchronize(std::forward<F>(fn));
    } catch (...) {
      deferred_error = std::current_exception();
    }
  }
};

}  // namespace detail

// Queues `work` on `stream` (after `after`: (stream, serial) pairs whose earlier work must
// run first) and returns its serial. Without strict mode it runs at once.
inline std::uint64_t enqueue(cudaStream_t stream, std::function<void()> work,
                             std::vector<std::pair<CUstream_st*, std::uint64_t>> after = {}) {
  auto& s = detail::Streams::get();
  std::lock_guard lk(s.mu);
  CUstream_st* st = s.resolve(stream);
  const std::uint64_t serial = ++s.next_serial;
  if (st == &s.legacy) {
    for (CUstream_st* other : s.live)
      if (other != st && !(other->flags & cudaStreamNonBlocking) && !other->ops.empty())
        after.emplace_back(other, serial);
  } else if (!(st->flags & cudaStreamNonBlocking) && !s.legacy.ops.empty()) {
    after.emplace_back(&s.legacy, serial);
  }
  st->ops.push_back(detail::QueuedOp{serial, std::move(work), std::move(after)});
  if (!strict()) s.synchronize([&] { s.run_until(st, serial + 1); });
  return serial;
}

// Runs the work queued on `stream` so far (and what it depends on).
inline void synchronize_stream(cudaStream_t stream) {
  auto& s = detail::Streams::get();
  std::lock_guard lk(s.mu);
  s.synchronize([&] { s.run_until(s.resolve(stream), s.next_serial + 1); });
}
// Runs all queued work.
inline void synchronize_device() {
  auto& s = detail::Streams::get();
  std::lock_guard lk(s.mu);
  s.synchronize([&] { s.run_all(); });
}
// cudaFree and cudaFreeHost: all queued work runs first (it may use the memory); a failure
// is thrown by the next synchronisation point.
inline void synchronize_device_quietly() noexcept {
  auto& s = detail::Streams::get();
  std::lock_guard lk(s.mu);
  s.synchronize_quietly([&] { s.run_all(); });
}

// The emulator's counters count work that has run: reading or resetting them runs all queued
// work first.
inline Counters counters() {
  synchronize_device();
  return detail::locked(detail::Global::get(), [](auto& g) { return g.counters; });
}
inline void reset_counters() {
  synchronize_device();
  detail::locked(detail::Global::get(), [](auto& g) { g.counters = Counters{}; });
}
inline LaunchRecord last_launch() {
  synchronize_device();
  return detail::locked(detail::Global::get(), [](auto& g) { return g.last; });
}

}  // namespace milmer::emu

extern "C" {

inline cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return milmer::emu::detail::Streams::get().create(stream, &milmer::emu::detail::Streams::live);
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  if (flags & ~static_cast<unsigned>(cudaStreamNonBlocking))
    return milmer::emu::detail::fail(cudaErrorInvalidValue);
  const cudaError_t e = cudaStreamCreate(stream);
  if (e == cudaSuccess) (*stream)->flags = flags;
  return e;
}
// The stream's queued work runs first (CUDA lets it finish after the call returns).
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  auto& s = milmer::emu::detail::Streams::get();
  std::lock_guard lk(s.mu);
  if (stream == nullptr || !s.live.count(stream) || stream == &s.legacy || stream == &s.per_thread)
    return milmer::emu::detail::fail(cudaErrorInvalidResourceHandle);
  s.synchronize_quietly([&] { s.run_until(stream, s.next_serial + 1); });
  s.live.erase(stream);
  delete stream;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  milmer::emu::synchronize_stream(stream);
  return cudaSuccess;
}
// A query runs the stream's work, so it always reports it finished.
inline cudaError_t cudaStreamQuery(cudaStream_t stream) {
  return cudaStreamSynchronize(stream);
}
inline cudaError_t cudaDeviceSynchronize(void) {
  milmer::emu::synchronize_device();
  return cudaSuccess;
}

inline cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return milmer::emu::detail::Streams::get().create(event, &milmer::emu::detail::Streams::events);
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  return cudaEventCreate(event);
}
inline cudaError_t cudaEventDestroy(cudaEvent_t event) {
  auto& s = milmer::emu::detail::Streams::get();
  std::lock_guard lk(s.mu);
  if (!s.events.erase(event)) return milmer::emu::detail::fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}
// Queues the record: the event completes, and takes its time, when the stream reaches it.
inline cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  auto& s = milmer::emu::detail::Streams::get();
  std::lock_guard lk(s.mu);
  if (!s.events.count(event)) return milmer::emu::detail::fail(cudaErrorInvalidResourceHandle);
  const std::uint64_t generation = ++event->generation;
  event->recorded = true;
  event->done = false;
  event->stream = s.resolve(stream);
  event->serial = milmer::emu::enqueue(stream, [event, generation, &s] {
    if (!s.events.count(event) || event->generation != generation) return;
    event->when = std::chrono::steady_clock::now();
    event->done = true;
  });
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  auto& s = milmer::emu::detail::Streams::get();
  std::lock_guard lk(s.mu);
  if (!s.events.count(event)) return milmer::emu::detail::fail(cudaErrorInvalidResourceHandle);
  if (event->recorded && !event->done)
    s.synchronize([&] { s.run_until(event->stream, event->serial + 1); });
  return cudaSuccess;
}
// A query runs the work the event marks, so it always reports the event complete.
inline cudaError_t cudaEventQuery(cudaEvent_t event) {
  return cudaEventSynchronize(event);
}
// Later work on `stream` waits for the work the event's latest record marks.
inline cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  auto& s = milmer::emu::detail::Streams::get();
  std::lock_guard lk(s.mu);
  if (!s.events.count(event)) return milmer::emu::detail::fail(cudaErrorInvalidResourceHandle);
  if (event->recorded && !event->done)
    milmer::emu::enqueue(stream, [] {}, {{event->stream, event->serial + 1}});
  return cudaSuccess;
}
// The host time between the two records' execution; both must have run.
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  auto& s = milmer::emu::detail::Streams::get();
  std::lock_guard lk(s.mu);
  if (ms == nullptr) return milmer::emu::detail::fail(cudaErrorInvalidValue);
  if (!s.events.count(start) || !s.events.count(end) || !start->recorded || !end->recorded)
    return milmer::emu::detail::fail(cudaErrorInvalidResourceHandle);
  if (!start->done || !end->done) return milmer::emu::detail::fail(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

}  // extern "C"
