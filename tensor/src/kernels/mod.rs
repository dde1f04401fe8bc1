//! Low-level kernels the ops are built on: the SGEMM wrapper and its kernels, the parallel
//! loop helpers, and the choice of code path for this CPU ([`cpu`]).

pub mod cpu;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod gemm_avx2;
#[cfg(target_arch = "x86_64")]
pub mod gemm_avx512;
pub mod gemv;
pub mod math;
pub mod packed_gemm;
pub mod parallel;
pub mod peak;
pub mod simd;

pub use cpu::{check_environment, describe};
