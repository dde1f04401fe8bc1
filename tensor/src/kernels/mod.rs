//! Low-level kernels the ops are built on: the SGEMM wrapper and the parallel loop helpers.

pub mod avx512_gemm;
pub mod gemm;
pub mod math;
pub mod parallel;
pub mod peak;
pub mod simd;
