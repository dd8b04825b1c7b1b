// jaxloss._kernels._cpu: the CPU row kernels (cpu_kernel.cc), compiled once per instruction-set variant and
// linked into this module, and the run-time choice among them.
//
//   variants()      -> the variants compiled into this build, best first, e.g. ("v4", "v3", "baseline")
//   supported(name) -> whether this CPU (and OS) can run that variant
//   handlers(name)  -> {FFI target name: PyCapsule of its XLA_FFI_Handler*} for a compiled, supported variant
//
// setup.py defines JAXLOSS_HAVE_V4 / JAXLOSS_HAVE_V3 for the variants it compiled (baseline always is). This file
// itself is compiled for the baseline architecture, so importing it is safe on every CPU; a variant's code only
// runs once jax calls a handler that handlers() gave out, and handlers() refuses a variant this CPU lacks.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <cstring>

#include "jaxloss/cpu_handlers.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define JAXLOSS_X86 1
#include <cpuid.h>
#endif

#define JAXLOSS_DECLARE_VARIANT(v) \
  namespace JAXLOSS_VARIANT_NAMESPACE(v) { const jaxloss_cpu::Handler* Handlers(); }

JAXLOSS_DECLARE_VARIANT(baseline)
#ifdef JAXLOSS_HAVE_V3
JAXLOSS_DECLARE_VARIANT(v3)
#endif
#ifdef JAXLOSS_HAVE_V4
JAXLOSS_DECLARE_VARIANT(v4)
#endif

namespace {

#ifdef JAXLOSS_X86
// What -march=x86-64-v3 and -march=x86-64-v4 let the compiler use (GCC's and Clang's definitions of the psABI
// levels), read from CPUID, and whether the OS saves the vector registers (XCR0): the compiled code may use any
// of these, not only the AVX2/FMA/AVX-512 instructions the source asks for.
struct X86Features {
  bool v3 = false;
  bool v4 = false;
};

uint64_t Xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

X86Features DetectX86() {
  X86Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const unsigned ecx1 = c;
  auto bit = [](unsigned reg, int n) { return ((reg >> n) & 1u) != 0; };
  // x86-64-v2: SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CMPXCHG16B, LAHF/SAHF.
  const bool v2 = bit(ecx1, 0) && bit(ecx1, 9) && bit(ecx1, 19) && bit(ecx1, 20) && bit(ecx1, 23) &&
                  bit(ecx1, 13);
  const bool osxsave = bit(ecx1, 27);
  if (!v2 || !osxsave) return f;
  unsigned ext_c = 0;
  if (__get_cpuid(0x80000001u, &a, &b, &c, &d)) ext_c = c;
  const bool lahf = bit(ext_c, 0), lzcnt = bit(ext_c, 5);
  unsigned b7 = 0;
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    b7 = b;
  }
  const uint64_t xcr0 = Xcr0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM and YMM state
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM state
  // x86-64-v3: AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, XSAVE (and v2).
  f.v3 = lahf && lzcnt && os_avx && bit(ecx1, 28) /*AVX*/ && bit(ecx1, 12) /*FMA*/ && bit(ecx1, 29) /*F16C*/ &&
         bit(ecx1, 22) /*MOVBE*/ && bit(ecx1, 26) /*XSAVE*/ && bit(b7, 3) /*BMI1*/ && bit(b7, 5) /*AVX2*/ &&
         bit(b7, 8) /*BMI2*/;
  // x86-64-v4: AVX512F, AVX512BW, AVX512CD, AVX512DQ, AVX512VL (and v3).
  f.v4 = f.v3 && os_avx512 && bit(b7, 16) /*F*/ && bit(b7, 17) /*DQ*/ && bit(b7, 28) /*CD*/ &&
         bit(b7, 30) /*BW*/ && bit(b7, 31) /*VL*/;
  return f;
}
#endif

struct Variant {
  const char* name;
  const jaxloss_cpu::Handler* (*handlers)();
};

// Best first.
const Variant kVariants[] = {
#ifdef JAXLOSS_HAVE_V4
    {"v4", &jaxloss_cpu_v4::Handlers},
#endif
#ifdef JAXLOSS_HAVE_V3
    {"v3", &jaxloss_cpu_v3::Handlers},
#endif
    {"baseline", &jaxloss_cpu_baseline::Handlers},
};

// Whether this CPU runs `name` (any variant name this module knows of, compiled in or not); -1 if unknown.
int Supported(const char* name) {
  if (std::strcmp(name, "baseline") == 0) return 1;
  if (std::strcmp(name, "v3") == 0 || std::strcmp(name, "v4") == 0) {
#ifdef JAXLOSS_X86
    static const X86Features features = DetectX86();
    return name[1] == '3' ? features.v3 : features.v4;
#else
    return 0;
#endif
  }
  return -1;
}

PyObject* Variants(PyObject*, PyObject*) {
  const Py_ssize_t n = sizeof kVariants / sizeof kVariants[0];
  PyObject* out = PyTuple_New(n);
  if (out == nullptr) return nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* name = PyUnicode_FromString(kVariants[i].name);
    if (name == nullptr) {
      Py_DECREF(out);
      return nullptr;
    }
    PyTuple_SET_ITEM(out, i, name);
  }
  return out;
}

PyObject* SupportedPy(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  const int ok = Supported(name);
  if (ok < 0) return PyErr_Format(PyExc_ValueError, "unknown CPU kernel variant %R (known: v4, v3, baseline)", arg);
  return PyBool_FromLong(ok);
}

PyObject* Handlers(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  const Variant* variant = nullptr;
  for (const Variant& v : kVariants) {
    if (std::strcmp(v.name, name) == 0) variant = &v;
  }
  if (variant == nullptr) {
    PyObject* names = Variants(nullptr, nullptr);
    if (names == nullptr) return nullptr;
    PyErr_Format(PyExc_ValueError, "CPU kernel variant %R is not compiled into this build (it has %R)", arg, names);
    Py_DECREF(names);
    return nullptr;
  }
  if (Supported(name) != 1) {
    return PyErr_Format(PyExc_ValueError, "CPU kernel variant %R is not supported by this CPU", arg);
  }
  PyObject* out = PyDict_New();
  if (out == nullptr) return nullptr;
  for (const jaxloss_cpu::Handler* h = variant->handlers(); h->target != nullptr; ++h) {
    PyObject* capsule = PyCapsule_New(h->function, nullptr, nullptr);  // unnamed, as jax.ffi.pycapsule makes
    if (capsule == nullptr || PyDict_SetItemString(out, h->target, capsule) < 0) {
      Py_XDECREF(capsule);
      Py_DECREF(out);
      return nullptr;
    }
    Py_DECREF(capsule);
  }
  return out;
}

PyMethodDef kMethods[] = {
    {"variants", Variants, METH_NOARGS, "variants() -> the variants compiled into this build, best first."},
    {"supported", SupportedPy, METH_O, "supported(name) -> whether this CPU can run the variant."},
    {"handlers", Handlers, METH_O,
     "handlers(name) -> {FFI target name: PyCapsule} of a compiled variant this CPU supports (ValueError "
     "otherwise)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {
    PyModuleDef_HEAD_INIT,
    "jaxloss._kernels._cpu",
    "jaxloss's CPU row kernels (XLA FFI handlers), one build per instruction-set variant.",
    -1,
    kMethods,
};

}  // namespace

PyMODINIT_FUNC PyInit__cpu() { return PyModule_Create(&kModule); }
