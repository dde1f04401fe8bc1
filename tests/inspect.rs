//! `scratchgpt inspect …`, `scratchgpt bench context` and the run report through the binary:
//! a tiny run is trained, every inspection runs on it, and the figures and pages are checked as
//! documents (well-formed, the expected number of cells, labels present and escaped, nothing
//! loaded from outside); bad input ends in one `error:` line.

mod common;

use common::{assert_ok, assert_one_line_error};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scratchgpt"))
        .args(args)
        .output()
        .expect("binary runs")
}

/// Tags open and close in order, attributes are quoted, and the document is one element
/// (a minimal well-formedness check: our documents use no CDATA or comments).
#[track_caller]
fn assert_well_formed(doc: &str, what: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = doc;
    let mut roots = 0;
    while let Some(i) = rest.find('<') {
        assert!(
            !rest[..i].contains('>'),
            "{what}: a stray '>' in text before {:?}",
            &rest[i..(i + 40).min(rest.len())]
        );
        rest = &rest[i + 1..];
        let end = rest
            .find('>')
            .unwrap_or_else(|| panic!("{what}: unclosed tag"));
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        assert!(!tag.contains('<'), "{what}: '<' inside a tag: {tag}");
        assert!(
            tag.matches('"').count().is_multiple_of(2),
            "{what}: unbalanced quotes: {tag}"
        );
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let name = tag
            .trim_end_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or("");
        if tag.ends_with('/') || ["meta", "br"].contains(&name) {
            if stack.is_empty() {
                roots += 1;
            }
            continue;
        }
        if let Some(closing) = name.strip_prefix('/') {
            assert_eq!(
                stack.pop(),
                Some(closing),
                "{what}: </{closing}> closes the wrong tag"
            );
        } else {
            if stack.is_empty() {
                roots += 1;
            }
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "{what}: unclosed {stack:?}");
    assert_eq!(roots, 1, "{what}: one root element");
}

/// A page shows everything inline: no address, no script, no external source.
#[track_caller]
fn assert_self_contained(page: &str) {
    for bad in ["http", "<script", "src=", "@import", "url("] {
        assert!(!page.contains(bad), "the page contains {bad:?}");
    }
}

/// The prompt used throughout: bytes tokenizer, so 30 tokens, one per byte; it has `<`, `&`,
/// `"` and spaces to be escaped or shown.
const PROMPT: &str = "Every effort <moves> you & \"me\"";

/// A tiny model trained once for all tests of this file: 2 epochs over a short text, so each
/// epoch ends and leaves its sample.
fn trained_run() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = common::fresh_dir("inspect-run");
        let data = dir.join("text.txt");
        std::fs::write(
            &data,
            "Every effort moves you forward, and then some. ".repeat(60),
        )
        .unwrap();
        let out = dir.join("run");
        let mut args = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "2",
            "--start-context",
            "Every <effort>",
            "--quiet",
        ];
        args.extend_from_slice(&common::small_model());
        // two layers, so the maps have rows
        let n_layers = args.iter().position(|a| *a == "--n-layers").unwrap();
        args[n_layers + 1] = "2";
        assert_ok(&run(&args));
        out
    })
}

