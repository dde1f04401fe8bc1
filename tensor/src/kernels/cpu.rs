//! Which code paths run on this CPU, and how to choose them.
//!
//! Two kinds of kernels have a copy per instruction set, picked at run time so one binary runs
//! on any x86-64 CPU:
//! - **SGEMM** ([`GemmPath`]): our own packed kernel with a 12×32 AVX-512 tile or a 6×16
//!   AVX2+FMA tile ([`super::packed_gemm`]), or the portable `matrixmultiply` crate;
//! - **element-wise loops** ([`SimdPath`], run through [`super::simd::wide`]): compiled for
//!   AVX-512 (16 lanes), AVX2+FMA (8 lanes) or baseline SSE2 (4 lanes).
//!
//! By default each uses the widest the CPU has. The environment variables
//! `SCRATCHGPT_GEMM=avx512|avx2|matrixmultiply` and `SCRATCHGPT_SIMD=avx512|avx2|baseline`
//! choose one (to compare them, or to test a narrower path on a wider CPU). They are read
//! once per process. A value the CPU cannot run, or an unknown one, is refused:
//! [`check_environment`] returns the message (the CLI prints it as one `error:` line), and a
//! kernel reached without that check panics with the same message rather than run something
//! else than asked.
//!
//! Element-wise loops give the same bits on every path. GEMM results may differ in the last
//! bits between paths (each path sums k in its own blocks), but on each path they are
//! bit-identical whatever the number of threads.

use std::sync::OnceLock;

/// True when this CPU has AVX-512F (std caches the detection).
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when this CPU has AVX2 and FMA (Intel since Haswell, AMD since Zen).
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True on AMD CPUs (CPUID vendor "AuthenticAMD"): the one-token matrix-vector loop reads
/// weights differently there (see `ops::linear`), as measured.
pub fn is_amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AMD: OnceLock<bool> = OnceLock::new();
        *AMD.get_or_init(|| {
            // SAFETY: CPUID exists on every x86-64 CPU; leaf 0 holds the vendor string.
            #[allow(unused_unsafe)]
            let r = unsafe { std::arch::x86_64::__cpuid(0) };
            let vendor: Vec<u8> = [r.ebx, r.edx, r.ecx]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            vendor == b"AuthenticAMD"
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The SGEMM implementation every matmul runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    /// Our packed kernel, 12×32 tiles of 16-lane FMAs.
    Avx512,
    /// Our packed kernel, 6×16 tiles of 8-lane FMAs.
    Avx2,
    /// The `matrixmultiply` crate (any CPU).
    MatrixMultiply,
}

/// The instruction set element-wise loops are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdPath {
    /// AVX-512F, 16 lanes.
    Avx512,
    /// AVX2+FMA, 8 lanes.
    Avx2,
    /// What the crate is compiled for (SSE2 on x86-64: 4 lanes).
    Baseline,
}

/// What the two path enums share: a name (the environment value) and a CPU requirement.
trait Path: Copy + 'static {
    /// The environment variable that chooses it.
    const VAR: &'static str;
    /// Every path, widest first.
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
    fn is_available(self) -> bool;
}

impl Path for GemmPath {
    const VAR: &'static str = "SCRATCHGPT_GEMM";
    const ALL: &'static [Self] = &[Self::Avx512, Self::Avx2, Self::MatrixMultiply];
    fn name(self) -> &'static str {
        self.name()
    }
    fn is_available(self) -> bool {
        self.is_available()
    }
}

impl Path for SimdPath {
    const VAR: &'static str = "SCRATCHGPT_SIMD";
    const ALL: &'static [Self] = &[Self::Avx512, Self::Avx2, Self::Baseline];
    fn name(self) -> &'static str {
        self.name()
    }
    fn is_available(self) -> bool {
        self.is_available()
    }
}

