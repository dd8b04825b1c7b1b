// What each variant object of cpu_kernel.cc exports to the extension module (cpu_module.cc): a table of its FFI
// handlers, in the namespace jaxloss_cpu_<variant>.
#ifndef JAXLOSS_CPU_HANDLERS_H_
#define JAXLOSS_CPU_HANDLERS_H_

#define JAXLOSS_CAT_(a, b) a##b
#define JAXLOSS_CAT(a, b) JAXLOSS_CAT_(a, b)
// jaxloss_cpu_<variant>: the namespace of one variant's code.
#define JAXLOSS_VARIANT_NAMESPACE(variant) JAXLOSS_CAT(jaxloss_cpu_, variant)

namespace jaxloss_cpu {

struct Handler {
  const char* target;  // the FFI target name, without the variant suffix
  void* function;      // an XLA_FFI_Handler*
};

}  // namespace jaxloss_cpu

#endif  // JAXLOSS_CPU_HANDLERS_H_
