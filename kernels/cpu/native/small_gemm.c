// y = x W^T (+ b) in float32 for the few rows of a CPU decode step, on a small thread pool.
//
// Why not BLAS: OpenBLAS packs the whole weight matrix on every GEMM call, so at 2-16 rows a
// product costs up to twice its one-row time, while the weights (read from memory once per
// step) are what bounds a decode step. Here each thread streams its share of W's rows once and
// multiplies every row of x against them while they sit in L1 (docs/cpu_profile.md section 8).
//
// The inner tile is a dot product: MR rows of x against NR rows of W (row-major [N, K], the
// layout torch keeps), MR * NR vector accumulators, summed across lanes once at the end. GCC's
// vector extensions keep it portable; on x86 an empty asm pins each loaded vector to a register,
// since GCC otherwise re-reads W and x from memory for every multiply-add (2x slower measured).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "small_gemm.h"
#include "vec.h"

#define MAX_NR 6


// One MR x NR block of y. `prefetch`, when set, is the next block of W: touched one cache line
// per row every 16 floats, so memory streams it in while this block computes.
static inline __attribute__((always_inline)) void tile(int MR, int NR, const float *x, long ldx,
                                                       const float *w, long K, float *y, long ldy,
                                                       const float *bias,
                                                       const float *prefetch) {
  v8 acc[MAX_MR][MAX_NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 6
    for (int j = 0; j < NR; j++) acc[i][j] = (v8){0};
  long k = 0;
  for (; k + 8 <= K; k += 8) {
    if (prefetch && !(k & 15)) {
#pragma GCC unroll 6
      for (int j = 0; j < NR; j++) __builtin_prefetch(prefetch + j * K + k);
    }
    v8 wv[MAX_NR];
#pragma GCC unroll 6
    for (int j = 0; j < NR; j++) {
      wv[j] = load8(w + j * K + k);
      PIN(wv[j]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
      v8 xv = load8(x + i * ldx + k);
      PIN(xv);
#pragma GCC unroll 6
      for (int j = 0; j < NR; j++) acc[i][j] += xv * wv[j];
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 6
    for (int j = 0; j < NR; j++) {
      float s = lane_sum(acc[i][j]);
      for (long t = k; t < K; t++) s += x[i * ldx + t] * w[j * K + t];  // K % 8 tail
      y[i * ldy + j] = bias ? s + bias[j] : s;
    }
}

typedef void (*tile_fn)(const float *, long, const float *, long, float *, long, const float *,
                        const float *);
#define TILE(MR, NR)                                                                         \
  static void tile_##MR##_##NR(const float *x, long ldx, const float *w, long K, float *y,  \
                               long ldy, const float *b, const float *p) {                  \
    tile(MR, NR, x, ldx, w, K, y, ldy, b, p);                                                \
  }
#define TILE_ROW(MR) TILE(MR, 1) TILE(MR, 2) TILE(MR, 3) TILE(MR, 4) TILE(MR, 5) TILE(MR, 6)
TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
#define TILE_PTRS(MR) \
  {tile_##MR##_1, tile_##MR##_2, tile_##MR##_3, tile_##MR##_4, tile_##MR##_5, tile_##MR##_6}
static const tile_fn TILES[MAX_MR][MAX_NR] = {TILE_PTRS(1), TILE_PTRS(2), TILE_PTRS(3),
                                              TILE_PTRS(4)};

// Rows of W per tile for the main tile of MR rows of x: MR * NR accumulators, NR loaded W
// vectors and one x vector fit the 16 vector registers of AVX2.
static const int NR_FOR_MR[MAX_MR + 1] = {0, 6, 4, 3, 3};

static int rows_per_tile(const rs_product_t *p) {
  return p->w.kind == RS_F32 ? NR_FOR_MR[main_mr(p->M)] : rs_quant_rows_per_tile(p);
}

// Columns [n0, n1) of y (rows n0..n1 of W), every row of x: each block of W is read from memory
// once and used for all row blocks of x.
static void run_columns(const rs_product_t *p, long n0, long n1) {
  if (p->w.kind != RS_F32) {
    rs_quant_columns(p, n0, n1);
    return;
  }
  long M = p->M, K = p->K;
  int mr = main_mr(M), nr = NR_FOR_MR[mr];
  for (long n = n0; n < n1; n += nr) {
    int nb = (int)(n1 - n < nr ? n1 - n : nr);
    const float *w = (const float *)p->w.data + n * K;
    const float *b = p->bias ? p->bias + n : 0;
    for (long m = 0; m < M; m += mr) {
      int mb = (int)(M - m < mr ? M - m : mr);
      const float *next = (m == 0 && n + nr < n1) ? w + (long)nr * K : 0;
      TILES[mb - 1][nb - 1](p->x + m * p->ldx, p->ldx, w, K, p->y + m * p->N + n, p->N, b,
                            next);
    }
  }
}

// ---- the thread pool ----------------------------------------------------------------------
// Workers spin for g_spin_ns (100 us) after each product (a decode step's products come tens
// to hundreds of microseconds apart, and waking a sleeping thread costs about as much), then
// sleep on a condition variable until the next one.
#define MAX_THREADS 64
static pthread_mutex_t g_call = PTHREAD_MUTEX_INITIALIZER;  // one product at a time
static pthread_mutex_t g_sleep = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER;
static pthread_t g_workers[MAX_THREADS];
static int g_started = 0;  // worker threads running (thread 0 is the caller)
static int g_threads = 1;  // threads a product may use
static const long g_spin_ns = 100000;
static atomic_long g_generation;
static atomic_int g_finished;
static rs_task_fn g_task;  // what the workers run now: g_task(g_context, bounds of theirs)
static void *g_context;
static long g_bounds[MAX_THREADS + 1];
static long g_created_at[MAX_THREADS + 1];

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

static long wait_for_generation(long seen) {
  long start = now_ns();
  for (int spins = 1;; spins++) {
    long gen = atomic_load_explicit(&g_generation, memory_order_acquire);
    if (gen != seen) return gen;
    CPU_RELAX();
    if ((spins & 63) == 0 && now_ns() - start > g_spin_ns) break;
  }
  pthread_mutex_lock(&g_sleep);
  long gen;
  while ((gen = atomic_load(&g_generation)) == seen) pthread_cond_wait(&g_wake, &g_sleep);
  pthread_mutex_unlock(&g_sleep);
  return gen;
}

static void *worker_main(void *arg) {
  long index = (long)arg;
  // The generation when this worker was created (under g_call, so before any product it must
  // take part in): read here instead, a product dispatched before the thread first ran would
  // count as seen, and the caller would wait for this worker forever.
  long seen = g_created_at[index];
  for (;;) {
    seen = wait_for_generation(seen);
    if (g_bounds[index] < g_bounds[index + 1])
      g_task(g_context, g_bounds[index], g_bounds[index + 1], (int)index);
    atomic_fetch_add_explicit(&g_finished, 1, memory_order_release);
  }
  return 0;
}

// A forked child has the caller's thread only: it starts its own workers when asked.
static void reset_after_fork(void) {
  g_started = 0;
  g_threads = 1;
  pthread_mutex_init(&g_call, 0);
  pthread_mutex_init(&g_sleep, 0);
  pthread_cond_init(&g_wake, 0);
}

int rs_set_threads(int threads) {
  static int registered = 0;
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  pthread_mutex_lock(&g_call);
  if (!registered) registered = !pthread_atfork(0, 0, reset_after_fork);
  while (g_started < threads - 1) {
    g_created_at[g_started + 1] = atomic_load(&g_generation);
    if (pthread_create(&g_workers[g_started], 0, worker_main, (void *)(long)(g_started + 1)))
      break;
    g_started++;
  }
  g_threads = threads < g_started + 1 ? threads : g_started + 1;
  pthread_mutex_unlock(&g_call);
  return g_threads;
}

// Runs task over [bounds[0], bounds[threads]) on `threads` threads (the caller is thread 0),
// thread t over [bounds[t], bounds[t + 1]); started workers beyond `threads` get empty ranges.
// The caller holds g_call.
static void dispatch(rs_task_fn task, void *context, int threads) {
  long end = g_bounds[threads];
  for (int t = threads + 1; t <= g_started + 1; t++) g_bounds[t] = end;
  g_task = task;
  g_context = context;
  atomic_store(&g_finished, 0);
  atomic_fetch_add_explicit(&g_generation, 1, memory_order_release);
  pthread_mutex_lock(&g_sleep);
  pthread_cond_broadcast(&g_wake);
  pthread_mutex_unlock(&g_sleep);
  if (g_bounds[0] < g_bounds[1]) task(context, g_bounds[0], g_bounds[1], 0);
  while (atomic_load_explicit(&g_finished, memory_order_acquire) < g_started) CPU_RELAX();
}

static void product_task(void *context, long n0, long n1, int thread) {
  (void)thread;
  run_columns((const rs_product_t *)context, n0, n1);
}

// Rows of x one product takes at most: more are cut into products of this many. Each row's
// result is the same either way; x's rows streamed again for every few rows of W are what grow
// past this (the 120 products of a step: 3.36 ms a row at 128 rows, 3.64 at 256; section 9 of
// docs/cpu_profile.md).
#define ROW_BLOCK 128

// ---- which form a quantized weight's product reads -------------------------------------------
// Both forms give the same bits (small_gemm.h); which is faster depends on the machine. The
// blocks read 4-6x fewer bytes and pay for dequantizing in registers, so they win at few rows
// and lose as rows multiply the arithmetic per weight. On the Zen 1 development machine they won
// up to 3 rows and were even at 4, and which won at 4 moved with the machine's memory traffic
// (docs/cpu_profile.md section 12); on a Sapphire Rapids machine (AVX-512) they won at 4 rows by
// 1.65x and at 8 by 1.16x (section 15). So up to rs_quantized_rows(kind) rows a product reads the
// blocks, above ADAPT_ROWS the float32 W, and in between each (weight, row count) times its
// products in both forms, TRIALS calls each, then reads the faster, timing the slower again
// every EXPLORE-th call so that a change in the machine's load can turn the choice.
#define ADAPT_ROWS 16
#define TRIALS 3
#define EXPLORE 32
#define CHOICE_SLOTS 4096  // power of two; a 30-layer model has ~200 weights x 12 row counts
#define CHOICE_PROBES 16

typedef struct {
  const void *weight;  // the blocks' data: NULL for a free slot
  long rows;
  double ns[2];  // moving average of a call's time, [0] float32 W, [1] blocks
  int calls[2];
  long total;
} choice_t;

static choice_t g_choices[CHOICE_SLOTS];  // guarded by g_call
static int g_measured_forms = 1;

void rs_set_measured_forms(int on) {
  pthread_mutex_lock(&g_call);
  g_measured_forms = on != 0;
  for (long i = 0; i < CHOICE_SLOTS; i++) g_choices[i] = (choice_t){0};
  pthread_mutex_unlock(&g_call);
}

// The slot of (weight, rows), claimed if new; NULL when its probes are all taken by others.
static choice_t *choice_for(const void *weight, long rows) {
  uintptr_t h = ((uintptr_t)weight >> 4) * 0x9E3779B97F4A7C15ull + (uintptr_t)rows;
  for (int probe = 0; probe < CHOICE_PROBES; probe++) {
    choice_t *c = &g_choices[(h + probe) & (CHOICE_SLOTS - 1)];
    if (c->weight == weight && c->rows == rows) return c;
    if (!c->weight) {
      *c = (choice_t){.weight = weight, .rows = rows};
      return c;
    }
  }
  return 0;
}

// 1 to read the blocks, 0 the float32 W. Called under g_call.
static int choose_blocks(choice_t *c) {
  if (c->calls[0] < TRIALS || c->calls[1] < TRIALS) return c->calls[1] <= c->calls[0];
  int faster = c->ns[1] <= c->ns[0];
  return c->total % EXPLORE == EXPLORE - 1 ? !faster : faster;
}

static void record(choice_t *c, int blocks, long ns) {
  double *avg = &c->ns[blocks];
  // A call the OS preempted counts as at most four times the average.
  double t = c->calls[blocks] && ns > 4 * *avg ? 4 * *avg : (double)ns;
  *avg = c->calls[blocks] ? *avg + (t - *avg) / 4 : t;
  c->calls[blocks]++;
  c->total++;
}

static void run_product(const rs_product_t *p) {  // under g_call
  long nr = rows_per_tile(p);
  long blocks = (p->N + nr - 1) / nr;
  int threads = g_threads < blocks ? g_threads : (int)blocks;
  if (threads <= 1) {
    run_columns(p, 0, p->N);
    return;
  }
  for (int t = 0; t <= threads; t++) {  // whole tiles each
    long b = blocks * t / threads * nr;
    g_bounds[t] = b < p->N ? b : p->N;
  }
  dispatch(product_task, (void *)p, threads);
}

// ---- long products through BLAS ------------------------------------------------------------
// Our tiles keep W's rows in registers and stream x past them: right for a decode step's few
// rows, where W's bytes bound the time, but a long prefill chunk is bound by arithmetic, where a
// BLAS GEMM (packed panels, blocked for the caches, the CPU's widest vectors) runs 1.3-1.7x
// faster: 2,048 rows of a layer's products took 80 ms in our tiles against 48 in numpy's
// OpenBLAS on an AVX-512 Xeon, 381 against 350 ms (torch's BLAS) on the Zen 1 (docs/cpu_profile.md
// section 15). So when the Python side hands us a cblas_sgemm (numpy's OpenBLAS), products of
// more than g_blas_rows rows over a float32 W go there.
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*sgemm64_fn)(int, int, int, long, long, long, float, const float *, long,
                           const float *, long, float, float *, long);
typedef void (*sgemm32_fn)(int, int, int, int, int, int, float, const float *, int,
                           const float *, int, float, float *, int);
static void *g_sgemm;  // sgemm64_fn or sgemm32_fn, by g_sgemm_ints64
static int g_sgemm_ints64;
static long g_blas_rows;

void rs_set_blas(void *cblas_sgemm, int ints64, long rows) {
  pthread_mutex_lock(&g_call);
  g_sgemm = rows > 0 ? cblas_sgemm : 0;
  g_sgemm_ints64 = ints64;
  g_blas_rows = rows;
  pthread_mutex_unlock(&g_call);
}

// y = x W^T (+ bias) through BLAS when it takes this product; 0 when it does not.
static int blas_product(const float *x, long M, long K, long ldx, const rs_weight_t *w, long N,
                        const float *bias, float *y) {
  const float *W = w->kind == RS_F32 ? (const float *)w->data : w->dense;
  pthread_mutex_lock(&g_call);
  void *fn = M > g_blas_rows ? g_sgemm : 0;
  int ints64 = g_sgemm_ints64;
  pthread_mutex_unlock(&g_call);
  if (!fn || !W) return 0;
  if (ints64)
    ((sgemm64_fn)fn)(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, M, N, K, 1.0f, x, ldx, W, K,
                     0.0f, y, N);
  else
    ((sgemm32_fn)fn)(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, (int)M, (int)N, (int)K, 1.0f,
                     x, (int)ldx, W, (int)K, 0.0f, y, (int)N);
  if (bias)
    for (long m = 0; m < M; m++)
      for (long n = 0; n < N; n++) y[m * N + n] += bias[n];
  return 1;
}

void rs_linear(const float *x, long M, long K, long ldx, const rs_weight_t *w, long N,
               const float *bias, float *y) {
  if (blas_product(x, M, K, ldx, w, N, bias, y)) return;
  if (M > ROW_BLOCK) {
    for (long m = 0; m < M; m += ROW_BLOCK)
      rs_linear(x + m * ldx, M - m < ROW_BLOCK ? M - m : ROW_BLOCK, K, ldx, w, N, bias, y + m * N);
    return;
  }
  rs_product_t p = {x, bias, *w, y, M, K, N, ldx};
  const rs_product_t dense = {x, bias, {RS_F32, w->dense, 0, 0}, y, M, K, N, ldx};
  pthread_mutex_lock(&g_call);
  int both = w->kind != RS_F32 && w->dense && M > rs_quantized_rows(w->kind);
  choice_t *c = both && g_measured_forms && M <= ADAPT_ROWS ? choice_for(w->data, M) : 0;
  if (!c) {
    run_product(both ? &dense : &p);
  } else {
    int blocks = choose_blocks(c);
    long start = now_ns();
    run_product(blocks ? &p : &dense);
    record(c, blocks, now_ns() - start);
  }
  pthread_mutex_unlock(&g_call);
}

int rs_thread_count(void) {
  pthread_mutex_lock(&g_call);
  int threads = g_threads;
  pthread_mutex_unlock(&g_call);
  return threads;
}

void rs_parallel(rs_task_fn task, void *context, const long *cost_prefix, long n,
                 int max_threads) {
  if (n <= 0) return;
  pthread_mutex_lock(&g_call);
  int threads = g_threads < max_threads ? g_threads : max_threads;
  if (threads > n) threads = (int)n;
  if (threads <= 1) {
    task(context, 0, n, 0);
    pthread_mutex_unlock(&g_call);
    return;
  }
  // Thread t starts at the first unit whose cost before it reaches t / threads of the total.
  long total = cost_prefix[n], unit = 0;
  g_bounds[0] = 0;
  for (int t = 1; t < threads; t++) {
    long target = total * t / threads;
    while (unit < n && cost_prefix[unit] < target) unit++;
    g_bounds[t] = unit;
  }
  g_bounds[threads] = n;
  dispatch(task, context, threads);
  pthread_mutex_unlock(&g_call);
}
