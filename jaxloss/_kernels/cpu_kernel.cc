// The CPU row kernels behind jaxloss.entropy_from_logits, jaxloss.entropy and
// jaxloss.softmax_cross_entropy_with_integer_labels: XLA FFI custom calls (see
// jaxloss/_kernels/cpu.py).
//
// Built with the package (setup.py), once per instruction-set variant: this file is compiled with
// -DJAXLOSS_VARIANT=<name> (baseline: the architecture's default, x86-64 SSE2 or the aarch64 base; v3:
// -march=x86-64-v3, AVX2 + FMA; v4: -march=x86-64-v4, AVX-512) and every object is linked into the extension
// module jaxloss._kernels._cpu (cpu_module.cc), which picks a variant at run time from what the CPU supports.
// Everything here lives in the namespace jaxloss_cpu_<variant>, so the objects do not collide; each exports
// one function, jaxloss_cpu_<variant>::Handlers(), the table of its seven FFI handlers.
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
// Cross-entropy with integer labels (softmax_cross_entropy_with_integer_labels): below, at CrossEntropyRow.
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
#include <type_traits>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

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

// Eight lanes at a time (sixteen with AVX-512: the v4 variant), written with GCC/Clang vector extensions so that
// the loops are vectorised whatever the compiler's cost model thinks (AVX-512 in the v4 variant, AVX2 in v3, two
// SSE2 halves at baseline). The names below say "8" for one vector of kLanes floats.
#ifdef __AVX512F__
typedef float VF __attribute__((vector_size(64)));
typedef int32_t VI __attribute__((vector_size(64)));
typedef uint32_t VU __attribute__((vector_size(64)));
typedef uint16_t VH __attribute__((vector_size(32)));
typedef double VD __attribute__((vector_size(64)));
typedef float VF8 __attribute__((vector_size(32)));
constexpr int kLanes = 16;
#else
typedef float VF __attribute__((vector_size(32)));
typedef int32_t VI __attribute__((vector_size(32)));
typedef uint32_t VU __attribute__((vector_size(32)));
typedef uint16_t VH __attribute__((vector_size(16)));
typedef double VD __attribute__((vector_size(32)));
constexpr int kLanes = 8;
#endif
typedef float VF4 __attribute__((vector_size(16)));

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
#if defined(__AVX512F__)
  // (The zero-masked forms: GCC 12 warns about the unmasked ones' undefined pass-through operand.)
  VU u = (VU)_mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  return (VF)(u << 16);
#elif defined(__AVX2__)
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
  // Widen(F16), a vector at a time.
#if defined(__AVX512F__)
  VU u = (VU)_mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
#elif defined(__AVX2__)
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

// kLanes entries from x[0..n), n <= kLanes, widened to float; missing lanes are `pad` (by default -inf: classes that
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

// The lanes of v added pairwise into half as many doubles, and the total of such a vector of doubles.
#ifdef __AVX512F__
JAXLOSS_INLINE VD Widen(VF v) {
  VF8 a = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
  VF8 b = {v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
  return __builtin_convertvector(a, VD) + __builtin_convertvector(b, VD);
}
JAXLOSS_INLINE double Total(VD a) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }
#else
JAXLOSS_INLINE VD Widen(VF v) {
  VF4 a = {v[0], v[1], v[2], v[3]};
  VF4 b = {v[4], v[5], v[6], v[7]};
  return __builtin_convertvector(a, VD) + __builtin_convertvector(b, VD);
}
JAXLOSS_INLINE double Total(VD a) { return (a[0] + a[1]) + (a[2] + a[3]); }
#endif

// Horizontal reductions of one vector as pairwise trees (depth log2(kLanes)), not a lane-by-lane chain: at 256
// classes a row is 16 vectors, and three serial 16-step chains a row measured as a large part of its time.
JAXLOSS_INLINE float HMax(VF v) {
  float t[kLanes];
  std::memcpy(t, &v, sizeof v);
  for (int w = kLanes / 2; w >= 1; w /= 2) {
    for (int k = 0; k < w; ++k) t[k] = std::max(t[k], t[k + w]);
  }
  return t[0];
}

