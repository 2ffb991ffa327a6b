// The host emulator's execution engine: runs a CUDA grid on the CPU.
//
// A grid's blocks are spread over a pool of OS threads (MILMER_EMU_THREADS, default: the
// number of cores); one block runs at a time on an OS thread. Each CUDA thread of the block
// is a fiber (Boost.Context fcontext) with its own stack. A fiber runs until it finishes or
// reaches a rendezvous (__syncthreads, or a warp operation); the scheduler then resumes
// the other fibers and releases a rendezvous once every participant has arrived. The
// order in which fibers run between two rendezvous is MILMER_EMU_SCHEDULE=seq (thread 0
// first), rev (last thread first) or random (MILMER_EMU_SEED; per block, so results do not
// depend on which OS thread ran the block). A kernel whose result changes with the order
// has a race.
//
// Checks the hardware does not give: a deadlock (nothing can run and some rendezvous can
// never complete), barriers reached from different call sites, and warp operations whose
// lanes disagree on the mask or the operation, all thrown as milmer::Error naming the
// kernel, the block and the thread.
//
// Strict mode (MILMER_EMU_STRICT=1, the default; 0 turns it off) adds what the hardware
// would punish without a clear message: shared memory (static and dynamic) starts every
// block as 0xff bytes (a float NaN), so a read before a write shows; and the shared memory
// of a block (static + dynamic) must fit the limits of the emulated architecture
// (MILMER_EMU_ARCH=80 or 90, default 90): 48 KB unless the kernel opted in with
// cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize), at most the
// architecture's opt-in maximum. Static shared memory is declared with MILMER_SHARED (see
// device.hpp) and allocated per block from a per-OS-thread arena as the block reaches each
// declaration, which is when the emulator learns the kernel's static size.
#pragma once

#include <sys/mman.h>
#include <unistd.h>
#include <boost/context/detail/fcontext.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <source_location>
#include <string>
#include <thread>
#include <vector>

#include <vector_types.h>

#include "milmer/device_limits.hpp"
#include "milmer/error.hpp"
#include "milmer/symbol_name.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define MILMER_EMU_ASAN 1
#else
#define MILMER_EMU_ASAN 0
#endif

namespace milmer::emu {

namespace bctx = boost::context::detail;

enum class Schedule { seq, rev, random };

// Totals since the last reset_counters(). Read them around a piece of work to count what it
// launched: a training step's launches are measured, not estimated.
struct Counters {
  std::uint64_t launches = 0;       // kernel launches
  std::uint64_t blocks = 0;         // blocks run
  std::uint64_t threads = 0;        // CUDA threads run
  std::uint64_t barrier_waits = 0;  // arrivals at __syncthreads, summed over threads
  std::uint64_t warp_ops = 0;       // arrivals at warp operations, summed over lanes
  // The same, per kernel (demangled name, template arguments included).
  struct PerKernel {
    std::uint64_t launches = 0, blocks = 0, threads = 0;
  };
  std::map<std::string, PerKernel> kernels;
};

// What the last launch on any thread did, for a caller that wants per-launch numbers.
struct LaunchRecord {
  std::string kernel;
  dim3 grid, block;
  std::size_t shared_bytes = 0;
  std::uint64_t barrier_waits = 0, warp_ops = 0;
};

namespace detail {

inline std::string env_string(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : std::string(fallback);
}

struct Settings {
  Schedule schedule = Schedule::seq;
  std::uint64_t seed = 0;
  unsigned threads = 1;
  std::size_t stack_bytes = 256 * 1024;
  bool strict = true;
  int arch = 90;

