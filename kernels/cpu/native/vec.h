// The vector type, loads and lane sum the kernels of this library share. The float32 and the
// quantized products must sum their lanes the same way to give the same bits (quant_gemm.c), so
// there is one lane_sum.
#pragma once

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  // unaligned loads

#if defined(__x86_64__) || defined(__i386__)
#if defined(__AVX__)  // a 32-byte vector fits one register only with AVX
// Pins a vector to a register: GCC otherwise re-reads loads for every multiply-add.
#define PIN(v) __asm__("" : "+x"(v))
#else
#define PIN(v) ((void)0)
#endif
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define PIN(v) ((void)0)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define PIN(v) ((void)0)
#define CPU_RELAX() ((void)0)
#endif

// Rows of x a product's tile takes at most, in either form.
#define MAX_MR 4

static inline v8 load8(const float *p) { return *(const v8u *)p; }

static inline v8 splat(float f) { return (v8){f, f, f, f, f, f, f, f}; }

static inline float lane_sum(v8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

static inline int main_mr(long M) { return M >= MAX_MR ? MAX_MR : (int)M; }