JAXLOSS_INLINE int32_t HOr(VI v) {
  int32_t t[kLanes];
  std::memcpy(t, &v, sizeof v);
  for (int w = kLanes / 2; w >= 1; w /= 2) {
    for (int k = 0; k < w; ++k) t[k] |= t[k + w];
  }
  return t[0];
}

// Pass 1 of every row kernel: the row maximum, and whether the row holds a NaN. Two vectors a step (two chains),
// then the rest.
template <typename T>
JAXLOSS_INLINE float RowMax(const T* x, int64_t n, bool* has_nan) {
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
  *has_nan = HOr(bad | bad2) != 0;
  return HMax(Max(vm2, vm));
}

template <typename T>
struct RowKernel {
  // Returns H for the row and, when kGrad, writes dH/dl into g (scratch holds the row's e and d: two arrays of
  // n floats, n rounded up to a multiple of kLanes).
  template <bool kGrad>
  static float Run(const T* x, int64_t n, float* g, float* scratch) {
    bool any_bad = false;
    const float m = RowMax(x, n, &any_bad);
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
    const double s = Total(s_acc);
    const double t = Total(t_acc);
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

// The scaled value-and-gradient handler writes the gradient in the logits' dtype: float32 results narrowed, round
// to nearest even with NaN kept (quiet), as XLA's convert. Put: one entry; Store8: one vector of kLanes entries.
JAXLOSS_INLINE void Put(float* g, int64_t i, float v) { g[i] = v; }

JAXLOSS_INLINE uint16_t NarrowBf16(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// binary32 -> binary16, round to nearest even, subnormal results included, inf kept, NaN -> quiet NaN (the
// algorithm of Maratyszcza's FP16 library, fp16_ieee_from_fp32_value): the rounding is done by a float32 addition
// whose operands are normal numbers (so XLA's flush-to-zero mode leaves it alone), every other step on the bits.
JAXLOSS_INLINE uint16_t NarrowF16(float f) {
  float base = (std::fabs(f) * 0x1p112f) * 0x1p-110f;
  uint32_t w;
  std::memcpy(&w, &f, 4);
  const uint32_t shl1 = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1 & 0xff000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  const uint32_t add_bits = (bias >> 1) + 0x07800000u;
  float add;
  std::memcpy(&add, &add_bits, 4);
  base = add + base;
  uint32_t b;
  std::memcpy(&b, &base, 4);
  const uint32_t nonsign = ((b >> 13) & 0x7c00u) + (b & 0x0fffu);
  return static_cast<uint16_t>((sign >> 16) | (shl1 > 0xff000000u ? 0x7e00u : nonsign));
}

JAXLOSS_INLINE void Put(Bf16* g, int64_t i, float v) { g[i].bits = NarrowBf16(v); }
JAXLOSS_INLINE void Put(F16* g, int64_t i, float v) { g[i].bits = NarrowF16(v); }

JAXLOSS_INLINE VU PickU(VI mask, VU a, VU b) { return (VU)((mask & (VI)a) | (~mask & (VI)b)); }

JAXLOSS_INLINE void Store8(float* g, VF v) { std::memcpy(g, &v, sizeof v); }

// (No NaN handling: v holds no NaN but arithmetic ones, the default NaN, whose low 16 bits are 0 -- the rounding
// leaves it a quiet NaN. The caller keeps other NaNs (a NaN weight's payload) on the scalar path, NarrowBf16.)
JAXLOSS_INLINE void Store8(Bf16* g, VF v) {
  VU b = (VU)v;
  VU r = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  VH h = __builtin_convertvector(r, VH);
  std::memcpy(g, &h, sizeof h);
}

JAXLOSS_INLINE void Store8(F16* g, VF v) {
  // NarrowF16, a vector at a time.
  VU w = (VU)v;
  VF base = (VF)(w & 0x7fffffffu) * 0x1p112f * 0x1p-110f;
  VU shl1 = w + w;
  VU sign = w & 0x80000000u;
  VU bias = shl1 & 0xff000000u;
  bias = PickU(ULess(bias, 0x71000000u), (VU){} + 0x71000000u, bias);
  base = (VF)((bias >> 1) + 0x07800000u) + base;
  VU b = (VU)base;
  VU nonsign = ((b >> 13) & 0x7c00u) + (b & 0x0fffu);
  VU r = (sign >> 16) | PickU(UGreaterEqual(shl1, 0xff000001u), (VU){} + 0x7e00u, nonsign);
  VH h = __builtin_convertvector(r, VH);
  std::memcpy(g, &h, sizeof h);
}

template <typename Out>
JAXLOSS_INLINE void Fill(Out* g, int64_t n, float v) {
  for (int64_t i = 0; i < n; ++i) Put(g, i, v);
}

JAXLOSS_INLINE int32_t HSum(VI v) {
  int32_t t[kLanes];
  std::memcpy(t, &v, sizeof v);
  for (int w = kLanes / 2; w >= 1; w /= 2) {
    for (int k = 0; k < w; ++k) t[k] += t[k + w];
  }
  return t[0];
}

// log1p(s) for s >= 0 to about 2^-47 relative (the loss is rounded to float32 once, after): log(1 + s) where
// s >= 2^-5 (1 + s rounded in double: an error of 2^-53 against log1p(s) > 0.03), else its Taylor series to s^8
// (the remainder below s^9/9 < 2^-40 s). glibc's log is about 2.5 times as fast as its log1p, which measured 15 %
// of a 4096 x 256 cross-entropy.
JAXLOSS_INLINE double Log1p(double s) {
  if (s >= 0x1p-5) return std::log(1.0 + s);
  double p = -1.0 / 8;
  p = p * s + 1.0 / 7;
  p = p * s - 1.0 / 6;
  p = p * s + 1.0 / 5;
  p = p * s - 1.0 / 4;
  p = p * s + 1.0 / 3;
  p = p * s - 1.0 / 2;
  return (p * s) * s + s;
}

// Shift for the cross-entropy rows, which need e and the top classes only (not d): the same e bit for bit in
// every class kept (d above kFloor), without Shift's clamp of hi and its masking of lo, which only keep the
// classes below kFloor (and at -inf) finite on their way to e = 0: here whatever those lanes compute (inf, NaN,
// garbage exponent bits) is masked to 0 at the end, as in Shift. Two vector operations fewer of about 25.
struct ShiftedE {
  VF e;
  VF hi;  // d rounded: 0 exactly at the top classes
};

JAXLOSS_INLINE ShiftedE ShiftE(VF l, VF neg_m) {
  VF hi = l + neg_m;
  VF bb = hi - l;
  VF lo = (l - (hi - bb)) + (neg_m - bb);
  VI keep = Greater(hi, Splat(kFloor));
  VF kd = hi * 1.44269504088896341f + 0x1.8p23f;
  VI ki = (VI)kd;
  kd -= 0x1.8p23f;
  VF r = (hi - kd * 0x1.62e400p-1f) - kd * 0x1.7f7d1cp-20f;
  r += lo;
  VF p = r * 0.0013941213255748153f + 0.008375209756195545f;
  p = p * r + 0.04166635125875473f;
  p = p * r + 0.16666413843631744f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  VF scale = (VF)((ki << 23) + 0x3f800000);
  return {(VF)((VI)(p * scale) & keep), hi};
}

// s1's accumulation of one vector: e added to the lane sums sb except at the top classes, which are counted.
// With AVX-512 a masked add, and the count from the comparison's mask register (scalar popcount): two vector
// operations, not five.
struct TopSplit {
  VF sb = {};
#ifdef __AVX512F__
  int64_t ntop = 0;
  JAXLOSS_INLINE void Add(ShiftedE q) {
    const __mmask16 t = _mm512_cmpeq_ps_mask((__m512)q.hi, _mm512_setzero_ps());
    sb = (VF)_mm512_mask_add_ps((__m512)sb, static_cast<__mmask16>(~t), (__m512)sb, (__m512)q.e);
    ntop += __builtin_popcount(static_cast<unsigned>(t));
  }
  JAXLOSS_INLINE int64_t Top() const { return ntop; }
#else
  VI count = {};
  JAXLOSS_INLINE void Add(ShiftedE q) {
    const VI top = Equal(q.hi, Splat(0.0f));
    sb += (VF)(~top & (VI)q.e);
    count -= top;
  }
  JAXLOSS_INLINE int64_t Top() const { return HSum(count); }
#endif
};

// Cross-entropy of softmax(l) against a class index k, for each row l of the last axis (jaxloss.
// softmax_cross_entropy_with_integer_labels; the XLA formulation is jaxloss._kernels.categorical.
// integer_value_and_grad): L = log1p(s1) + u_k, with m = max(l), d = l - m as hi + lo (TwoSum), e = exp(d),
// s1 = sum over the non-top classes of e + (number of top classes - 1) and u_k = -d_k = m - l_k; and, in the
// value-and-gradient handler, dL/dl_i = p_i = e_i / z (i != k), z = 1 + s1, and at the label p_k - 1, written
// -s1 / z where k is a top class (d_k = 0) so that a confident row keeps its digits. The same sweeps as RowKernel
// (the maximum, then the sums, with e written into the gradient row, then that row scaled by 1/z); the sums in
// float32 lanes, 4 terms a lane, the blocks in double; L formed in double (log1p(s1) + (m - l_k), the latter exact
// to double rounding) and rounded once; the gradient in float32 (p_i = e_i * (1/z)), the label's entry in double.
//
// The scaled handler (the gradient of a weighted mean sum_r c_r L_r) writes c dL/dl instead, in the logits' dtype:
// p_i c = e_i * f32(c / z) (one rounding more than p_i's own only where the output is 16-bit: the narrowing), the
// label's entry c (p_k - 1) in double, rounded once (to float32, then to the output dtype). With c = 1 every
// entry is the unscaled handler's to the bit.
//
// Limits, as the XLA path: a label outside [0, n) gives NaN (value and whole gradient row); a row with a NaN gives
// NaN (value and whole gradient row); a row with every class at -inf gives 0 (value and gradient); the classes at
// +inf are the top classes and share all the probability, every other class is out; a label on a class that is
// out gives +inf (gradient p - onehot, finite). Classes with d < -87 get e = 0, as in RowKernel. (A row whose
// weight c is 0 is not read by the scaled handler at all: value 0, gradient 0; see CeScaled.)
template <typename T>
struct CrossEntropyRow {
  // Returns L; when kGrad, writes scale * dL/dl into g (n entries of Out: float32, or the logits' 16-bit type).
  // e_row: n floats holding e between the passes where Out is not float (where it is, g itself holds them).
  template <bool kGrad, typename Out = float>
  static float Run(const T* x, int64_t n, int32_t label, Out* g, float* e_row = nullptr, float scale = 1.0f) {
    float* eb = nullptr;
    if constexpr (kGrad) {
      if constexpr (std::is_same_v<Out, float>) {
        eb = g;
      } else {
        eb = e_row;
      }
    }
    if (label < 0 || label >= n) {
      if (kGrad) Fill(g, n, NAN);
      return NAN;
    }
    bool any_bad = false;
    const float m = RowMax(x, n, &any_bad);  // pass 1, as RowKernel
    if (any_bad) {
      if (kGrad) Fill(g, n, NAN);
      return NAN;
    }
    if (m == -INFINITY) {  // every class out
      if (kGrad) Fill(g, n, 0.0f);
      return 0.0f;
    }
    const float xk = Widen(x[label]);
    const double c = scale;
    if (m == INFINITY) {  // the classes at +inf are the top classes; every other class is out
      int64_t k = 0;
      for (int64_t i = 0; i < n; ++i) k += Widen(x[i]) == INFINITY;
      const double z = static_cast<double>(k);
      if (kGrad) {
        const float p = static_cast<float>(c / z);
        for (int64_t i = 0; i < n; ++i) Put(g, i, Widen(x[i]) == INFINITY ? p : 0.0f);
        Put(g, label, static_cast<float>(xk == INFINITY ? c * (-(z - 1.0) / z) : -c));
      }
      return xk == INFINITY ? static_cast<float>(std::log(z)) : INFINITY;
    }
    // Pass 2: s1 (as RowKernel's), e written into eb.
    const VF neg_m = Splat(-m);
    VD s_acc = {};
    TopSplit acc;
    constexpr int64_t kBlock = 4 * kLanes;
    int64_t i = 0;
    while (i < n) {
      acc.sb = VF{};
      const int64_t end = std::min(n, i + kBlock);
      for (; i + kLanes <= end; i += kLanes) {
        ShiftedE q = ShiftE(Widen8(x + i), neg_m);
        acc.Add(q);
        if constexpr (kGrad) std::memcpy(eb + i, &q.e, sizeof q.e);
      }
      if (i < end) {
        ShiftedE q = ShiftE(Load(x + i, end - i), neg_m);
        acc.Add(q);
        if constexpr (kGrad) {
          for (int64_t k = 0; i + k < end; ++k) eb[i + k] = q.e[k];
        }
        i = end;
      }
      s_acc += Widen(acc.sb);
    }
    const double s = Total(s_acc);
    const double top = static_cast<double>(acc.Top());
    const double s1 = s + (top - 1.0);
    const double z = 1.0 + s1;
    if constexpr (kGrad) {
      // Pass 3 (over eb, in cache): scale * p = e * (scale/z), written to g; then the label's entry.
      const double ek = eb[label];
      const VF iz = Splat(static_cast<float>(c / z));
      int64_t j = 0;
      if (std::is_same_v<Out, float> || !std::isnan(iz[0])) {  // (a NaN weight: Put keeps its NaN, see Store8)
        for (; j + kLanes <= n; j += kLanes) {
          VF e;
          std::memcpy(&e, eb + j, sizeof e);
          Store8(g + j, e * iz);
        }
      }
      for (; j < n; ++j) Put(g, j, eb[j] * iz[0]);
      Put(g, label, static_cast<float>(xk == m ? c * -(s1 / z) : c * (ek / z - 1.0)));
    }
    // u_k = m - l_k: exact in double unless the two are 2^29 apart in magnitude (then within 2^-53 of it); +inf
    // for a label on a class at -inf.
    return static_cast<float>(Log1p(s1) + (static_cast<double>(m) - static_cast<double>(xk)));
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
    return static_cast<float>(Total(acc));
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

// The gradient is written to a buffer XLA has just allocated: above glibc's mmap threshold (32 MiB at most) fresh
// pages on every call, each 4 KiB page a fault on first touch (8192 for 256 x 32768 float32: about half the time of
// the whole value-and-gradient call on the 2-core machine of benchmarks/NOTES.md). Where transparent huge pages
// are enabled on request (Linux, "madvise", a common default), asking for them on the whole 2 MiB pages inside the
// buffer makes that 16 faults. Advice only: nothing changes where it is not taken (other systems, THP off), and it
// ends with the mapping when XLA frees the buffer. Buffers below 8 MiB are left alone.
void AdviseHugePages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  if (bytes < 4 * kHuge) return;
  const uintptr_t first = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // failure: no matter
#else
  (void)p;
  (void)bytes;
#endif
}

// Cross-entropy with integer labels: logits [..., n] and labels int32 [...] (one per row); `CeValue` writes the
// float32 loss per row, `CeValueGrad` also its gradient (float32, shaped like the logits).
template <typename T, bool kGrad>
ffi::Error Ce(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Buffer<ffi::S32> labels, float* hs, float* gs,
              int64_t rows) {
  auto dims = x.dimensions();
  const int64_t cols = dims.size() == 0 ? 1 : dims.back();
  if (labels.element_count() != static_cast<size_t>(rows)) {
    return ffi::Error::InvalidArgument("jaxloss CPU kernel: one label per row of the logits expected; got " +
                                       std::to_string(labels.element_count()) + " labels for " +
                                       std::to_string(rows) + " rows");
  }
  const T* xs = static_cast<const T*>(x.untyped_data());
  const int32_t* ks = labels.typed_data();
  if (kGrad) AdviseHugePages(gs, static_cast<size_t>(rows * cols) * sizeof(float));
  ParallelRows(pool, rows, cols, [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      hs[r] = CrossEntropyRow<T>::template Run<kGrad>(xs + r * cols, cols, ks[r], kGrad ? gs + r * cols : nullptr);
    }
  });
  return ffi::Error::Success();
}

template <bool kGrad>
ffi::Error CeDispatch(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Buffer<ffi::S32> labels, float* hs, float* gs,
                      int64_t rows) {
  switch (x.element_type()) {
    case ffi::F32:
      return Ce<float, kGrad>(pool, x, labels, hs, gs, rows);
    case ffi::BF16:
      return Ce<Bf16, kGrad>(pool, x, labels, hs, gs, rows);
    case ffi::F16:
      return Ce<F16, kGrad>(pool, x, labels, hs, gs, rows);
    default:
      return BadType(x);
  }
}

ffi::Error CeValue(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Buffer<ffi::S32> labels,
                   ffi::Result<ffi::Buffer<ffi::F32>> h) {
  return CeDispatch<false>(pool, x, labels, h->typed_data(), nullptr, h->element_count());
}

ffi::Error CeValueGrad(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Buffer<ffi::S32> labels,
                       ffi::Result<ffi::Buffer<ffi::F32>> h, ffi::Result<ffi::Buffer<ffi::F32>> g) {
  return CeDispatch<true>(pool, x, labels, h->typed_data(), g->typed_data(), h->element_count());
}

// The gradient of a weighted sum of the losses, sum_r c_r L_r (a mean: c_r = where_r / count), written whole:
// logits [..., n], labels int32 [...] and weights c float32 [...] (one per row); writes L_r (float32, unweighted:
// the caller forms the sum) and c_r dL_r/dl (shaped like the logits, in their dtype: float32, bfloat16 or
// float16; computed in float32 and rounded once to that dtype). A row whose weight is exactly 0 is not read: its
// value and gradient row are 0, whatever its logits and label (out of range, NaN, inf). Every other row is as the
// unscaled handler's (NaN row for a label out of range or a NaN logit, and so on), its gradient times c_r.
template <typename T>
ffi::Error CeScaled(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Buffer<ffi::S32> labels, ffi::Buffer<ffi::F32> scale,
                    ffi::Buffer<ffi::F32>* h, ffi::AnyBuffer* g) {
  auto dims = x.dimensions();
  const int64_t cols = dims.size() == 0 ? 1 : dims.back();
  const int64_t rows = h->element_count();
  if (labels.element_count() != static_cast<size_t>(rows) || scale.element_count() != static_cast<size_t>(rows)) {
    return ffi::Error::InvalidArgument("jaxloss CPU kernel: one label and one weight per row of the logits expected; "
                                       "got " + std::to_string(labels.element_count()) + " labels and " +
                                       std::to_string(scale.element_count()) + " weights for " +
                                       std::to_string(rows) + " rows");
  }
  if (g->element_type() != x.element_type() || g->element_count() != static_cast<size_t>(rows * cols)) {
    return ffi::Error::InvalidArgument("jaxloss CPU kernel: the scaled gradient must be shaped and typed as the "
                                       "logits");
  }
  const T* xs = static_cast<const T*>(x.untyped_data());
  const int32_t* ks = labels.typed_data();
  const float* cs = scale.typed_data();
  float* hs = h->typed_data();
  T* gs = static_cast<T*>(g->untyped_data());
  AdviseHugePages(gs, static_cast<size_t>(rows * cols) * sizeof(T));
  ParallelRows(pool, rows, cols, [=](int64_t lo, int64_t hi) {
    std::vector<float> e_row(std::is_same_v<T, float> ? 0 : static_cast<size_t>(cols));
    for (int64_t r = lo; r < hi; ++r) {
      T* gr = gs + r * cols;
      if (cs[r] == 0.0f) {
        std::memset(static_cast<void*>(gr), 0, static_cast<size_t>(cols) * sizeof(T));  // +0 in every dtype
        hs[r] = 0.0f;
        continue;
      }
      hs[r] = CrossEntropyRow<T>::template Run<true, T>(xs + r * cols, cols, ks[r], gr, e_row.data(), cs[r]);
    }
  });
  return ffi::Error::Success();
}

ffi::Error CeValueGradScaled(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Buffer<ffi::S32> labels,
                             ffi::Buffer<ffi::F32> scale, ffi::Result<ffi::Buffer<ffi::F32>> h,
                             ffi::Result<ffi::AnyBuffer> g) {
  switch (x.element_type()) {
    case ffi::F32:
      return CeScaled<float>(pool, x, labels, scale, &*h, &*g);
    case ffi::BF16:
      return CeScaled<Bf16>(pool, x, labels, scale, &*h, &*g);
    case ffi::F16:
      return CeScaled<F16>(pool, x, labels, scale, &*h, &*g);
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

#define JAXLOSS_CE_BINDING \
  ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::S32>>().Ret<ffi::Buffer<ffi::F32>>()
XLA_FFI_DEFINE_HANDLER(CeInteger, CeValue, JAXLOSS_CE_BINDING);
XLA_FFI_DEFINE_HANDLER(CeIntegerGrad, CeValueGrad, JAXLOSS_CE_BINDING.Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER(CeIntegerGradScaled, CeValueGradScaled,
                       ffi::Ffi::Bind()
                           .Ctx<ffi::ThreadPool>()
                           .Arg<ffi::AnyBuffer>()
                           .Arg<ffi::Buffer<ffi::S32>>()
                           .Arg<ffi::Buffer<ffi::F32>>()
                           .Ret<ffi::Buffer<ffi::F32>>()
                           .Ret<ffi::AnyBuffer>());

}  // namespace

// The FFI target names are the module's (cpu_module.cc registers them with a variant suffix in cpu.py).
const jaxloss_cpu::Handler* Handlers() {
  static const jaxloss_cpu::Handler table[] = {
      {"jaxloss_entropy_logits", reinterpret_cast<void*>(EntropyLogits)},
      {"jaxloss_entropy_logits_grad", reinterpret_cast<void*>(EntropyLogitsGrad)},
      {"jaxloss_entropy", reinterpret_cast<void*>(Entropy)},
      {"jaxloss_entropy_grad", reinterpret_cast<void*>(EntropyGrad)},
      {"jaxloss_ce_integer", reinterpret_cast<void*>(CeInteger)},
      {"jaxloss_ce_integer_grad", reinterpret_cast<void*>(CeIntegerGrad)},
      {"jaxloss_ce_integer_grad_scaled", reinterpret_cast<void*>(CeIntegerGradScaled)},
      {nullptr, nullptr},
  };
  return table;
}

}  // namespace JAXLOSS_VARIANT_NAMESPACE(JAXLOSS_VARIANT)