  static Settings from_env() {
    Settings s;
    const std::string sched = env_string("MILMER_EMU_SCHEDULE", "seq");
    if (sched == "seq") {
      s.schedule = Schedule::seq;
    } else if (sched == "rev") {
      s.schedule = Schedule::rev;
    } else if (sched == "random") {
      s.schedule = Schedule::random;
    } else {
      throw Error("emulator", "MILMER_EMU_SCHEDULE", "seq, rev or random", "'" + sched + "'");
    }
    s.seed = std::strtoull(env_string("MILMER_EMU_SEED", "0").c_str(), nullptr, 10);
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const long t = std::strtol(env_string("MILMER_EMU_THREADS", "0").c_str(), nullptr, 10);
    if (t < 0 || t > 1024)
      throw Error("emulator", "MILMER_EMU_THREADS", "0 (all cores) to 1024", std::to_string(t));
    s.threads = t == 0 ? hw : static_cast<unsigned>(t);
    const long kb = std::strtol(env_string("MILMER_EMU_STACK_KB", "256").c_str(), nullptr, 10);
    if (kb < 64 || kb > 65536)
      throw Error("emulator", "MILMER_EMU_STACK_KB", "64 to 65536", std::to_string(kb));
    s.stack_bytes = static_cast<std::size_t>(kb) * 1024;
    const std::string strict = env_string("MILMER_EMU_STRICT", "1");
    if (strict != "0" && strict != "1")
      throw Error("emulator", "MILMER_EMU_STRICT", "0 or 1", "'" + strict + "'");
    s.strict = strict == "1";
    const std::string arch = env_string("MILMER_EMU_ARCH", "90");
    if (arch != "80" && arch != "90")
      throw Error("emulator", "MILMER_EMU_ARCH", "80 or 90", "'" + arch + "'");
    s.arch = arch == "80" ? 80 : 90;
    return s;
  }
};

// What the emulated runtime knows about one kernel.
struct KernelRecord {
  std::size_t static_shared_bytes = 0;  // the most a block has declared so far
  int max_dynamic_shared = -1;          // cudaFuncAttributeMaxDynamicSharedMemorySize; -1: unset
  unsigned attribute_sets = 0;          // cudaFuncSetAttribute calls that succeeded
};

// Calls f(obj) under obj's mutex and returns what it returns.
template <class T, class F>
auto locked(T& obj, F&& f) {
  std::lock_guard lk(obj.mu);
  return f(obj);
}

struct Global {
  Settings settings = Settings::from_env();
  std::mutex mu;
  Counters counters;
  LaunchRecord last;
  std::uint64_t launch_serial = 0;
  std::map<const void*, KernelRecord> kernels;
  static Global& get() {
    static Global g;
    return g;
  }
};

// What one launch's blocks share: set by run_grid, read by the blocks' OS threads.
struct LaunchContext {
  const void* kernel = nullptr;
  const std::string* name = nullptr;
  std::size_t dynamic_bytes = 0;
  bool strict = true;
  int arch = 90;
  const std::function<void(std::size_t)>* on_static_shared = nullptr;
  std::atomic<std::size_t> static_bytes_seen{0};
};
inline thread_local LaunchContext* tls_launch = nullptr;

enum class State : std::uint8_t { ready, at_barrier, at_warp, done };
enum class WarpKind : std::uint8_t {
  sync,
  shfl_idx,
  shfl_up,
  shfl_down,
  shfl_xor,
  ballot,
  any,
  all
};

inline const char* warp_kind_name(WarpKind k) {
  static constexpr const char* kNames[] = {"__syncwarp",       "__shfl_sync",     "__shfl_up_sync",
                                           "__shfl_down_sync", "__shfl_xor_sync", "__ballot_sync",
                                           "__any_sync",       "__all_sync"};
  const auto i = static_cast<std::size_t>(k);
  return i < std::size(kNames) ? kNames[i] : "warp op";
}

struct Fiber {
  bctx::fcontext_t ctx = nullptr;
  State state = State::ready;
  unsigned linear = 0;
  uint3 tid{};
  // rendezvous record
  const char* site_file = nullptr;
  unsigned site_line = 0, site_column = 0;
  WarpKind wkind = WarpKind::sync;
  unsigned mask = 0;
  std::uint64_t value = 0;  // operand bits in, result bits out
  int param = 0;
  int width = 32;
  void* fake_stack = nullptr;  // AddressSanitizer's fake stack of this fiber while parked
};

class BlockRunner;
inline thread_local BlockRunner* tls_runner = nullptr;

}  // namespace detail

// The coordinates of the CUDA thread currently running on this OS thread. The scheduler
// sets them before it resumes a fiber.
inline thread_local uint3 tls_thread_idx{};
inline thread_local uint3 tls_block_idx{};
inline thread_local dim3 tls_block_dim{};
inline thread_local dim3 tls_grid_dim{};
inline thread_local unsigned char* tls_dynamic_shared = nullptr;
inline thread_local std::size_t tls_dynamic_shared_bytes = 0;

namespace detail {

// Runs the blocks handed to one OS thread. Owns the fiber stacks of that thread, reused
// from block to block and launch to launch.
class BlockRunner {
 public:
  explicit BlockRunner(std::size_t stack_bytes) : stack_bytes_(stack_bytes) {
    page_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  }
  ~BlockRunner() {
    for (void* s : stacks_) munmap(s, stack_bytes_ + page_);
  }
  BlockRunner(const BlockRunner&) = delete;
  BlockRunner& operator=(const BlockRunner&) = delete;

