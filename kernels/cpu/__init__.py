"""CPU kernels: float32 matrix products of a few rows and a Llama-family forward step in one call
through our compiled C (small_gemm.py, llama_step.py; native/), larger products through numpy's
BLAS where it beats torch's (blas_linear.py), and the thread count both may use on a shared
machine (blas_threads.py)."""
