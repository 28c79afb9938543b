"""CPU kernels: float32 matrix products of up to 256 rows and a Llama-family forward step in one
call through our compiled C (small_gemm.py, llama_step.py; native/), over float32 weights or a
GGUF's Q4_1 / Q8_0 blocks dequantized to the same values (quantized.py), larger products through
numpy's BLAS where it beats torch's (blas_linear.py), and the thread count both may use on a
shared machine (blas_threads.py)."""