  // Runs one block of `body` (the kernel applied to its arguments). Throws on a kernel
  // exception or a scheduling error.
  void run_block(const std::function<void()>& body, const std::string& kernel, dim3 grid,
                 dim3 block, uint3 block_idx, Schedule schedule, std::uint64_t seed,
                 std::uint64_t& barrier_waits, std::uint64_t& warp_ops) {
    body_ = &body;
    kernel_ = &kernel;
    block_idx_ = block_idx;
    const unsigned n = block.x * block.y * block.z;
    ensure_stacks(n);
    fibers_.assign(n, Fiber{});
    for (unsigned i = 0; i < n; ++i) {
      Fiber& f = fibers_[i];
      f.linear = i;
      f.tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
      char* top = static_cast<char*>(stacks_[i]) + page_ + stack_bytes_;
#if MILMER_EMU_ASAN
      // A stack abandoned by a failed block still carries the poisoned redzones of the
      // frames that were live on it.
      __asan_unpoison_memory_region(static_cast<char*>(stacks_[i]) + page_, stack_bytes_);
#endif
      f.ctx = bctx::make_fcontext(top, stack_bytes_, &BlockRunner::entry);
    }
    tls_block_idx = block_idx;
    tls_block_dim = block;
    tls_grid_dim = grid;
    error_ = nullptr;
    std::mt19937_64 rng(seed ^ (0x9E3779B97F4A7C15ull *
                                (1 + block_idx.x + grid.x * (block_idx.y + grid.y * block_idx.z))));
    // Warps progress independently between block barriers, as on the hardware: each warp
    // (in the schedule's order) runs its lanes (in the schedule's order) until every lane has
    // finished or waits at __syncthreads, releasing the warp's own warp operations as they
    // complete. So warp 0 can run far ahead of warp 1, and a missing barrier between warps
    // shows. Then the block barrier is released, or nothing can move: a deadlock.
    const unsigned warps = (n + 31) / 32;
    std::vector<unsigned> warp_order(warps), lanes;
    lanes.reserve(32);
    unsigned live = n;
    while (live > 0) {
      for (unsigned w = 0; w < warps; ++w) warp_order[w] = w;
      if (schedule == Schedule::rev) std::reverse(warp_order.begin(), warp_order.end());
      if (schedule == Schedule::random) std::shuffle(warp_order.begin(), warp_order.end(), rng);
      for (unsigned w : warp_order) {
        const unsigned first = 32 * w, last = std::min(n, first + 32);
        for (;;) {
          lanes.clear();
          for (unsigned i = first; i < last; ++i)
            if (fibers_[i].state == State::ready) lanes.push_back(i);
          if (lanes.empty()) break;
          if (schedule == Schedule::rev) std::reverse(lanes.begin(), lanes.end());
          if (schedule == Schedule::random) std::shuffle(lanes.begin(), lanes.end(), rng);
          for (unsigned i : lanes) {
            resume(fibers_[i]);
            if (error_) {
              std::exception_ptr e = error_;
              error_ = nullptr;
              std::rethrow_exception(e);
            }
            if (fibers_[i].state == State::done) --live;
          }
          if (!release_warps(first, last, n, warp_ops)) break;
        }
      }
      if (live == 0) break;
      // Every live fiber waits at __syncthreads or at a warp operation that cannot complete.
      if (!release_barrier(live, barrier_waits)) report_deadlock();
    }
  }

  // Called from a fiber: park at __syncthreads.
  void barrier(const std::source_location& loc) {
    Fiber& f = *current_;
    f.state = State::at_barrier;
    f.site_file = loc.file_name();
    f.site_line = loc.line();
    f.site_column = loc.column();
    yield();
  }

  // Called from a fiber: park at a warp operation; returns the result bits.
  std::uint64_t warp(WarpKind kind, unsigned mask, std::uint64_t value, int param, int width) {
    Fiber& f = *current_;
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
      fail(f, warp_kind_name(kind), "width", "a power of two from 1 to 32", std::to_string(width));
    const unsigned lane = f.linear % 32;
    if (!(mask & (1u << lane)))
      fail(f, warp_kind_name(kind), "mask", str("to include the calling lane ", lane),
           str("0x", std::hex, mask));
    f.state = State::at_warp;
    f.wkind = kind;
    f.mask = mask;
    f.value = value;
    f.param = param;
    f.width = width;
    yield();
    return f.value;
  }