fn svg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_run_gets_a_report_page_with_loss_samples_and_attention() {
    let run_dir = trained_run();
    let page = std::fs::read_to_string(run_dir.join("index.html")).unwrap();
    assert_well_formed(&page, "run index.html");
    assert_self_contained(&page);
    // the loss plot, a sample per epoch, the attention maps of the start context
    assert!(page.contains("Training loss") && page.contains("<polyline"));
    assert!(
        page.contains("Ep 1 sample: Every &lt;effort&gt;"),
        "samples escaped"
    );
    assert!(page.contains("Ep 2 sample:"));
    assert!(page.contains("Attention weights"));
    // "Every <effort>" is 14 byte tokens: each of the 2×2 heads' large map has 14·15/2 cells
    assert_eq!(page.matches("<title>query").count(), 4 * 14 * 15 / 2);
    let samples = std::fs::read_to_string(run_dir.join("samples.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 2);
}

#[test]
fn every_inspection_writes_figures_numbers_and_one_page() {
    let ckpt = trained_run().to_str().unwrap().to_string();
    let out = common::fresh_dir("inspect-all");
    let out_s = out.to_str().unwrap();
    for cmd in ["attention", "logit-lens", "layer-norm"] {
        let r = run(&[
            "inspect",
            cmd,
            "--checkpoint",
            &ckpt,
            "--prompt",
            PROMPT,
            "--out",
            out_s,
        ]);
        assert_ok(&r);
        assert!(r.stderr.is_empty(), "no notes for a short prompt");
    }
    for f in [
        "attention-grid.svg",
        "attention-L0-H0.svg",
        "attention-L1-H1.svg",
        "attention-heads.csv",
        "attention.json",
        "logit-lens.svg",
        "logit-lens-rank.svg",
        "logit-lens.csv",
        "logit-lens.json",
        "layer-norm.svg",
        "layer-norm-means.svg",
        "layer-norm-params.svg",
        "layer-norm.csv",
        "index.html",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let svgs = svg_files(&out);
    assert_eq!(svgs.len(), 1 + 4 + 2 + 3);
    for p in &svgs {
        let svg = std::fs::read_to_string(p).unwrap();
        assert_well_formed(&svg, &p.display().to_string());
        assert!(
            svg.starts_with("<svg") && svg.contains("<title>"),
            "{}",
            p.display()
        );
        // the prompt's markup characters are escaped, never raw
        assert!(
            !svg.contains("<moves") && !svg.contains("& "),
            "{}",
            p.display()
        );
    }
    let t = PROMPT.len(); // bytes tokenizer: one token per byte
    let large = std::fs::read_to_string(out.join("attention-L0-H1.svg")).unwrap();
    assert_eq!(large.matches("<title>query").count(), t * (t + 1) / 2);
    assert!(large.contains("&lt;") && large.contains("␣") && large.contains("&amp;"));
    assert!(large.contains(">0: E<") && large.contains(&format!(">{}: &quot;<", t - 1)));
    // the lens: 3 rows (embeddings, 2 blocks) of t cells in each grid; 3·t CSV rows
    let lens = std::fs::read_to_string(out.join("logit-lens.svg")).unwrap();
    assert_eq!(lens.matches("<g><title>").count(), 3 * t);
    let csv = std::fs::read_to_string(out.join("logit-lens.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * t);
    // rows name the residual stream they read (layer 0: the embeddings)
    assert!(csv.lines().nth(1).unwrap().starts_with("0,embeddings,0,"));
    // at the last layer the lens is the model's own prediction: rank 1 everywhere
    let last: Vec<&str> = csv
        .lines()
        .filter(|l| l.starts_with("2,after block 1,"))
        .collect();
    assert_eq!(last.len(), t);
    assert!(last.iter().all(|l| l.split(',').nth(4) == Some("1")));
    let norms = std::fs::read_to_string(out.join("layer-norm.csv")).unwrap();
    assert_eq!(norms.lines().count(), 1 + 2 * 2 + 1); // header, 2 per block, final
    for line in norms.lines().skip(1) {
        let f: Vec<f64> = line
            .split(',')
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        // before the learned scale: mean 0 and std 1 (ε makes it a hair below)
        assert!(f[2].abs() < 1e-4 && (f[3] - 1.0).abs() < 1e-2, "{line}");
    }
    let heads = std::fs::read_to_string(out.join("attention-heads.csv")).unwrap();
    assert_eq!(heads.lines().count(), 1 + 4);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("attention.json")).unwrap())
            .unwrap();
    assert_eq!(json["tokens"].as_array().unwrap().len(), t);
    assert_eq!(
        json["weights"][1][0][t * t - 1].as_f64().map(|_| ()),
        Some(())
    );
    assert_eq!(json["label_share"], 0.6);

    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_well_formed(&page, "index.html");
    assert_self_contained(&page);
    for id in ["id=\"attention\"", "id=\"logit-lens\"", "id=\"layer-norm\""] {
        assert!(page.contains(id), "{id} missing from the page");
    }
    // with 4 heads in all, every large map is on the page
    assert_eq!(page.matches("<title>query").count(), 4 * t * (t + 1) / 2);
    assert!(page.contains("at least 0.6"), "the thresholds are stated");
    assert!(
        page.contains("prompt &quot;"),
        "each section names its prompt"
    );
    // a map of a head this model does not have (left by a larger model's inspection) does
    // not stay behind, and a prompt too short for the statistics shows – rather than NaN
    std::fs::write(out.join("attention-L7-H7.svg"), "<svg/>").unwrap();
    let r = run(&[
        "inspect",
        "attention",
        "--checkpoint",
        &ckpt,
        "--prompt",
        "ab",
        "--out",
        out_s,
        "--layer",
        "0",
        "--head",
        "1",
    ]);
    assert_ok(&r);
    assert!(out.join("attention-L0-H1.svg").is_file());
    assert!(
        !out.join("attention-L7-H7.svg").exists(),
        "a stale map stayed"
    );
    let grid = std::fs::read_to_string(out.join("attention-grid.svg")).unwrap();
    assert!(!grid.contains("NaN"), "{grid}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn long_prompts_keep_their_last_tokens_and_say_so() {
    let ckpt = trained_run().to_str().unwrap().to_string();
    let out = common::fresh_dir("inspect-long");
    let long = "a".repeat(50) + "Z";
    // the context is 32: the last 32 tokens are kept
    let r = run(&[
        "inspect",
        "attention",
        "--checkpoint",
        &ckpt,
        "--prompt",
        &long,
        "--out",
        out.to_str().unwrap(),
        "--max-tokens",
        "100",
    ]);
    assert_ok(&r);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.starts_with("note: ") && stderr.contains("the model sees only the last 32"),
        "{stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("attention.json")).unwrap())
            .unwrap();
    let tokens = json["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 32);
    assert_eq!(tokens[31]["label"], "Z");
    // --max-tokens crops further, and the page says so
    let r = run(&[
        "inspect",
        "layer-norm",
        "--checkpoint",
        &ckpt,
        "--prompt",
        &long,
        "--out",
        out.to_str().unwrap(),
        "--max-tokens",
        "8",
    ]);
    assert_ok(&r);
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("the model sees only the last 8"));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_input_is_one_error_line() {
    let ckpt = trained_run().to_str().unwrap().to_string();
    let dir = common::fresh_dir("inspect-bad");
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    let missing = dir.join("no-such-run");
    let r = run(&[
        "inspect",
        "attention",
        "--checkpoint",
        missing.to_str().unwrap(),
        "--prompt",
        "x",
        "--out",
        out_s,
    ]);
    assert_one_line_error(&r, "no-such-run");
    let r = run(&[
        "inspect",
        "logit-lens",
        "--checkpoint",
        &ckpt,
        "--prompt",
        "",
        "--out",
        out_s,
    ]);
    assert_one_line_error(&r, "--prompt must not be empty");
    let r = run(&[
        "inspect",
        "attention",
        "--checkpoint",
        &ckpt,
        "--prompt",
        "x",
        "--layer",
        "2",
        "--out",
        out_s,
    ]);
    assert_one_line_error(&r, "--layer 2 is out of range");
    let r = run(&[
        "inspect",
        "attention",
        "--checkpoint",
        &ckpt,
        "--prompt",
        "x",
        "--layer",
        "0",
        "--head",
        "9",
        "--out",
        out_s,
    ]);
    assert_one_line_error(&r, "--head 9 is out of range");
    // --out naming a file
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let r = run(&[
        "inspect",
        "layer-norm",
        "--checkpoint",
        &ckpt,
        "--prompt",
        "x",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_one_line_error(&r, "is a file; --out takes a directory");
    let r = run(&[
        "inspect",
        "logit-lens",
        "--checkpoint",
        &ckpt,
        "--prompt",
        "x",
        "--top-k",
        "0",
        "--out",
        out_s,
    ]);
    assert_one_line_error(&r, "--top-k");
    // more tokens than the vocabulary has: refused before anything is allocated
    let r = run(&[
        "inspect",
        "logit-lens",
        "--checkpoint",
        &ckpt,
        "--prompt",
        "x",
        "--top-k",
        "100000000",
        "--out",
        out_s,
    ]);
    assert_one_line_error(&r, "is more than the model's");
    // an output "directory" that is a file cannot be written
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let r = run(&[
        "inspect",
        "layer-norm",
        "--checkpoint",
        &ckpt,
        "--prompt",
        "x",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_one_line_error(&r, "a-file");
    assert!(!out.exists(), "nothing written on errors");
    let r = run(&["bench", "context", "--min-t", "100", "--out", out_s]);
    assert_one_line_error(&r, "power of two");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_context_measures_time_and_memory_and_writes_plots() {
    let out = common::fresh_dir("bench-context");
    let r = run(&[
        "bench",
        "context",
        "--min-t",
        "16",
        "--max-t",
        "128",
        "--composed-max-t",
        "64",
        "--heads",
        "2",
        "--head-size",
        "8",
        "--reps",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ok(&r);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        stdout.contains("fitted exponents") && stdout.contains("T = 9215"),
        "{stdout}"
    );
    assert!(stdout.contains("stopped after T = 64"), "{stdout}");
    // no point reaches T = 512: the fit says it is over every T, not over T ≥ 512
    assert!(
        stdout.contains("over every T measured") && !stdout.contains("T ≥ 512"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(out.join("context.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        ["16", "32", "64", "128"]
    );
    for r in &rows {
        let fused_mb: f64 = r[2].parse().expect("fused memory measured");
        assert!(fused_mb > 0.0);
    }
    // the composed ops keep several T×T buffers: more memory than the fused kernel at T = 64
    // (2 heads · 64² floats = 32 KB per T×T matrix)
    let (fused, composed): (f64, f64) = (rows[2][2].parse().unwrap(), rows[2][4].parse().unwrap());
    assert!(
        composed > fused + 0.05,
        "composed {composed} MB vs fused {fused} MB"
    );
    assert!(
        rows[3][3].is_empty(),
        "the composed ops stop after --composed-max-t"
    );
    for f in [
        "context-time.svg",
        "context-memory.svg",
        "context-flops.svg",
    ] {
        assert_well_formed(&std::fs::read_to_string(out.join(f)).unwrap(), f);
    }
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_well_formed(&page, "bench index.html");
    assert_self_contained(&page);
    assert!(page.contains("id=\"context\""));
    let r = run(&[
        "bench",
        "context",
        "--reps",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&r, "--reps must be at least 1");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn help_describes_every_flag() {
    for sub in [
        "inspect attention",
        "inspect logit-lens",
        "inspect layer-norm",
        "bench context",
    ] {
        let mut args: Vec<&str> = sub.split(' ').collect();
        args.push("--help");
        let out = run(&args);
        assert_ok(&out);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Exit status"), "{sub}: {help}");
        for line in help.lines().filter(|l| l.trim_start().starts_with("--")) {
            let (flag, text) = line.trim_start().split_once("  ").unwrap_or((line, ""));
            assert!(!text.trim().is_empty(), "{sub} {flag} has no description");
            let required = ["--checkpoint", "--prompt"]
                .iter()
                .any(|r| flag.starts_with(r));
            if flag.contains('<') && !required {
                assert!(text.contains("[default"), "{sub} {flag} shows no default");
            }
        }
    }
    let help =
        String::from_utf8_lossy(&run(&["inspect", "attention", "--help"]).stdout).into_owned();
    assert!(
        help.contains("at least 0.6"),
        "the threshold is in the help"
    );
}

/// A Chromium (or Chrome) on this machine: `$SCRATCHGPT_CHROMIUM`, else the usual names.
fn chromium() -> Option<String> {
    let names = std::env::var("SCRATCHGPT_CHROMIUM")
        .map(|n| vec![n])
        .unwrap_or_else(|_| {
            [
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ]
            .map(String::from)
            .to_vec()
        });
    names.into_iter().find(|n| {
        Command::new(n)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Renders `page` in headless Chromium at 1200×900 into `png`; returns its log (stderr).
fn render(browser: &str, page: &Path, png: &Path, profile: &Path) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1200,900",
            "--enable-logging=stderr",
            "--v=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { stderr }, &mut s).ok();
        s
    });
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() > 120 {
            child.kill().unwrap();
            panic!(
                "chromium did not finish rendering {} in 120 s",
                page.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The inspection page rendered for real: it loads nothing but itself, logs no console error,
/// and its screenshot is not blank (a blank page's screenshot of the same size, which
/// compresses to almost nothing, is a fraction of its size). Skips with a note when no
/// Chromium is installed (`.ci/run` installs one).
#[test]
fn the_page_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        eprintln!("note: no chromium found (set SCRATCHGPT_CHROMIUM); page rendering not tested");
        return;
    };
    let ckpt = trained_run().to_str().unwrap().to_string();
    let dir = common::fresh_dir("inspect-chromium");
    let out = dir.join("out");
    for cmd in ["attention", "logit-lens", "layer-norm"] {
        let r = run(&[
            "inspect",
            cmd,
            "--checkpoint",
            &ckpt,
            "--prompt",
            PROMPT,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_ok(&r);
    }
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html>\n<html><body></body></html>\n").unwrap();
    let profile = dir.join("profile");
    let page = out.join("index.html");
    let log = render(&browser, &page, &dir.join("page.png"), &profile);
    render(&browser, &blank, &dir.join("blank.png"), &profile);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let loads: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            l.split_once("FileURLLoader::Start: ")
                .map(|(_, url)| url.trim())
        })
        .collect();
    assert_eq!(
        loads,
        [format!("file://{}", page.display())],
        "files the page loaded"
    );
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (shot, empty) = (size(&dir.join("page.png")), size(&dir.join("blank.png")));
    assert!(empty > 0, "the blank page's screenshot was written");
    assert!(
        shot > 4 * empty,
        "the page's screenshot ({shot} bytes) looks blank next to an empty page's ({empty} bytes)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
