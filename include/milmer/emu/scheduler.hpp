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
#pragma once

#include <cxxabi.h>
#include <dlfcn.h>
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
#include <map>
#include <mutex>
#include <random>
#include <source_location>
#include <string>
#include <thread>
#include <vector>

#include <vector_types.h>

#include "milmer/error.hpp"

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
    return s;
  }
};

struct Global {
  Settings settings = Settings::from_env();
  std::mutex mu;
  Counters counters;
  LaunchRecord last;
  std::uint64_t launch_serial = 0;
  static Global& get() {
    static Global g;
    return g;
  }
};

// Name of a kernel from its address: the symbol table (the host target links with
// -rdynamic), demangled; the address when no symbol is found.
inline std::string symbol_name(const void* fn) {
  Dl_info info{};
  if (dladdr(fn, &info) && info.dli_sname) {
    int status = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    std::string s = status == 0 && d ? d : info.dli_sname;
    std::free(d);
    return s;
  }
  return str("kernel@", fn);
}

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
  switch (k) {
    case WarpKind::sync:
      return "__syncwarp";
    case WarpKind::shfl_idx:
      return "__shfl_sync";
    case WarpKind::shfl_up:
      return "__shfl_up_sync";
    case WarpKind::shfl_down:
      return "__shfl_down_sync";
    case WarpKind::shfl_xor:
      return "__shfl_xor_sync";
    case WarpKind::ballot:
      return "__ballot_sync";
    case WarpKind::any:
      return "__any_sync";
    case WarpKind::all:
      return "__all_sync";
  }
  return "warp op";
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

inline Counters counters() {
  auto& g = detail::Global::get();
  std::lock_guard lk(g.mu);
  return g.counters;
}
inline void reset_counters() {
  auto& g = detail::Global::get();
  std::lock_guard lk(g.mu);
  g.counters = Counters{};
}
inline LaunchRecord last_launch() {
  auto& g = detail::Global::get();
  std::lock_guard lk(g.mu);
  return g.last;
}
inline Schedule schedule() {
  auto& g = detail::Global::get();
  std::lock_guard lk(g.mu);
  return g.settings.schedule;
}
// Changes the thread order of later launches (tests run one kernel under every order).
inline void set_schedule(Schedule s, std::uint64_t seed) {
  auto& g = detail::Global::get();
  std::lock_guard lk(g.mu);
  g.settings.schedule = s;
  g.settings.seed = seed;
}
inline const char* schedule_name(Schedule s) {
  return s == Schedule::seq ? "seq" : (s == Schedule::rev ? "rev" : "random");
}
inline unsigned os_threads() {
  return detail::Pool::get().size();
}

// Runs a whole grid and returns when it has finished (the host target's launches are
// synchronous, which keeps stream order trivially). `body` runs one CUDA thread.
inline void run_grid(const void* kernel_address, dim3 grid, dim3 block, std::size_t shared_bytes,
                     const std::function<void()>& body) {
  if (detail::tls_runner != nullptr)
    throw Error("emulator", "launch", "a launch from host code",
                "a launch from inside a running kernel");
  auto& g = detail::Global::get();
  const std::string name = detail::symbol_name(kernel_address);
  const std::uint64_t nblocks = std::uint64_t{grid.x} * grid.y * grid.z;
  Schedule sched;
  std::uint64_t seed;
  {
    std::lock_guard lk(g.mu);
    sched = g.settings.schedule;
    seed = g.settings.seed * 0x100000001B3ull + g.launch_serial++;
  }
  std::atomic<std::uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::atomic<std::uint64_t> barrier_total{0}, warp_total{0};
  std::mutex err_mu;
  std::exception_ptr first_error;
  auto job = [&](unsigned) {
    detail::BlockRunner& runner = detail::this_thread_runner();
    detail::tls_runner = &runner;
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
      // Shared memory is not initialised on the hardware: poison it (NaN bytes) so a kernel
      // that reads before it writes sees garbage here too.
      if (shared_bytes) std::memset(dyn.data(), 0xff, shared_bytes);
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

inline std::uint64_t warp_op(detail::WarpKind kind, unsigned mask, std::uint64_t value, int param,
                             int width) {
  detail::BlockRunner* r = detail::tls_runner;
  if (r == nullptr)
    throw Error(detail::warp_kind_name(kind), "caller", "a running kernel",
                "host code outside a launch");
  return r->warp(kind, mask, value, param, width);
}

}  // namespace milmer::emu