  [[noreturn]] void fail(const Fiber& f, const std::string& op, const std::string& arg,
                         const std::string& expected, const std::string& got) const {
    throw Error(
        str(op, " in kernel ", *kernel_, " block ", coords(block_idx_), " thread ", coords(f.tid)),
        arg, expected, got);
  }

 private:
  static std::string coords(uint3 v) {
    return str("(", v.x, ",", v.y, ",", v.z, ")");
  }

  void ensure_stacks(unsigned n) {
    while (stacks_.size() < n) {
      void* p = mmap(nullptr, stack_bytes_ + page_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED)
        throw Error("emulator", "fiber stack", str(stack_bytes_, " bytes"), "mmap failed");
      mprotect(p, page_, PROT_NONE);  // guard page: a stack overflow faults, never corrupts
      stacks_.push_back(p);
    }
  }

  static void entry(bctx::transfer_t t) {
    auto* self = static_cast<BlockRunner*>(t.data);
    self->sched_ctx_ = t.fctx;
    self->finish_switch_into_fiber();
    try {
      (*self->body_)();
    } catch (...) {
      self->error_ = std::current_exception();
    }
    Fiber& f = *self->current_;
    f.state = State::done;
    self->start_switch_out(/*finished=*/true);
    bctx::jump_fcontext(self->sched_ctx_, nullptr);
    std::abort();  // a finished fiber is never resumed
  }

  void resume(Fiber& f) {
    current_ = &f;
    tls_thread_idx = f.tid;
    f.state = f.state == State::done ? State::done : State::ready;
#if MILMER_EMU_ASAN
    void* save = nullptr;
    __sanitizer_start_switch_fiber(&save, static_cast<char*>(stacks_[f.linear]) + page_,
                                   stack_bytes_);
#endif
    bctx::transfer_t t = bctx::jump_fcontext(f.ctx, this);
#if MILMER_EMU_ASAN
    __sanitizer_finish_switch_fiber(save, nullptr, nullptr);
#endif
    f.ctx = t.fctx;
    current_ = nullptr;
  }

  void yield() {
    start_switch_out(false);
    bctx::transfer_t t = bctx::jump_fcontext(sched_ctx_, nullptr);
    sched_ctx_ = t.fctx;
    finish_switch_into_fiber();
  }

  void start_switch_out(bool finished) {
#if MILMER_EMU_ASAN
    __sanitizer_start_switch_fiber(finished ? nullptr : &current_->fake_stack, sched_bottom_,
                                   sched_size_);
#else
    (void)finished;
#endif
  }

  void finish_switch_into_fiber() {
#if MILMER_EMU_ASAN
    __sanitizer_finish_switch_fiber(current_->fake_stack, &sched_bottom_, &sched_size_);
    current_->fake_stack = nullptr;
#endif
  }

  // Releases the complete warp operations among fibers [first, last) of a block of n.
  bool release_warps(unsigned first, unsigned last, unsigned n, std::uint64_t& warp_ops) {
    bool progress = false;
    for (unsigned i = first; i < last; ++i) {
      Fiber& f = fibers_[i];
      if (f.state != State::at_warp) continue;
      const unsigned base = i & ~31u;
      bool complete = true;
      for (unsigned l = 0; l < 32; ++l) {
        if (!(f.mask & (1u << l))) continue;
        const unsigned j = base + l;
        if (j >= n)
          fail(f, warp_kind_name(f.wkind), "mask",
               str("lanes that exist in a block of ", n, " threads"), str("lane ", l));
        const Fiber& g = fibers_[j];
        if (g.state == State::done)
          fail(f, warp_kind_name(f.wkind), "mask", "only lanes that reach the operation",
               str("lane ", l, " exited"));
        if (g.state != State::at_warp) {
          complete = false;
          continue;
        }
        if (g.mask != f.mask || g.wkind != f.wkind)
          fail(f, warp_kind_name(f.wkind), "lanes",
               str("every lane of mask 0x", std::hex, f.mask, " at ", warp_kind_name(f.wkind)),
               str("lane ", std::dec, l, " at ", warp_kind_name(g.wkind), " with mask 0x", std::hex,
                   g.mask));
      }
      if (!complete) continue;
      compute_warp(base, f.mask, f.wkind);
      for (unsigned l = 0; l < 32; ++l)
        if (f.mask & (1u << l)) fibers_[base + l].state = State::ready;
      warp_ops += static_cast<unsigned>(__builtin_popcount(f.mask));
      progress = true;
    }
    return progress;
  }

