"""CPU kernels: float32 matrix products through numpy's BLAS where it beats torch's
(blas_linear.py), and the thread count that BLAS may use on a shared machine (blas_threads.py)."""
