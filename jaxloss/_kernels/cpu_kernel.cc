// The CPU row kernels behind jaxloss.entropy_from_logits and jaxloss.entropy: XLA FFI custom calls (see
// jaxloss/_kernels/cpu.py).
//
// Built with the package (setup.py), once per instruction-set variant: this file is compiled with
// -DJAXLOSS_VARIANT=<name> (baseline: the architecture's default, x86-64 SSE2 or the aarch64 base; v3:
// -march=x86-64-v3, AVX2 + FMA; v4: -march=x86-64-v4, AVX-512) and every object is linked into the extension
// module jaxloss._kernels._cpu (cpu_module.cc), which picks a variant at run time from what the CPU supports.
// Everything here lives in the namespace jaxloss_cpu_<variant>, so the objects do not collide; each exports
// one function, jaxloss_cpu_<variant>::Handlers(), the table of its four FFI handlers.
//
// entropy_from_logits, for each row l of the last axis: H = log1p(s1) + t / (1 + s1), with m = max(l), d = l - m,
// e = exp(d), s1 = sum over the non-top classes of e + (number of top classes - 1), t = sum(e * (-d)); and, in the
// value-and-gradient handler, dH/dl_i = (e_i / z) * (-d_i - t / z), z = 1 + s1. The same exact algorithm as
// jaxloss._kernels.rows.softmax_parts: d kept exactly as hi + lo (TwoSum), e = exp(hi + lo) in float32 to about
// 1.1 ulp, the terms summed in float32 lanes (4 a lane: 16 a lane measured 4.29 ulp on a row with H = 3.5e-12 in
// tests/test_cpu_variants.py, 4 a lane 2.3, for ~10 % more time) and the lane sums in double, H formed in double and
// rounded once; the gradient in float32, as the XLA path forms it.
//
// Limits, as the XLA path: a row with a NaN gives NaN (value and whole gradient row); a row with every class at
// -inf (or no classes) gives 0; classes at +inf share all the probability (H = log k for k of them, gradient 0);
// a class at -inf gets e = 0 and gradient 0. Classes with d < -87 (e < 1.7e-38) are dropped, as XLA's flushing of
// subnormal numbers drops them (the flush bound of the accuracy contract, tests/ulp.py).
//
// entropy (of probabilities): below, at ProbabilityRow.
//
// Each row is read from memory twice at most (maximum, then sums; the row stays in cache between the passes) and
// the gradient is written once. Rows are shared out among XLA's intra-op threads.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"
#include "jaxloss/cpu_handlers.h"

#ifndef JAXLOSS_VARIANT
#error "compile with -DJAXLOSS_VARIANT=<variant name> (see setup.py)"
#endif

namespace ffi = xla::ffi;