  void compute_warp(unsigned base, unsigned mask, WarpKind kind) {
    std::uint64_t in[32];
    for (unsigned l = 0; l < 32; ++l)
      if (mask & (1u << l)) in[l] = fibers_[base + l].value;
    std::uint64_t pred_bits = 0;
    for (unsigned l = 0; l < 32; ++l)
      if ((mask & (1u << l)) && in[l] != 0) pred_bits |= 1u << l;
    for (unsigned l = 0; l < 32; ++l) {
      if (!(mask & (1u << l))) continue;
      Fiber& f = fibers_[base + l];
      const unsigned w = static_cast<unsigned>(f.width);
      const unsigned seg = l & ~(w - 1);
      int src = static_cast<int>(l);
      switch (kind) {
        case WarpKind::sync:
          continue;
        case WarpKind::ballot:
          f.value = pred_bits;
          continue;
        case WarpKind::any:
          f.value = pred_bits != 0;
          continue;
        case WarpKind::all:
          f.value = pred_bits == mask;
          continue;
        case WarpKind::shfl_idx:
          src = static_cast<int>(seg + (static_cast<unsigned>(f.param) & (w - 1)));
          break;
        case WarpKind::shfl_up:
          if ((l - seg) >= static_cast<unsigned>(f.param)) src = static_cast<int>(l) - f.param;
          break;
        case WarpKind::shfl_down:
          if ((l - seg) + static_cast<unsigned>(f.param) < w) src = static_cast<int>(l) + f.param;
          break;
        case WarpKind::shfl_xor: {
          const unsigned s = l ^ static_cast<unsigned>(f.param);
          if (s < seg + w) src = static_cast<int>(s & 31u);
          break;
        }
      }
      if (!(mask & (1u << src)))
        fail(f, warp_kind_name(kind), "source lane", str("a lane in mask 0x", std::hex, mask),
             str("lane ", std::dec, src));
      f.value = in[src];
    }
  }

  bool release_barrier(unsigned live, std::uint64_t& barrier_waits) {
    const Fiber* first = nullptr;
    unsigned waiting = 0;
    for (const Fiber& f : fibers_) {
      if (f.state != State::at_barrier) continue;
      ++waiting;
      if (!first) {
        first = &f;
      } else if (f.site_line != first->site_line || f.site_column != first->site_column ||
                 std::strcmp(f.site_file, first->site_file) != 0) {
        fail(f, "__syncthreads", "call site",
             str("the barrier thread ", coords(first->tid), " waits at (", first->site_file, ":",
                 first->site_line, ")"),
             str("a barrier at ", f.site_file, ":", f.site_line));
      }
    }
    if (waiting == 0 || waiting != live) return false;
    for (Fiber& f : fibers_)
      if (f.state == State::at_barrier) f.state = State::ready;
    barrier_waits += waiting;
    return true;
  }

  [[noreturn]] void report_deadlock() {
    for (const Fiber& f : fibers_) {
      if (f.state == State::at_warp)
        fail(f, warp_kind_name(f.wkind), "lanes",
             str("every lane of mask 0x", std::hex, f.mask, " to arrive"),
             "a deadlock: some lanes wait at __syncthreads or another warp operation");
    }
    for (const Fiber& f : fibers_)
      if (f.state == State::at_barrier)
        fail(f, "__syncthreads", "threads", "every live thread of the block to arrive",
             "a deadlock");
    throw Error("emulator", "scheduler", "progress", "a deadlock with no waiting thread");
  }