/// The path an environment value asks for: the widest available one when the variable is
/// unset or empty; an error naming the variable and the choices when the value is unknown or
/// the CPU lacks that path.
fn choose<P: Path>(value: Option<&str>) -> Result<P, String> {
    let usable: Vec<&str> = P::ALL
        .iter()
        .filter(|p| p.is_available())
        .map(|p| p.name())
        .collect();
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(*P::ALL
            .iter()
            .find(|p| p.is_available())
            .expect("the last path runs anywhere"));
    };
    match P::ALL.iter().find(|p| p.name() == value) {
        Some(&p) if p.is_available() => Ok(p),
        Some(_) => Err(format!(
            "{}={value}: this CPU cannot run it (usable here: {})",
            P::VAR,
            usable.join(", ")
        )),
        None => Err(format!(
            "{}={value}: unknown value (expected one of: {})",
            P::VAR,
            P::ALL
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The path chosen by the environment, read once per process.
fn from_env<P: Path>(cell: &'static OnceLock<Result<P, String>>) -> &'static Result<P, String> {
    cell.get_or_init(|| choose(std::env::var(P::VAR).ok().as_deref()))
}

static GEMM: OnceLock<Result<GemmPath, String>> = OnceLock::new();
static SIMD: OnceLock<Result<SimdPath, String>> = OnceLock::new();

impl GemmPath {
    /// Every path, widest first.
    pub const ALL: [GemmPath; 3] = [Self::Avx512, Self::Avx2, Self::MatrixMultiply];

    /// The value of `SCRATCHGPT_GEMM` that selects this path.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::MatrixMultiply => "matrixmultiply",
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Self::Avx512 => has_avx512(),
            Self::Avx2 => has_avx2_fma(),
            Self::MatrixMultiply => true,
        }
    }

    /// The path every matmul uses: `SCRATCHGPT_GEMM`, or the widest available.
    ///
    /// # Panics
    /// If `SCRATCHGPT_GEMM` names a path this CPU lacks, or an unknown one (call
    /// [`check_environment`] first to get the message as an error instead).
    pub fn current() -> Self {
        match from_env(&GEMM) {
            Ok(p) => *p,
            Err(e) => panic!("{e}"),
        }
    }
}

impl SimdPath {
    /// Every path, widest first.
    pub const ALL: [SimdPath; 3] = [Self::Avx512, Self::Avx2, Self::Baseline];

    /// The value of `SCRATCHGPT_SIMD` that selects this path.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Baseline => "baseline",
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Self::Avx512 => has_avx512(),
            Self::Avx2 => has_avx2_fma(),
            Self::Baseline => true,
        }
    }

    /// f32 lanes per vector on this path.
    pub fn lanes(self) -> usize {
        match self {
            Self::Avx512 => 16,
            Self::Avx2 => 8,
            // SSE2 on x86-64, NEON on aarch64
            Self::Baseline => 4,
        }
    }

    /// The path element-wise loops use: `SCRATCHGPT_SIMD`, or the widest available.
    ///
    /// # Panics
    /// As [`GemmPath::current`], for `SCRATCHGPT_SIMD`.
    pub fn current() -> Self {
        match from_env(&SIMD) {
            Ok(p) => *p,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Checks `SCRATCHGPT_GEMM` and `SCRATCHGPT_SIMD`: `Err` with a one-line message when either
/// names a path this CPU cannot run or an unknown value. Call it at start-up; the kernels
/// panic with the same message otherwise.
pub fn check_environment() -> Result<(), String> {
    let gemm = from_env(&GEMM).as_ref().err();
    let simd = from_env(&SIMD).as_ref().err();
    match (gemm, simd) {
        (None, None) => Ok(()),
        (Some(e), None) | (None, Some(e)) => Err(e.clone()),
        (Some(g), Some(s)) => Err(format!("{g}; {s}")),
    }
}

/// One line naming the CPU and the paths in use, for the first line of benchmarks and
/// training logs, e.g. `CPU: AMD EPYC (x86_64, AVX-512, AVX2+FMA); SGEMM: own AVX-512 12×32
/// kernel (KC 256, NC 1024); element-wise: AVX-512, 16 lanes`.
pub fn describe() -> String {
    let mut features = vec![std::env::consts::ARCH];
    if has_avx512() {
        features.push("AVX-512");
    }
    if has_avx2_fma() {
        features.push("AVX2+FMA");
    }
    let gemm = match from_env(&GEMM) {
        Ok(p) => describe_gemm(*p),
        Err(e) => format!("refused ({e})"),
    };
    let simd = match from_env(&SIMD) {
        Ok(SimdPath::Baseline) => format!("baseline, {} lanes", SimdPath::Baseline.lanes()),
        Ok(p) => format!("{}, {} lanes", p.label(), p.lanes()),
        Err(e) => format!("refused ({e})"),
    };
    format!(
        "CPU: {} ({}); SGEMM: {gemm}; element-wise: {simd}",
        cpu_model().unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        features.join(", ")
    )
}

/// How [`describe`] names a GEMM path, with its tile and block sizes.
pub fn describe_gemm(path: GemmPath) -> String {
    #[cfg(target_arch = "x86_64")]
    fn own<K: super::packed_gemm::MicroKernel>(label: &str) -> String {
        use super::packed_gemm::Blocking;
        let b = Blocking::of::<K>();
        format!(
            "own {label} {}×{} kernel (KC {}, NC {})",
            K::MR,
            K::NR,
            b.kc,
            b.nc
        )
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        GemmPath::Avx512 => own::<super::gemm_avx512::Avx512>("AVX-512"),
        #[cfg(target_arch = "x86_64")]
        GemmPath::Avx2 => own::<super::gemm_avx2::Avx2>("AVX2+FMA"),
        GemmPath::MatrixMultiply => "matrixmultiply crate".to_string(),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("x86-64 paths are never available here"),
    }
}

impl SimdPath {
    fn label(self) -> &'static str {
        match self {
            Self::Avx512 => "AVX-512",
            Self::Avx2 => "AVX2+FMA",
            Self::Baseline => "baseline",
        }
    }
}

/// The CPU's marketing name from `/proc/cpuinfo` (Linux), if there is one.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Per-core data cache sizes in bytes, (L1d, L2), read once from
/// `/sys/devices/system/cpu/cpu0/cache/index*/` (Linux); 32 KB and 1 MB where unknown.
pub fn cache_sizes() -> (usize, usize) {
    static SIZES: OnceLock<(usize, usize)> = OnceLock::new();
    *SIZES.get_or_init(|| {
        let (mut l1, mut l2) = (None, None);
        for i in 0..8 {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
            else {
                continue;
            };
            let bytes = parse_size(size.trim());
            match (level.trim(), kind.trim()) {
                ("1", "Data") => l1 = l1.or(bytes),
                ("2", "Unified" | "Data") => l2 = l2.or(bytes),
                _ => {}
            }
        }
        (l1.unwrap_or(32 << 10), l2.unwrap_or(1 << 20))
    })
}

/// `48K` → 49152, `1024K` → 1048576, `2M` → 2097152.
fn parse_size(s: &str) -> Option<usize> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = digits.parse().ok()?;
    match unit {
        "" => Some(n),
        "K" => Some(n << 10),
        "M" => Some(n << 20),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_agrees_with_the_kernel() {
        // Linux's /proc/cpuinfo names the vendor CPUID reports
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return;
        };
        if let Some(line) = info.lines().find(|l| l.starts_with("vendor_id")) {
            assert_eq!(is_amd(), line.ends_with("AuthenticAMD"), "{line}");
        }
    }

    #[test]
    fn unset_or_empty_picks_the_widest_available() {
        let widest = *GemmPath::ALL.iter().find(|p| p.is_available()).unwrap();
        assert_eq!(choose::<GemmPath>(None), Ok(widest));
        assert_eq!(choose::<GemmPath>(Some("")), Ok(widest));
        assert_eq!(choose::<SimdPath>(None).map(|p| p.is_available()), Ok(true));
    }

    #[test]
    fn every_available_path_can_be_chosen_by_name() {
        for p in GemmPath::ALL.into_iter().filter(|p| p.is_available()) {
            assert_eq!(choose::<GemmPath>(Some(p.name())), Ok(p));
        }
        for p in SimdPath::ALL.into_iter().filter(|p| p.is_available()) {
            assert_eq!(choose::<SimdPath>(Some(p.name())), Ok(p));
        }
        assert_eq!(
            choose::<GemmPath>(Some("matrixmultiply")),
            Ok(GemmPath::MatrixMultiply)
        );
        assert_eq!(choose::<SimdPath>(Some("baseline")), Ok(SimdPath::Baseline));
    }

    #[test]
    fn unknown_values_are_refused_with_the_choices() {
        let e = choose::<GemmPath>(Some("avx3")).unwrap_err();
        assert_eq!(
            e,
            "SCRATCHGPT_GEMM=avx3: unknown value (expected one of: avx512, avx2, matrixmultiply)"
        );
        let e = choose::<SimdPath>(Some("AVX2")).unwrap_err();
        assert!(e.starts_with("SCRATCHGPT_SIMD=AVX2: unknown value"), "{e}");
    }

    #[test]
    fn paths_the_cpu_lacks_are_refused() {
        for p in GemmPath::ALL.into_iter().filter(|p| !p.is_available()) {
            let e = choose::<GemmPath>(Some(p.name())).unwrap_err();
            assert!(e.contains("this CPU cannot run it"), "{e}");
        }
        for p in SimdPath::ALL.into_iter().filter(|p| !p.is_available()) {
            let e = choose::<SimdPath>(Some(p.name())).unwrap_err();
            assert!(e.contains("this CPU cannot run it"), "{e}");
        }
    }

    #[test]
    fn description_names_cpu_and_paths() {
        let d = describe();
        assert!(d.starts_with("CPU: "), "{d}");
        assert!(d.contains(std::env::consts::ARCH), "{d}");
        assert!(
            d.contains("; SGEMM: ") && d.contains("; element-wise: "),
            "{d}"
        );
    }

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
        let (l1, l2) = cache_sizes();
        assert!(l1 >= 4 << 10 && l2 > l1, "{l1} {l2}");
    }
}