namespace JAXLOSS_VARIANT_NAMESPACE(JAXLOSS_VARIANT) {

// The helpers below are small and called inside the hot loops: GCC otherwise keeps some of them out of line
// (a call per vector, and the vectors passed through memory).
#define JAXLOSS_INLINE inline __attribute__((always_inline))

namespace {

JAXLOSS_INLINE float Widen(float v) { return v; }

struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

JAXLOSS_INLINE float Widen(Bf16 v) {
  uint32_t b = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// IEEE binary16 -> binary32, exact, branch-free, and without a subnormal float32 operand anywhere (XLA runs
// custom calls with subnormal operands read as zero): normal numbers by moving the bits into place and
// rescaling by 2^112 (the bias difference), subnormal ones as the integer significand times 2^-24.
JAXLOSS_INLINE float Widen(F16 v) {
  uint32_t h = v.bits;
  uint32_t mag = h & 0x7fffu;
  uint32_t shifted = mag << 13;
  float f;
  std::memcpy(&f, &shifted, 4);
  f *= 0x1p112f;
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  float sub = static_cast<float>(static_cast<int32_t>(mag)) * 0x1p-24f;
  uint32_t sub_bits;
  std::memcpy(&sub_bits, &sub, 4);
  bits = mag < 0x400u ? sub_bits : bits;
  bits = mag >= 0x7c00u ? (0x7f800000u | shifted) : bits;  // inf and NaN
  bits |= (h & 0x8000u) << 16;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Eight lanes at a time, written with GCC/Clang vector extensions so that the loops are vectorised whatever the
// compiler's cost model thinks (AVX2 in the v3 and v4 variants, two SSE2 halves at baseline).
typedef float VF __attribute__((vector_size(32)));
typedef int32_t VI __attribute__((vector_size(32)));
typedef uint32_t VU __attribute__((vector_size(32)));
typedef uint16_t VH __attribute__((vector_size(16)));
typedef double VD __attribute__((vector_size(32)));
typedef float VF4 __attribute__((vector_size(16)));
constexpr int kLanes = 8;

JAXLOSS_INLINE VF Splat(float v) { return VF{} + v; }
JAXLOSS_INLINE VF Pick(VI mask, VF a, VF b) { return (VF)((mask & (VI)a) | (~mask & (VI)b)); }

// Lane-wise comparisons (all ones where true) and the maximum. With AVX these are the plain vector operators.
// Without it (the baseline variant: SSE2, or NEON) GCC lowers a comparison of 8-lane vectors, and a `?:` on them,
// lane by lane in scalar code, so they are done on 4-lane halves there: the same comparisons and selections, only
// vectorised.
#ifdef __AVX__
#define JAXLOSS_CMP8(name, op) \
  JAXLOSS_INLINE VI name(VF a, VF b) { return a op b; }
JAXLOSS_INLINE VF Max(VF a, VF b) { return a > b ? a : b; }
JAXLOSS_INLINE VI ULess(VU a, uint32_t b) { return (VI)(a < b); }
JAXLOSS_INLINE VI UGreaterEqual(VU a, uint32_t b) { return (VI)(a >= b); }
#else
typedef int32_t VI4 __attribute__((vector_size(16)));
typedef uint32_t VU4 __attribute__((vector_size(16)));
#define JAXLOSS_CMP8(name, op)                                   \
  JAXLOSS_INLINE VI name(VF a, VF b) {                           \
    VF4 a0, a1, b0, b1;                                          \
    std::memcpy(&a0, &a, 16);                                    \
    std::memcpy(&a1, reinterpret_cast<const char*>(&a) + 16, 16); \
    std::memcpy(&b0, &b, 16);                                    \
    std::memcpy(&b1, reinterpret_cast<const char*>(&b) + 16, 16); \
    VI4 r0 = a0 op b0, r1 = a1 op b1;                            \
    VI r;                                                        \
    std::memcpy(&r, &r0, 16);                                    \
    std::memcpy(reinterpret_cast<char*>(&r) + 16, &r1, 16);      \
    return r;                                                    \
  }
JAXLOSS_CMP8(Greater_, >)
JAXLOSS_INLINE VF Max(VF a, VF b) { return Pick(Greater_(a, b), a, b); }
JAXLOSS_INLINE VI ULess(VU a, uint32_t b) {
  // Unsigned a < b on 4-lane halves: SSE2 compares signed, so both sides are offset by 2^31 first.
  const VI bias = (VI){} + INT32_MIN;
  VI as = (VI)a ^ bias, bs = ((VI){} + static_cast<int32_t>(b)) ^ bias;
  VI4 a0, a1, b0, b1;
  std::memcpy(&a0, &as, 16);
  std::memcpy(&a1, reinterpret_cast<const char*>(&as) + 16, 16);
  std::memcpy(&b0, &bs, 16);
  std::memcpy(&b1, reinterpret_cast<const char*>(&bs) + 16, 16);
  VI4 r0 = a0 < b0, r1 = a1 < b1;
  VI r;
  std::memcpy(&r, &r0, 16);
  std::memcpy(reinterpret_cast<char*>(&r) + 16, &r1, 16);
  return r;
}
JAXLOSS_INLINE VI UGreaterEqual(VU a, uint32_t b) { return ~ULess(a, b); }
#endif
JAXLOSS_CMP8(Less, <)
JAXLOSS_CMP8(Greater, >)
JAXLOSS_CMP8(Equal, ==)
JAXLOSS_CMP8(NotEqual, !=)
#undef JAXLOSS_CMP8

JAXLOSS_INLINE VF Widen8(float const* x) {
  VF v;
  std::memcpy(&v, x, sizeof v);
  return v;
}

JAXLOSS_INLINE VF Widen8(Bf16 const* x) {
#ifdef __AVX2__
  // One widening load and a shift (GCC splits the generic form below into two halves).
  __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  return (VF)_mm256_slli_epi32(u, 16);
#else
  VH h;
  std::memcpy(&h, x, sizeof h);
  return (VF)(__builtin_convertvector(h, VU) << 16);
#endif
}

JAXLOSS_INLINE VF Widen8(F16 const* x) {
  // Widen(F16), eight lanes at a time.
#ifdef __AVX2__
  VU u = (VU)_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
#else
  VH h;
  std::memcpy(&h, x, sizeof h);
  VU u = __builtin_convertvector(h, VU);
#endif
  VU mag = u & 0x7fffu;
  VU shifted = mag << 13;
  VF normal = (VF)shifted * 0x1p112f;
  VF sub = __builtin_convertvector((VI)mag, VF) * 0x1p-24f;
  VF out = Pick(ULess(mag, 0x400u), sub, normal);
  out = Pick(UGreaterEqual(mag, 0x7c00u), (VF)(shifted | 0x7f800000u), out);
  return (VF)((VU)out | ((u & 0x8000u) << 16));
}

// Eight entries from x[0..n), n <= 8, widened to float; missing lanes are `pad` (by default -inf: classes that
// are out).
template <typename T>
JAXLOSS_INLINE VF Load(const T* x, int64_t n, float pad = -INFINITY) {
  if (n == kLanes) return Widen8(x);
  VF v = Splat(pad);
  for (int64_t k = 0; k < n; ++k) v[k] = Widen(x[k]);
  return v;
}

// Below this shift a class's e = exp(d) < 1.7e-38 is dropped (0): XLA flushes such subnormal products too, and
// e * (-d) < 2^-119 there, the bound of the flush exclusion documented in tests/ulp.py.
constexpr float kFloor = -87.0f;

struct Shifted {
  VF e;    // exp(d), 0 below kFloor and for classes that are out
  VF d;    // d = l - m <= 0 as hi + lo rounded once (clamped to kFloor below it)
  VI top;  // all ones where l == m
};

// d = l - m kept exactly as hi + lo (Knuth's TwoSum, as twofloat.two_diff), and e = exp(hi + lo): Cody-Waite
// reduction hi + lo = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial in r (Chebyshev fit, float32 coefficients;
// 0.90 ulp on [-ln2/2, ln2/2] in float32 arithmetic, `python -m benchmarks.probes.exp_fit`) scaled by 2^n through the
// exponent bits: about 1.1 ulp in all.
JAXLOSS_INLINE Shifted Shift(VF l, VF neg_m) {
  VF hi = l + neg_m;
  VF bb = hi - l;
  VF lo = (l - (hi - bb)) + (neg_m - bb);
  VI keep = Greater(hi, Splat(kFloor));
  VF hc = Pick(keep, hi, Splat(kFloor));
  lo = (VF)((VI)lo & keep);  // NaN for a class at -inf, 0 once masked
  VF kd = hc * 1.44269504088896341f + 0x1.8p23f;
  VI ki = (VI)kd;  // n sits in the low bits of kd's significand
  kd -= 0x1.8p23f;
  VF r = (hc - kd * 0x1.62e400p-1f) - kd * 0x1.7f7d1cp-20f;  // ln2 = 0x1.62e4p-1 + 0x1.7f7d1cf79abc9p-20
  r += lo;
  VF p = r * 0.0013941213255748153f + 0.008375209756195545f;
  p = p * r + 0.04166635125875473f;
  p = p * r + 0.16666413843631744f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  VF scale = (VF)((ki << 23) + 0x3f800000);  // 2^n, n in [-126, 0]
  VF e = (VF)((VI)(p * scale) & keep);
  return {e, hc + lo, Equal(hi, Splat(0.0f))};
}

// The eight lanes of v added pairwise into four doubles.
JAXLOSS_INLINE VD Widen(VF v) {
  VF4 a = {v[0], v[1], v[2], v[3]};
  VF4 b = {v[4], v[5], v[6], v[7]};
  return __builtin_convertvector(a, VD) + __builtin_convertvector(b, VD);
}

template <typename T>
struct RowKernel {
  // Returns H for the row and, when kGrad, writes dH/dl into g (scratch holds the row's e and d: two arrays of
  // n floats, n rounded up to a multiple of kLanes).
  template <bool kGrad>
  static float Run(const T* x, int64_t n, float* g, float* scratch) {
    // Pass 1: the maximum, and whether the row holds a NaN. Two vectors a step (two chains), then the rest.
    VF vm = Splat(-INFINITY), vm2 = vm;
    VI bad = {}, bad2 = {};
    int64_t i0 = 0;
    for (; i0 + 2 * kLanes <= n; i0 += 2 * kLanes) {
      VF v = Widen8(x + i0), w = Widen8(x + i0 + kLanes);
      bad |= NotEqual(v, v);
      bad2 |= NotEqual(w, w);
      vm = Max(v, vm);
      vm2 = Max(w, vm2);
    }
    for (; i0 < n; i0 += kLanes) {
      VF v = Load(x + i0, std::min<int64_t>(kLanes, n - i0));
      bad |= NotEqual(v, v);
      vm = Max(v, vm);
    }
    bad |= bad2;
    vm = Max(vm2, vm);
    float m = -INFINITY;
    int any_bad = 0;
    for (int k = 0; k < kLanes; ++k) {
      m = std::max(m, vm[k]);
      any_bad |= bad[k];
    }
    if (any_bad) {
      if (g) std::fill(g, g + n, NAN);
      return NAN;
    }
    if (m == -INFINITY) {  // every class out, or no class
      if (g) std::fill(g, g + n, 0.0f);
      return 0.0f;
    }
    if (m == INFINITY) {  // the classes at +inf share all the probability
      int64_t k = 0;
      for (int64_t i = 0; i < n; ++i) k += Widen(x[i]) == INFINITY;
      if (g) std::fill(g, g + n, 0.0f);
      return static_cast<float>(std::log(static_cast<double>(k)));
    }
    // Sums: float lanes over blocks of kBlock entries (4 terms per lane; see the header), the block sums in double.
    const VF neg_m = Splat(-m);
    const int64_t stride = (n + kLanes - 1) / kLanes * kLanes;
    VD s_acc = {}, t_acc = {};
    VI count = {};
    constexpr int64_t kBlock = 4 * kLanes;
    int64_t i = 0;
    while (i < n) {
      VF sb = {}, tb = {};
      auto step = [&](VF v) {
        Shifted q = Shift(v, neg_m);
        sb += (VF)(~q.top & (VI)q.e);
        count -= q.top;
        tb -= q.e * q.d;  // t = sum(e * (-d))
        if constexpr (kGrad) {
          std::memcpy(scratch + i, &q.e, sizeof q.e);
          std::memcpy(scratch + stride + i, &q.d, sizeof q.d);
        }
      };
      const int64_t end = std::min(n, i + kBlock);
      for (; i + kLanes <= end; i += kLanes) step(Widen8(x + i));
      if (i < end) {
        step(Load(x + i, end - i));
        i = end;
      }
      s_acc += Widen(sb);
      t_acc += Widen(tb);
    }
    const double s = (s_acc[0] + s_acc[1]) + (s_acc[2] + s_acc[3]);
    const double t = (t_acc[0] + t_acc[1]) + (t_acc[2] + t_acc[3]);
    double top = 0.0;
    for (int k = 0; k < kLanes; ++k) top += count[k];
    const double s1 = s + (top - 1.0);
    const double z = 1.0 + s1;
    const double tz = t / z;
    if constexpr (kGrad) {
      // dH/dl_i = p_i (u_i - t / z), p_i = e_i / z, in float32 as the XLA path.
      // (e / z)(-d - t/z) as (e (-1/z))(d + t/z): the same roundings, signs flipped twice.
      const VF neg_iz = Splat(-static_cast<float>(1.0 / z));
      const VF tzf = Splat(static_cast<float>(tz));
      for (int64_t i = 0; i < n; i += kLanes) {
        VF e, d;
        std::memcpy(&e, scratch + i, sizeof e);
        std::memcpy(&d, scratch + stride + i, sizeof d);
        VF out = (e * neg_iz) * (d + tzf);
        if (i + kLanes <= n) {
          std::memcpy(g + i, &out, sizeof out);
        } else {
          for (int64_t k = 0; i + k < n; ++k) g[i + k] = out[k];
        }
      }
    }
    return static_cast<float>(std::log1p(s1) + tz);
  }
};

// Runs body(first_row, last_row) over [0, rows) on the caller and XLA's intra-op threads. Chunks are claimed
// from a shared counter, so tasks the pool runs late (or never, in a pool of one) find no work; the caller
// waits only for chunks that were claimed, all of which are being worked on.
template <typename Body>
void ParallelRows(ffi::ThreadPool& pool, int64_t rows, int64_t cols, Body body) {
  const int64_t work = rows * (cols > 0 ? cols : 1);
  const int64_t per_chunk = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(cols, 1));
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  int64_t threads = pool.num_threads();
  if (threads <= 1 || chunks <= 1 || work < (int64_t{1} << 16)) {
    body(0, rows);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto shared = std::make_shared<Shared>();
  auto drain = [shared, rows, per_chunk, chunks, body]() {
    for (;;) {
      int64_t c = shared->next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      int64_t lo = c * per_chunk;
      body(lo, std::min(rows, lo + per_chunk));
      shared->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(threads, chunks) - 1;
  for (int64_t k = 0; k < helpers; ++k) pool.Schedule([drain]() { drain(); });
  drain();
  while (shared->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

// Entropy of probabilities, -sum p log p over each row, and its derivative -(log p + 1) (0 at p = 0, the
// convention of jaxloss.entropy). log is musl's logf algorithm without branches (s = f / (2 + f) on a mantissa in
// [sqrt(1/2), sqrt(2)), four coefficients; < 1 ulp); subnormal p are scaled by 2^23 first. Limits as the XLA
// path: p = 0 adds 0; p = +inf gives -inf; a negative or NaN p gives NaN (its term and its derivative).
JAXLOSS_INLINE VF Log(VF x) {
  VI small = Less(x, Splat(0x1p-126f));
  x = Pick(small, x * 0x1p23f, x);
  VI ix = (VI)x + (0x3f800000 - 0x3f3504f3);
  VI k = (ix >> 23) - 0x7f - (small & 23);
  ix = (ix & 0x007fffff) + 0x3f3504f3;
  VF f = (VF)ix - 1.0f;
  VF s = f / (2.0f + f);
  VF z = s * s;
  VF w = z * z;
  VF t1 = w * (0.40000972152f + w * 0.24279078841f);
  VF t2 = z * (0.66666662693f + w * 0.28498786688f);
  VF hfsq = 0.5f * f * f;
  VF dk = __builtin_convertvector(k, VF);
  return s * (hfsq + (t2 + t1)) + dk * 9.0580006145e-06f - hfsq + f + dk * 6.9313812256e-01f;
}

template <typename T>
struct ProbabilityRow {
  template <bool kGrad>
  static float Run(const T* x, int64_t n, float* g, float* /*scratch*/) {
    // Each vector of terms goes into double at once: summed in float32 lanes (16 terms a lane, as the softmax
    // kernel does) the stored-grid error was 3.39 ulp; in double it is the terms' own (log 0.76 ulp, product 0.5).
    // Terms summed in float32 lanes over blocks of kBlock entries (4 a lane), each block added into double: 16
    // a lane (the softmax kernel's blocks) gave 3.39 ulp on the stored grid, every vector into double 0.91 ulp
    // but a slower loop; 4 a lane is the middle.
    constexpr int64_t kBlock = 4 * kLanes;
    VD acc = {};
    VF tb = {};
    auto step = [&](int64_t i, VF p, int64_t k) {
      VI zero = Equal(p, Splat(0.0f));
      VF lg = Log(p);
      lg = Pick(Equal(p, Splat(INFINITY)), Splat(INFINITY), lg);
      lg = Pick(zero | Greater(p, Splat(0.0f)), lg, Splat(NAN));  // log of a negative p or of NaN: NaN
      tb += (VF)(~zero & (VI)(-p * lg));
      if constexpr (kGrad) {
        VF slope = (VF)(~zero & (VI)(-(lg + 1.0f)));
        if (k == kLanes) {
          std::memcpy(g + i, &slope, sizeof slope);
        } else {
          for (int64_t j = 0; j < k; ++j) g[i + j] = slope[j];
        }
      }
    };
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
      for (int64_t j = 0; j < kBlock; j += kLanes) step(i + j, Widen8(x + i + j), kLanes);
      acc += Widen(tb);
      tb = VF{};
    }
    for (; i + kLanes <= n; i += kLanes) step(i, Widen8(x + i), kLanes);
    if (i < n) step(i, Load(x + i, n - i, 0.0f), n - i);
    acc += Widen(tb);
    return static_cast<float>((acc[0] + acc[1]) + (acc[2] + acc[3]));
  }
};

// The FFI handlers: `Value` writes one float32 per row of the last axis; `ValueGrad` also the derivative, shaped
// like the input.
template <template <typename> class Row, typename T>
ffi::Error Value(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::Buffer<ffi::F32>> h) {
  auto dims = x.dimensions();
  const int64_t cols = dims.size() == 0 ? 1 : dims.back();
  const int64_t rows = h->element_count();
  const T* xs = static_cast<const T*>(x.untyped_data());
  float* hs = h->typed_data();
  ParallelRows(pool, rows, cols, [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) hs[r] = Row<T>::template Run<false>(xs + r * cols, cols, nullptr, nullptr);
  });
  return ffi::Error::Success();
}

template <template <typename> class Row, typename T>
ffi::Error ValueGrad(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::Buffer<ffi::F32>> h,
                     ffi::Result<ffi::Buffer<ffi::F32>> g) {
  auto dims = x.dimensions();
  const int64_t cols = dims.size() == 0 ? 1 : dims.back();
  const int64_t rows = h->element_count();
  const T* xs = static_cast<const T*>(x.untyped_data());
  float* hs = h->typed_data();
  float* gs = g->typed_data();
  ParallelRows(pool, rows, cols, [=](int64_t lo, int64_t hi) {
    std::vector<float> scratch(2 * static_cast<size_t>(cols + kLanes));
    for (int64_t r = lo; r < hi; ++r) {
      hs[r] = Row<T>::template Run<true>(xs + r * cols, cols, gs + r * cols, scratch.data());
    }
  });
  return ffi::Error::Success();
}

ffi::Error BadType(ffi::AnyBuffer x) {
  return ffi::Error::InvalidArgument("jaxloss CPU kernel: the input must be float32, bfloat16 or float16; got type " +
                                     std::to_string(static_cast<int>(x.element_type())));
}

template <template <typename> class Row>
ffi::Error ValueImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::Buffer<ffi::F32>> h) {
  switch (x.element_type()) {
    case ffi::F32:
      return Value<Row, float>(pool, x, h);
    case ffi::BF16:
      return Value<Row, Bf16>(pool, x, h);
    case ffi::F16:
      return Value<Row, F16>(pool, x, h);
    default:
      return BadType(x);
  }
}

template <template <typename> class Row>
ffi::Error ValueGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::Buffer<ffi::F32>> h,
                         ffi::Result<ffi::Buffer<ffi::F32>> g) {
  switch (x.element_type()) {
    case ffi::F32:
      return ValueGrad<Row, float>(pool, x, h, g);
    case ffi::BF16:
      return ValueGrad<Row, Bf16>(pool, x, h, g);
    case ffi::F16:
      return ValueGrad<Row, F16>(pool, x, h, g);
    default:
      return BadType(x);
  }
}

#define JAXLOSS_VALUE_BINDING \
  ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Ret<ffi::Buffer<ffi::F32>>()
#define JAXLOSS_VALUE_GRAD_BINDING JAXLOSS_VALUE_BINDING.Ret<ffi::Buffer<ffi::F32>>()

XLA_FFI_DEFINE_HANDLER(EntropyLogits, ValueImpl<RowKernel>, JAXLOSS_VALUE_BINDING);
XLA_FFI_DEFINE_HANDLER(EntropyLogitsGrad, ValueGradImpl<RowKernel>, JAXLOSS_VALUE_GRAD_BINDING);
XLA_FFI_DEFINE_HANDLER(Entropy, ValueImpl<ProbabilityRow>, JAXLOSS_VALUE_BINDING);
XLA_FFI_DEFINE_HANDLER(EntropyGrad, ValueGradImpl<ProbabilityRow>, JAXLOSS_VALUE_GRAD_BINDING);

}  // namespace

// The FFI target names are the module's (cpu_module.cc registers them with a variant suffix in cpu.py).
const jaxloss_cpu::Handler* Handlers() {
  static const jaxloss_cpu::Handler table[] = {
      {"jaxloss_entropy_logits", reinterpret_cast<void*>(EntropyLogits)},
      {"jaxloss_entropy_logits_grad", reinterpret_cast<void*>(EntropyLogitsGrad)},
      {"jaxloss_entropy", reinterpret_cast<void*>(Entropy)},
      {"jaxloss_entropy_grad", reinterpret_cast<void*>(EntropyGrad)},
      {nullptr, nullptr},
  };
  return table;
}

}  // namespace JAXLOSS_VARIANT_NAMESPACE(JAXLOSS_VARIANT)
