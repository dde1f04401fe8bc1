//! Fast `exp` and `tanh` for f32, written with only multiply, add, divide and bit operations
//! so that loops over them vectorise (the C library's `expf`/`tanhf` are scalar calls, and
//! GELU's `tanh` alone took a third of a training step before these).
//!
//! - [`exp`]: Cephes' `expf`: write x = n·ln 2 + r with |r| ≤ ln2/2, approximate eʳ by a
//!   degree-6 polynomial, and multiply by 2ⁿ by building the float's exponent bits.
//!   Error within 2 ulp over the f32 range; −∞ (and anything below −87.3) gives exactly 0,
//!   as masked attention scores need.
//! - [`tanh`]: a 13/6-degree rational approximation (the one Eigen uses), clamped where tanh
//!   is ±1 to f32 precision. Error below 5e-7 (a few ulp near ±1).
//!
//! The tests compare both against f64 over sweeps of inputs.

// The polynomial coefficients are written with the digits they were published with.
#![allow(clippy::excessive_precision)]

/// eˣ for f32 (see the module docs).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4; // ln 2 split in two parts for an exact product n·C1
    const C2: f32 = -2.121_944_4e-4;
    let too_small = x < -87.336_55;
    let xc = x.clamp(-87.336_55, 88.722_83);
    // round to nearest by the 1.5·2²³ trick (no libm call, vectorises on plain SSE2)
    const ROUND: f32 = 12_582_912.0;
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = xc - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    // 2ⁿ by its bits; n ∈ [−126, 128]. Split 2ⁿ = 2^(n/2)·2^(n−n/2) so n = 128 does not overflow
    // the exponent field before the multiply. n as an integer is read off the bits of
    // `shifted` = 1.5·2²³ + n, whose low mantissa bits hold it: the same value as `n as i32`,
    // without Rust's saturating float-to-int cast, which compilers do not vectorise well
    // (it took most of the time of a cross-entropy over GPT-2's vocabulary).
    let ni = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let half = ni >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - half + 127) as u32) << 23);
    let y = er * s1 * s2;
    if too_small {
        0.0
    } else {
        y
    }
}

/// tanh for f32 (see the module docs).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16_f32;
    p = p * x2 + 2.000_187_9e-13;
    p = p * x2 - 8.604_671_5e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619_3e-4;
    p = p * x2 + 4.893_524_6e-3;
    let mut q = 1.198_258_4e-6_f32;
    q = q * x2 + 1.185_347_1e-4;
    q = q * x2 + 2.268_434_6e-3;
    q = q * x2 + 4.893_525_2e-3;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn exp_is_accurate_and_handles_the_edges() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
            x += 0.0137;
        }
        assert!(worst <= 2, "exp off by {worst} ulp");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(88.7).is_finite() && exp(88.7) > 3e38);
    }

    #[test]
    fn tanh_is_accurate() {
        let mut worst_abs = 0.0f64;
        let mut worst_rel = 0.0f64;
        let mut x = -10.0f32;
        while x < 10.0 {
            let want = (x as f64).tanh();
            let got = tanh(x) as f64;
            worst_abs = worst_abs.max((got - want).abs());
            if want.abs() > 1e-3 {
                worst_rel = worst_rel.max(((got - want) / want).abs());
            }
            x += 0.000_97;
        }
        assert!(
            worst_abs < 5e-7 && worst_rel < 5e-7,
            "abs {worst_abs}, rel {worst_rel}"
        );
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert!((tanh(1e-6) - 1e-6).abs() < 1e-12);
    }
}