  std::size_t stack_bytes_, page_;
  std::vector<void*> stacks_;
  std::vector<Fiber> fibers_;
  Fiber* current_ = nullptr;
  bctx::fcontext_t sched_ctx_ = nullptr;
  const std::function<void()>* body_ = nullptr;
  const std::string* kernel_ = nullptr;
  uint3 block_idx_{};
  std::exception_ptr error_;
#if MILMER_EMU_ASAN
  const void* sched_bottom_ = nullptr;
  std::size_t sched_size_ = 0;
#endif
};

inline BlockRunner& this_thread_runner() {
  thread_local BlockRunner runner(Global::get().settings.stack_bytes);
  return runner;
}

// A fixed pool of OS threads that run the blocks of one launch at a time. The launching
// thread works too, so MILMER_EMU_THREADS=1 runs everything on the caller.
class Pool {
 public:
  static Pool& get() {
    static Pool p(Global::get().settings.threads);
    return p;
  }
  ~Pool() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // Calls job(worker_index) on every thread of the pool including the caller; returns when
  // all have returned.
  void run(const std::function<void(unsigned)>& job) {
    if (workers_.empty()) {
      job(0);
      return;
    }
    std::unique_lock lk(mu_);
    job_ = &job;
    pending_ = static_cast<unsigned>(workers_.size());
    ++generation_;
    lk.unlock();
    cv_.notify_all();
    job(0);
    lk.lock();
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

  unsigned size() const { return static_cast<unsigned>(workers_.size()) + 1; }

 private:
  explicit Pool(unsigned n) {
    for (unsigned i = 1; i < n; ++i) workers_.emplace_back([this, i] { loop(i); });
  }
  void loop(unsigned index) {
    std::uint64_t seen = 0;
    std::unique_lock lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      const auto* job = job_;
      lk.unlock();
      (*job)(index);
      lk.lock();
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace detail

inline Schedule schedule() {
  return detail::locked(detail::Global::get(), [](auto& g) { return g.settings.schedule; });
}
// Changes the thread order of later launches (tests run one kernel under every order).
inline void set_schedule(Schedule s, std::uint64_t seed) {
  detail::locked(detail::Global::get(), [&](auto& g) {
    g.settings.schedule = s;
    g.settings.seed = seed;
  });
}
inline const char* schedule_name(Schedule s) {
  return s == Schedule::seq ? "seq" : (s == Schedule::rev ? "rev" : "random");
}
inline unsigned os_threads() {
  return detail::Pool::get().size();
}

// Strict mode (MILMER_EMU_STRICT): poison, the checks of memory spaces and shared-memory
// limits, deferred streams. Tests switch it in-process to show a planted bug goes unnoticed
// without it.
inline bool strict() {
  return detail::locked(detail::Global::get(), [](auto& g) { return g.settings.strict; });
}
inline void set_strict(bool on) {
  detail::locked(detail::Global::get(), [&](auto& g) { g.settings.strict = on; });
}
// The emulated architecture (MILMER_EMU_ARCH): 80 (A100) or 90 (H100).
inline int arch() {
  return detail::locked(detail::Global::get(), [](auto& g) { return g.settings.arch; });
}
inline void set_arch(int a) {
  check(a == 80 || a == 90, "emulator", "arch", "80 or 90", std::to_string(a));
  detail::locked(detail::Global::get(), [&](auto& g) { g.settings.arch = a; });
}

// The settings now, for a launch that runs later.
inline detail::Settings settings() {
  return detail::locked(detail::Global::get(), [](auto& g) { return g.settings; });
}

inline detail::KernelRecord kernel_record(const void* kernel) {
  return detail::locked(detail::Global::get(), [&](auto& g) {
    auto it = g.kernels.find(kernel);
    return it == g.kernels.end() ? detail::KernelRecord{} : it->second;
  });
}

namespace detail {

// The hardware's rules for a block of `static_bytes` static and the launch's dynamic shared
// memory: static at most 48 KB; without the opt-in attribute, static + dynamic at most 48 KB;
// with it, dynamic at most the attribute and the total at most the architecture's maximum.
inline void check_shared_limits(const LaunchContext& l, std::size_t static_bytes) {
  int attribute = -1;
  {
    auto& g = Global::get();
    std::lock_guard lk(g.mu);
    attribute = g.kernels[l.kernel].max_dynamic_shared;
  }
  const std::string op = str("launch of ", *l.name, " (emulating sm_", l.arch, ")");
  const std::size_t total = static_bytes + l.dynamic_bytes;
  const std::string got =
      str(total, " bytes (", static_bytes, " static + ", l.dynamic_bytes, " dynamic)");
  check(static_bytes <= kSharedDefaultBytes, op, "static shared memory",
        str("at most ", kSharedDefaultBytes, " bytes (more must be dynamic)"),
        str(static_bytes, " bytes"));
  if (attribute < 0) {
    check(total <= kSharedDefaultBytes, op, "shared memory per block",
          str("at most ", kSharedDefaultBytes,
              " bytes without cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize)"),
          got);
    return;
  }
  check(l.dynamic_bytes <= static_cast<std::size_t>(attribute), op, "dynamic shared memory",
        str("at most ", attribute,
            " bytes (the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize)"),
        str(l.dynamic_bytes, " bytes"));
  check(total <= shared_optin_bytes(l.arch), op, "shared memory per block",
        str("at most ", shared_optin_bytes(l.arch), " bytes (sm_", l.arch, "'s opt-in maximum)"),
        got);
}

// Static shared memory of the block running on this OS thread: a per-OS-thread arena,
// given out as the block reaches each MILMER_SHARED declaration.
struct StaticSharedArena {
  // The largest opt-in maximum, plus room for AddressSanitizer's redzones between variables.
  static constexpr std::size_t kBytes = shared_optin_bytes(90) + 64 * 1024;
  static constexpr std::size_t kRedzone = MILMER_EMU_ASAN ? 32 : 0;
  unsigned char* base = nullptr;
  std::size_t used = 0;         // arena bytes in use, redzones included
  std::size_t block_bytes = 0;  // the block's static shared memory as the hardware counts it
  std::uint64_t block_serial = 0;

  StaticSharedArena() {
    base = static_cast<unsigned char*>(std::aligned_alloc(256, kBytes));
    if (base == nullptr)
      throw Error("emulator", "static shared memory arena", str(kBytes, " bytes"), "out of memory");
#if MILMER_EMU_ASAN
    __asan_poison_memory_region(base, kBytes);
#endif
  }
  ~StaticSharedArena() {
#if MILMER_EMU_ASAN
    __asan_unpoison_memory_region(base, kBytes);
#endif
    std::free(base);
  }
  StaticSharedArena(const StaticSharedArena&) = delete;
  StaticSharedArena& operator=(const StaticSharedArena&) = delete;

  // A new block: every variable is given out afresh.
  void start_block() {
#if MILMER_EMU_ASAN
    __asan_poison_memory_region(base, used);
#endif
    used = 0;
    block_bytes = 0;
    ++block_serial;
  }
  static StaticSharedArena& get() {
    thread_local StaticSharedArena arena;
    return arena;
  }
};

inline std::size_t round_up(std::size_t v, std::size_t align) {
  return (v + align - 1) / align * align;
}

}  // namespace detail

// One MILMER_SHARED variable of a kernel, per OS thread: which block last placed it, where.
struct SharedSlot {
  std::uint64_t block_serial;
  std::size_t offset;
};

// Runs a whole grid and returns when it has finished (milmer::launch queues it on its stream,
// emu/streams.hpp). `body` runs one CUDA thread. `at_launch`, when given, holds the settings
// (thread order, strict mode, architecture) as they were when the grid was launched.
// `on_static_shared`, when given, is called with a block's static shared bytes whenever they
// grow (and once before the blocks with what earlier launches declared): the launcher's
// chance to opt in to more shared memory, as it does from cudaFuncGetAttributes on a GPU.
// Without it the launch is like <<<>>>: nothing opts in.
inline void run_grid(const void* kernel_address, dim3 grid, dim3 block, std::size_t shared_bytes,
                     const std::function<void()>& body,
                     const std::function<void(std::size_t)>* on_static_shared = nullptr,
                     const detail::Settings* at_launch = nullptr) {
  if (detail::tls_runner != nullptr)
    throw Error("emulator", "launch", "a launch from host code",
                "a launch from inside a running kernel");
  auto& g = detail::Global::get();
  const std::string name = symbol_name(kernel_address);
  const std::uint64_t nblocks = std::uint64_t{grid.x} * grid.y * grid.z;
  Schedule sched;
  std::uint64_t seed;
  detail::LaunchContext launch_ctx;
  launch_ctx.kernel = kernel_address;
  launch_ctx.name = &name;
  launch_ctx.dynamic_bytes = shared_bytes;
  launch_ctx.on_static_shared = on_static_shared;
  std::size_t known_static = 0;
  {
    std::lock_guard lk(g.mu);
    const detail::Settings& settings = at_launch ? *at_launch : g.settings;
    sched = settings.schedule;
    seed = settings.seed * 0x100000001B3ull + g.launch_serial++;
    launch_ctx.strict = settings.strict;
    launch_ctx.arch = settings.arch;
    known_static = g.kernels[kernel_address].static_shared_bytes;
  }
  if (on_static_shared) (*on_static_shared)(known_static);
  if (launch_ctx.strict) detail::check_shared_limits(launch_ctx, known_static);
  const unsigned char shared_fill = launch_ctx.strict ? 0xff : 0x00;
  std::atomic<std::uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::atomic<std::uint64_t> barrier_total{0}, warp_total{0};
  std::mutex err_mu;
  std::exception_ptr first_error;
  auto job = [&](unsigned) {
    detail::BlockRunner& runner = detail::this_thread_runner();
    detail::StaticSharedArena& arena = detail::StaticSharedArena::get();
    detail::tls_runner = &runner;
    detail::tls_launch = &launch_ctx;
    std::vector<unsigned char> dyn(shared_bytes);
    tls_dynamic_shared = shared_bytes ? dyn.data() : nullptr;
    tls_dynamic_shared_bytes = shared_bytes;
    std::uint64_t bw = 0, wo = 0;
    for (;;) {
      const std::uint64_t b = next.fetch_add(1);
      if (b >= nblocks || failed.load()) break;
      const uint3 bi{static_cast<unsigned>(b % grid.x),
                     static_cast<unsigned>((b / grid.x) % grid.y),
                     static_cast<unsigned>(b / (std::uint64_t{grid.x} * grid.y))};
      // Shared memory is not initialised on the hardware: in strict mode it is poisoned (NaN
      // bytes) so a kernel that reads before it writes sees garbage here too. Static shared
      // memory is poisoned as the block reaches each declaration.
      if (shared_bytes) std::memset(dyn.data(), shared_fill, shared_bytes);
      arena.start_block();
      try {
        runner.run_block(body, name, grid, block, bi, sched, seed, bw, wo);
      } catch (...) {
        std::lock_guard lk(err_mu);
        if (!first_error) first_error = std::current_exception();
        failed = true;
      }
    }
    barrier_total += bw;
    warp_total += wo;
    tls_dynamic_shared = nullptr;
    tls_dynamic_shared_bytes = 0;
    detail::tls_runner = nullptr;
    detail::tls_launch = nullptr;
  };
  if (nblocks == 1)
    job(0);
  else
    detail::Pool::get().run(job);
  {
    std::lock_guard lk(g.mu);
    g.counters.launches += 1;
    g.counters.blocks += nblocks;
    g.counters.threads += nblocks * block.x * block.y * block.z;
    g.counters.barrier_waits += barrier_total;
    g.counters.warp_ops += warp_total;
    auto& k = g.counters.kernels[name];
    k.launches += 1;
    k.blocks += nblocks;
    k.threads += nblocks * block.x * block.y * block.z;
    g.last = LaunchRecord{name, grid, block, shared_bytes, barrier_total, warp_total};
    auto& rec = g.kernels[kernel_address];
    rec.static_shared_bytes =
        std::max(rec.static_shared_bytes, launch_ctx.static_bytes_seen.load());
  }
  if (first_error) std::rethrow_exception(first_error);
}

// Called from device code.
inline void syncthreads(const std::source_location& loc) {
  detail::BlockRunner* r = detail::tls_runner;
  if (r == nullptr)
    throw Error("__syncthreads", "caller", "a running kernel", "host code outside a launch");
  r->barrier(loc);
}

// Called from device code (MILMER_SHARED): the address of the variable of `slot` in the
// running block, placed and poisoned when the block first reaches its declaration.
inline void* static_shared(SharedSlot& slot, std::size_t size, std::size_t align) {
  detail::LaunchContext* l = detail::tls_launch;
  if (detail::tls_runner == nullptr || l == nullptr)
    throw Error("MILMER_SHARED", "caller", "a running kernel", "host code outside a launch");
  detail::StaticSharedArena& a = detail::StaticSharedArena::get();
  if (slot.block_serial == a.block_serial) return a.base + slot.offset;
  const std::size_t offset = detail::round_up(a.used + detail::StaticSharedArena::kRedzone,
                                              std::max<std::size_t>(align, 16));
  a.block_bytes = detail::round_up(a.block_bytes, align) + size;
  check(offset + size <= detail::StaticSharedArena::kBytes, str("launch of ", *l->name),
        "static shared memory", str("at most ", kSharedDefaultBytes, " bytes"),
        str("more than ", a.block_bytes, " bytes"));
  a.used = offset + size;
  std::size_t seen = l->static_bytes_seen.load();
  while (seen < a.block_bytes && !l->static_bytes_seen.compare_exchange_weak(seen, a.block_bytes)) {
  }
  if (l->on_static_shared) (*l->on_static_shared)(a.block_bytes);
  if (l->strict) detail::check_shared_limits(*l, a.block_bytes);
#if MILMER_EMU_ASAN
  __asan_unpoison_memory_region(a.base + offset, size);
#endif
  std::memset(a.base + offset, l->strict ? 0xff : 0x00, size);
  slot.block_serial = a.block_serial;
  slot.offset = offset;
  return a.base + offset;
}

inline std::uint64_t warp_op(detail::WarpKind kind, unsigned mask, std::uint64_t value, int param,
                             int width) {
  detail::BlockRunner* r = detail::tls_runner;
  if (r == nullptr)
    throw Error(detail::warp_kind_name(kind), "caller", "a running kernel",
                "host code outside a launch");
  return r->warp(kind, mask, value, param, width);
}

}  // namespace milmer::emu
